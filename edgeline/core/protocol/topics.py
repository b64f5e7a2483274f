"""Every MQTT topic of edgeline, built in one place.

Layout, under a configurable root (default ``edgeline``) and fleet (default ``default``)::

    <root>/<fleet>/devices/<id>/desired        retained, signed deployment envelope for one device
    <root>/<fleet>/groups/<g>/desired          retained, signed deployment envelope for a group
    <root>/<fleet>/devices/<id>/shadow         retained, signed shadow deployment (a challenger), or empty
    <root>/<fleet>/devices/<id>/state          retained, device state (model, slot, updater, health)
    <root>/<fleet>/devices/<id>/online         retained, online=true at connect; the Last Will says false
    <root>/<fleet>/devices/<id>/events         updater events (QoS 1)
    <root>/<fleet>/devices/<id>/telemetry      windows of aggregate metrics (QoS 1)
    <root>/<fleet>/devices/<id>/acks           ingest -> device: idempotency keys stored (QoS 1)
    <root>/<fleet>/ingest/capabilities         retained, the ingest says it acknowledges end to end
    <root>/<fleet>/artifacts/<sha256>/meta     retained, artifact description (size, chunk hashes)
    <root>/<fleet>/artifacts/<sha256>/chunks/<n>   retained, raw chunk bytes
    <root>/<fleet>/trust/revocations           retained, root-signed list of revoked signing keys
    <root>/<fleet>/devices/<id>/config         retained, signed remote config document for one device
    <root>/<fleet>/groups/<g>/config           retained, signed remote config document for a group
    <root>/<fleet>/devices/<id>/config_state   retained, the device's config version, trial, refusal

``<id>`` is a device id or, for a device with several inspection stations, a station address
``<device>~<station>`` (docs/stations.md): each station is its own unit with every topic above.

Local verdicts for the line use a separate local topic (``line/<device>/verdicts`` by default),
which never goes to the cloud broker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeline.core.errors import ProtocolError

#: The alphabet every broker accepts in a topic level: NATS refuses '.', RabbitMQ maps '/' to '.' in
#: its routing keys (255 bytes at most: five levels of 64 stay below it), and '+', '#', '$' are MQTT's.
SEGMENT_MAX = 64
SEGMENT_PATTERN = rf"^[A-Za-z0-9_\-]{{1,{SEGMENT_MAX}}}$"
SEGMENT_RULE = f"1-{SEGMENT_MAX} characters from letters, digits, '_' and '-'"
_SEGMENT = re.compile(SEGMENT_PATTERN)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_WHY = {".": " (NATS refuses '.' in topics)", "/": " (a topic level separator)", "+": " (an MQTT wildcard)"}


def segment_problem(value: object) -> str | None:
    """Why ``value`` cannot be a topic level (naming the first bad character), or None when it can."""
    if not isinstance(value, str):
        return f"must be a string ({SEGMENT_RULE})"
    if not value:
        return f"must not be empty ({SEGMENT_RULE})"
    if len(value) > SEGMENT_MAX:
        return f"is {len(value)} characters long; at most {SEGMENT_MAX}"
    for ch in value:
        if not (ch.isascii() and (ch.isalnum() or ch in "_-")):
            why = _WHY.get(ch, " (an MQTT wildcard)" if ch == "#" else "")
            return f"contains {ch!r}{why}: use {SEGMENT_RULE}"
    return None


def check_segment(value: str, what: str = "topic segment") -> str:
    """Validate one topic level: letters, digits, '_' and '-' only (what every broker accepts),
    bounded length; the error names ``what`` and the first bad character."""
    problem = segment_problem(value)
    if problem is not None:
        raise ProtocolError(f"invalid {what} {value!r}: {problem}")
    return value


#: A station of a device is its own addressable unit, ``<device>~<station>``, in ONE topic level: the
#: cloud's ``devices/+/...`` wildcards, the ACL patterns and every parser keep working. '~' is outside
#: the segment alphabet (so no device id or station name can contain it) and every broker takes it:
#: Mosquitto, NATS (which refuses '.') and RabbitMQ (which maps '/' and '.'); tests/brokers measures it.
STATION_SEPARATOR = "~"


def unit_problem(value: object) -> str | None:
    """Why ``value`` is neither a device id nor a station address ``<device>~<station>`` (each part a
    topic segment, at most :data:`SEGMENT_MAX` characters in all), or None when it is one."""
    if not isinstance(value, str) or STATION_SEPARATOR not in value:
        return segment_problem(value)
    device, _, station = value.partition(STATION_SEPARATOR)
    for part, what in ((device, "device id"), (station, "station name")):
        problem = segment_problem(part)
        if problem is not None:
            return f"is a station address <device>~<station> whose {what} {part!r} {problem}"
    if len(value) > SEGMENT_MAX:
        return (
            f"is {len(value)} characters long; a station address <device>~<station> is one topic level "
            f"of at most {SEGMENT_MAX}"
        )
    return None


def check_unit(value: str, what: str = "device id") -> str:
    """Validate a device id or a station address (``<device>~<station>``) used as one topic level."""
    problem = unit_problem(value)
    if problem is not None:
        raise ProtocolError(f"invalid {what} {value!r}: {problem}")
    return value


def station_unit(device_id: str, station: str) -> str:
    """The address of ``station`` on ``device_id``: ``<device>~<station>``."""
    return check_unit(f"{device_id}{STATION_SEPARATOR}{station}")


def split_unit(unit: str) -> tuple[str, str | None]:
    """``"press-7~left"`` -> ``("press-7", "left")``; a plain device id -> ``(id, None)``."""
    device, sep, station = check_unit(unit).partition(STATION_SEPARATOR)
    return device, (station if sep else None)


def check_sha256(value: str) -> str:
    if not isinstance(value, str) or not _SHA256.match(value):
        raise ProtocolError(f"invalid sha256 {value!r}: expected 64 lowercase hex digits")
    return value


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic builder for one fleet. Frozen and cheap: build one per connection."""

    root: str = "edgeline"
    fleet: str = "default"

    def __post_init__(self) -> None:
        check_segment(self.root, "topic root")
        check_segment(self.fleet, "fleet name")

    @property
    def base(self) -> str:
        return f"{self.root}/{self.fleet}"

    # -- per device -------------------------------------------------------------------------
    def device_desired(self, device_id: str) -> str:
        return f"{self.base}/devices/{check_unit(device_id)}/desired"

    def device_shadow(self, device_id: str) -> str:
        """The challenger to run beside the serving model (a signed manifest of role ``shadow``)."""
        return f"{self.base}/devices/{check_unit(device_id)}/shadow"

    def device_state(self, device_id: str) -> str:
        return f"{self.base}/devices/{check_unit(device_id)}/state"

    def device_online(self, device_id: str) -> str:
        """Presence: ``online=true`` at every connect, the Last Will's ``online=false``."""
        return f"{self.base}/devices/{check_unit(device_id)}/online"

    def device_events(self, device_id: str) -> str:
        return f"{self.base}/devices/{check_unit(device_id)}/events"

    def device_telemetry(self, device_id: str) -> str:
        return f"{self.base}/devices/{check_unit(device_id)}/telemetry"

    def device_acks(self, device_id: str) -> str:
        """Where the ingest tells one device which of its windows and events are stored."""
        return f"{self.base}/devices/{check_unit(device_id)}/acks"

    def group_desired(self, group: str) -> str:
        return f"{self.base}/groups/{check_segment(group, 'group name')}/desired"

    # -- remote configuration (docs/remote-config.md) --------------------------------------------
    def device_config(self, device_id: str) -> str:
        return f"{self.base}/devices/{check_unit(device_id)}/config"

    def group_config(self, group: str) -> str:
        return f"{self.base}/groups/{check_segment(group, 'group name')}/config"

    def device_config_state(self, device_id: str) -> str:
        return f"{self.base}/devices/{check_unit(device_id)}/config_state"

    def all_device_config_states(self) -> str:
        return f"{self.base}/devices/+/config_state"

    def all_device_configs(self) -> str:
        return f"{self.base}/devices/+/config"

    def all_group_configs(self) -> str:
        return f"{self.base}/groups/+/config"

    # -- artifacts -------------------------------------------------------------------------
    def artifact_meta(self, sha256: str) -> str:
        return f"{self.base}/artifacts/{check_sha256(sha256)}/meta"

    def artifact_chunk(self, sha256: str, index: int) -> str:
        if not isinstance(index, int) or index < 0:
            raise ProtocolError(f"invalid chunk index {index!r}")
        return f"{self.base}/artifacts/{check_sha256(sha256)}/chunks/{index}"

    def artifact_chunks(self, sha256: str) -> str:
        """Filter for every chunk of one artifact (a device that holds none of them yet)."""
        return f"{self.base}/artifacts/{check_sha256(sha256)}/chunks/+"

    def trust_revocations(self) -> str:
        return f"{self.base}/trust/revocations"

    def ingest_capabilities(self) -> str:
        """Retained by the ingest: what it does for devices (end-to-end acknowledgements)."""
        return f"{self.base}/ingest/capabilities"

    # -- subscription filters for the cloud side -----------------------------------------
    def all_device_states(self) -> str:
        return f"{self.base}/devices/+/state"

    def all_device_online(self) -> str:
        return f"{self.base}/devices/+/online"

    def all_device_events(self) -> str:
        return f"{self.base}/devices/+/events"

    def all_device_telemetry(self) -> str:
        return f"{self.base}/devices/+/telemetry"

    def shared_telemetry(self, share_group: str = "ingest") -> str:
        """Shared subscription (MQTT 5) so several ingest workers split the telemetry load."""
        return f"$share/{check_segment(share_group, 'share group')}/{self.all_device_telemetry()}"

    def shared_events(self, share_group: str = "ingest") -> str:
        """Shared subscription (MQTT 5) of the ingest workers that store deployment events."""
        return f"$share/{check_segment(share_group, 'share group')}/{self.all_device_events()}"

    def all_device_acks(self) -> str:
        return f"{self.base}/devices/+/acks"

    # -- broker access control (Mosquitto ACL lines) ----------------------------------------
    def all_device_desired(self) -> str:
        return f"{self.base}/devices/+/desired"

    def all_device_shadow(self) -> str:
        return f"{self.base}/devices/+/shadow"

    def all_group_desired(self) -> str:
        return f"{self.base}/groups/+/desired"

    def all_artifacts(self) -> str:
        return f"{self.base}/artifacts/#"

    # -- broker probe (edgeline broker check) ----------------------------------------------
    def probe(self, token: str, leaf: str) -> str:
        """A throwaway topic of one broker check (``token`` keeps concurrent checks apart)."""
        return f"{self.base}/probe/{check_segment(token, 'probe token')}/{check_segment(leaf, 'probe leaf')}"

    def probe_filter(self, token: str) -> str:
        return f"{self.base}/probe/{check_segment(token, 'probe token')}/+"

    def device_id_from(self, topic: str) -> str:
        """Extract the device id from a per-device topic of this fleet."""
        prefix = f"{self.base}/devices/"
        if not topic.startswith(prefix):
            raise ProtocolError(f"topic {topic!r} is not a device topic of fleet {self.fleet!r}")
        rest = topic[len(prefix) :].split("/")
        if len(rest) != 2:
            raise ProtocolError(f"topic {topic!r} is not a device topic")
        return check_unit(rest[0])

    def chunk_index_from(self, topic: str) -> tuple[str, int]:
        """Parse ``.../artifacts/<sha>/chunks/<n>`` into (sha256, n). Only the canonical spelling of
        ``n`` (what :meth:`artifact_chunk` writes: ASCII digits, no leading zero) is a chunk topic:
        ``chunks/00`` is not chunk 0, so what is retained there cannot stand in for a chunk."""
        prefix = f"{self.base}/artifacts/"
        parts = topic[len(prefix) :].split("/") if topic.startswith(prefix) else []
        if len(parts) != 3 or parts[1] != "chunks" or not _canonical_index(parts[2]):
            raise ProtocolError(f"topic {topic!r} is not an artifact chunk topic")
        return check_sha256(parts[0]), int(parts[2])


