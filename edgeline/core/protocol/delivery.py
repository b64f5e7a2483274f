"""Wire schemas of model delivery: device state (birth, heartbeat, Last Will), updater events and the
artifact description. Strict (``extra="forbid"``) like every schema that crosses a trust boundary.

The signed desired-state message is an :class:`~edgeline.core.protocol.signing.Envelope` whose body is a
:class:`~edgeline.core.protocol.manifest.Manifest`; an empty retained payload on a desired topic means
"no deployment" (the registry cleared it). See docs/protocol.md.
"""

from __future__ import annotations

import time
import uuid
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, ValidationError

from edgeline.core.errors import ProtocolError
from edgeline.core.protocol.canonical import canonical_json, parse_json
from edgeline.core.protocol.model_ref import ModelRef
from edgeline.core.protocol.signing import Envelope, parse_envelope
from edgeline.core.strict import Strict, StrictByName

STATE_SCHEMA = "edgeline.state/1"
EVENT_SCHEMA = "edgeline.event/1"
ARTIFACT_SCHEMA = "edgeline.artifact/1"

#: Ceilings for messages that are not artifacts. Manifests carry PNG self-test frames, so they get more.
MAX_STATE_BYTES = 64 * 1024
MAX_EVENT_BYTES = 64 * 1024
MAX_DESIRED_BYTES = 4 * 1024 * 1024
MAX_META_BYTES = 1024 * 1024
MAX_PRESENCE_BYTES = 1024


class UpdaterState(StrEnum):
    IDLE = "IDLE"
    DOWNLOADING = "DOWNLOADING"
    VERIFIED = "VERIFIED"
    STAGED = "STAGED"
    TRIAL = "TRIAL"
    COMMITTED = "COMMITTED"
    ROLLED_BACK = "ROLLED_BACK"


class EventKind(StrEnum):
    OFFERED = "offered"  # a desired manifest passed every pre-download check
    DOWNLOADING = "downloading"
    VERIFIED = "verified"
    STAGED = "staged"
    ACTIVATED = "activated"  # serving the new model, trial running
    COMMITTED = "committed"
    REJECTED = "rejected"  # refused before activation; the current model never stopped
    ROLLED_BACK = "rolled_back"  # the trial failed (or crashed); the previous model serves again


class Reason(StrEnum):
    """Machine-readable reasons carried by ``rejected`` and ``rolled_back`` events."""

    BAD_MANIFEST = "bad_manifest"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    REVOKED_KEY = "revoked_key"
    KEY_EXPIRED = "key_expired"
    REPLAY = "replay"
    DOWNGRADE = "downgrade"
    EXPIRED = "expired"
    WRONG_TARGET = "wrong_target"
    WRONG_HARDWARE = "wrong_hardware"
    HASH_MISMATCH = "hash_mismatch"
    LENGTH_MISMATCH = "length_mismatch"
    OVERSIZE = "oversize"
    DISK_FULL = "disk_full"
    MODEL_LOAD = "model_load"
    SELFTEST = "selftest"
    NAN = "nan"
    TRIAL_ERRORS = "trial_errors"
    TRIAL_LATENCY = "trial_latency"
    TRIAL_TIMEOUT = "trial_timeout"
    CRASHED = "crashed"  # the agent died during the trial: the new model is suspect
    SUPERSEDED = "superseded"  # a newer deployment arrived before this one was activated
    IO_ERROR = "io_error"


class LastEvent(Strict):
    kind: EventKind
    sequence: int
    reason: str = ""
    ts: float


class ShadowSlotState(Strict):
    """The device's shadow slot (a challenger beside the serving model), in its retained state."""

    state: Literal["downloading", "running", "refused", "stopped"]
    #: the challenger (the one running, being fetched, or refused)
    model: ModelRef | None = None
    #: the shadow deployment this is about (the slot's own replay floor)
    sequence: int = Field(default=0, ge=0)
    #: the last refusal: of the deployment in ``sequence``, or of ``refused_sequence`` while an
    #: earlier challenger keeps running
    reason: str = Field(default="", max_length=64)
    detail: str = Field(default="", max_length=500)
    refused_sequence: int = Field(default=0, ge=0)


