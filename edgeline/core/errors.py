"""The project's exception root, and the errors of the shared core.

Every edgeline error derives from :class:`EdgelineError`: the device's (``edge_agent.errors``),
the cloud's (``cloud_registry.errors``), the build pipeline's (``converters.errors``) and the device
configuration's (``firmware_configs.errors``). Each carries ``reason``, a short machine-readable code
(the class's ``default_reason`` unless given), so callers branch on it rather than on the message.
"""

from __future__ import annotations


class EdgelineError(Exception):
    """Root of every error edgeline raises. ``reason``: a short machine-readable code."""

    default_reason = "error"

    def __init__(self, *args: object, reason: str | None = None) -> None:
        super().__init__(*args)
        self.reason = reason or type(self).default_reason


class ProtocolError(EdgelineError):
    """A message from the wire is malformed, oversized or violates the protocol."""

    default_reason = "protocol"


class SignatureError(ProtocolError):
    """A signature does not verify, or the key is unknown, expired or revoked."""

    default_reason = "bad_signature"


class ManifestError(ProtocolError):
    """A manifest is structurally valid JSON but not an acceptable manifest."""

    default_reason = "bad_manifest"


class TransportError(EdgelineError):
    """The MQTT link failed (connect refused, not authorised, timed out)."""

    default_reason = "transport"