def _canonical_index(text: str) -> bool:
    return 0 < len(text) <= 12 and text.isascii() and text.isdigit() and (text == "0" or text[0] != "0")


def line_verdict_topic(device_id: str, prefix: str = "line") -> str:
    """Local topic on which the line receives verdicts. Never published to the cloud broker."""
    return f"{check_segment(prefix, 'line topic prefix')}/{check_unit(device_id)}/verdicts"


def line_trigger_topic(device_id: str, prefix: str = "line") -> str:
    """Local topic on which the line's controller asks for triggered inspections (JSON, QoS 1)."""
    return f"{check_segment(prefix, 'line topic prefix')}/{check_unit(device_id)}/trigger"


def line_result_topic(device_id: str, prefix: str = "line") -> str:
    """Local topic on which each triggered result is published, one message per part."""
    return f"{check_segment(prefix, 'line topic prefix')}/{check_unit(device_id)}/results"


def line_feedback_topic(device_id: str, prefix: str = "line") -> str:
    """Local topic on which an operator or a downstream check confirms or overrides a verdict (JSON, QoS 1)."""
    return f"{check_segment(prefix, 'line topic prefix')}/{check_unit(device_id)}/feedback"


def line_feedback_answer_topic(device_id: str, prefix: str = "line") -> str:
    """Local topic on which each feedback is answered: stored, or refused with the reason."""
    return f"{line_feedback_topic(device_id, prefix)}/answers"