class DeviceState(StrictByName):
    """Retained on ``devices/<id>/state``: the birth message, every heartbeat and every change, and a
    clean goodbye (``online=False``). The Last Will never touches it (see :class:`DevicePresence`), so
    after a crash it still says which model the device served and where its updater stood."""

    schema_: Literal["edgeline.state/1"] = Field(default="edgeline.state/1", alias="schema")
    device_id: str
    online: bool
    ts: float
    heartbeat_s: float = Field(gt=0)
    hardware_class: str = ""
    groups: tuple[str, ...] = ()
    agent_version: str = ""
    model: ModelRef | None = None
    slot: Literal["A", "B"] | None = None
    updater: UpdaterState = UpdaterState.IDLE
    #: highest deployment sequence this device has accepted (replay floor)
    sequence: int = 0
    health: Literal["ok", "degraded", "no_model", "unknown"] = "unknown"
    last_event: LastEvent | None = None
    last_error: str = ""
    extra: dict[str, float | int | str] = {}
    #: the shadow slot, once a shadow deployment came (None: never)
    shadow: ShadowSlotState | None = None

    def to_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", by_alias=True))


class DevicePresence(StrictByName):
    """Retained on ``devices/<id>/online``: ``online=True`` at every connect, the Last Will
    ``online=False`` (set once; it claims nothing else, so it never erases what is true)."""

    schema_: Literal["edgeline.online/1"] = Field(default="edgeline.online/1", alias="schema")
    device_id: str
    online: bool
    #: the device's clock when it connected (a Will carries none: it is sent by the broker, later)
    ts: float | None = Field(default=None, ge=0, le=1e11)

    def to_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", by_alias=True, exclude_none=True))


class DeviceEvent(StrictByName):
    """One updater transition, on ``devices/<id>/events`` (QoS 1). ``event_id`` is an idempotency key:
    a consumer that sees it twice (outbox redelivery) applies it once."""

    schema_: Literal["edgeline.event/1"] = Field(default="edgeline.event/1", alias="schema")
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=r"^[0-9a-f]{32}$")
    device_id: str
    kind: EventKind
    state: UpdaterState
    sequence: int = Field(ge=0)
    model: ModelRef | None = None
    reason: str = ""
    detail: str = Field(default="", max_length=2000)
    ts: float = Field(default_factory=time.time)
    #: seconds spent in each phase (download, verify, load, selftest, trial), when known
    timings: dict[str, float] = {}
    progress: dict[str, int] = {}

    def to_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", by_alias=True))


class ArtifactMeta(StrictByName):
    """Retained on ``artifacts/<sha256>/meta``: how the artifact is chunked. Not signed: the device
    trusts only the signed manifest's sizes and hashes; the meta lets tools and dashboards see
    what the broker holds."""

    schema_: Literal["edgeline.artifact/1"] = Field(default="edgeline.artifact/1", alias="schema")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(gt=0)
    chunk_size: int = Field(gt=0)
    chunk_sha256: tuple[str, ...]
    published_at: float

    def to_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", by_alias=True))


def _validate(model: type[Strict], payload: bytes, max_bytes: int, what: str) -> Any:
    data = parse_json(payload, max_bytes=max_bytes)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "top level"
        raise ProtocolError(f"{what} is malformed at {loc}: {first['msg']}") from exc


def parse_state(payload: bytes) -> DeviceState:
    result: DeviceState = _validate(DeviceState, payload, MAX_STATE_BYTES, "device state")
    return result


def parse_presence(payload: bytes) -> DevicePresence:
    result: DevicePresence = _validate(DevicePresence, payload, MAX_PRESENCE_BYTES, "device presence")
    return result


def parse_event(payload: bytes) -> DeviceEvent:
    result: DeviceEvent = _validate(DeviceEvent, payload, MAX_EVENT_BYTES, "device event")
    return result


def parse_meta(payload: bytes) -> ArtifactMeta:
    result: ArtifactMeta = _validate(ArtifactMeta, payload, MAX_META_BYTES, "artifact meta")
    return result


def parse_desired(payload: bytes) -> Envelope | None:
    """A desired-state payload: ``None`` for an empty (cleared) message, else the signed envelope.
    The signature is NOT checked here (the updater does it against its trust store)."""
    if not payload:
        return None
    data = parse_json(payload, max_bytes=MAX_DESIRED_BYTES)
    if not isinstance(data, dict):
        raise ProtocolError("desired state is not a JSON object")
    return parse_envelope(data)


def envelope_bytes(envelope: Envelope) -> bytes:
    return canonical_json(envelope.model_dump(mode="json"))
