"""The wire protocol, owned here and nowhere else: topics, message schemas, the manifest,
canonical JSON and Ed25519 signatures. Both the device and the cloud import it.

Documented in ``docs/protocol.md``. No MQTT topic string is written outside :mod:`.topics`.
"""

from edgeline.core.protocol.canonical import canonical_json, parse_json
from edgeline.core.protocol.topics import Topics

__all__ = ["Topics", "canonical_json", "parse_json"]
