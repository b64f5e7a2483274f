"""The telemetry window: the ONLY message with field data that leaves a device.

A window holds aggregates of many frames and nothing else: counts per predicted class, a histogram of
the top-class confidence, histograms of scalar input statistics (brightness, contrast, ...), latency
percentiles, error and drop counts, and drift scores against the model's reference histograms. Every
list has a fixed length, every map a bounded set of keys, every number a range: no field can carry a
frame, a crop, an embedding or a feature vector. See docs/privacy.md.

``key`` is the idempotency key: a device may deliver a window more than once (at-least-once), the
ingest stores it once. ``device`` is a keyed pseudonym (HMAC of the device id with a fleet secret).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from edgeline.core.errors import ProtocolError
from edgeline.core.protocol.canonical import canonical_json, parse_json
from edgeline.core.protocol.field_window import FieldMetrics
from edgeline.core.protocol.model_ref import ModelRef
from edgeline.core.protocol.shadow_window import ShadowWindow
from edgeline.core.strict import Strict, StrictByName

#: Input statistics tracked for drift, with the fixed value range of their histograms (the device's
#: preprocessing computes them; windows carry their histograms).
STAT_RANGES: dict[str, tuple[float, float]] = {
    "brightness": (0.0, 1.0),  # mean intensity of the ROI, 0..1
    "contrast": (0.0, 0.5),  # standard deviation of intensity, 0..1 scale
    "sharpness": (0.0, 4.0),  # log10(1 + variance of the Laplacian)
    "edge_density": (0.0, 0.5),  # fraction of pixels on a Canny edge
}
STAT_BINS = 20
SCHEMA: Literal["edgeline.telemetry/1"] = "edgeline.telemetry/1"
#: Bins of the top-class confidence histogram over [0, 1].
CONF_BINS = 10
#: Most class labels a window may carry.
MAX_LABELS = 32
#: Largest count any field may hold (about 30 years of frames at 1 frame/s).
MAX_COUNT = 1_000_000_000
#: Hard ceiling on an encoded window. A real window is 1-3 KB; anything bigger is refused on both sides.
MAX_WINDOW_BYTES = 16 * 1024
#: Bins of the anomaly-score histogram: calibrated logits ``(score - center) / scale`` over
#: [ANOMALY_RANGE], the end bins holding everything beyond (models with a good-part part only).
ANOMALY_BINS = 20
ANOMALY_RANGE = (-10.0, 10.0)
#: Drift entries besides the input statistics.
EXTRA_DRIFT_KEYS = ("confidence", "class_mix", "anomaly_score")
STAT_NAMES: tuple[str, ...] = tuple(STAT_RANGES)
DRIFT_KEYS: tuple[str, ...] = STAT_NAMES + EXTRA_DRIFT_KEYS

_LABEL = r"^[A-Za-z0-9_.\-]{1,64}$"
_LABEL_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # fullmatch: no trailing newline slips past "$"
#: labels already found valid (bounded: a hostile stream of new labels only stops the caching)
_GOOD_LABELS: set[str] = set()
_DRIFT_SET = frozenset(DRIFT_KEYS)
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Hist = Annotated[list[Count], Field(min_length=2, max_length=64)]


class Latency(Strict):
    """Inference latency of the window's frames, milliseconds."""

    p50: float = Field(ge=0, le=1e7)
    p95: float = Field(ge=0, le=1e7)
    p99: float = Field(ge=0, le=1e7)
    max: float = Field(ge=0, le=1e7)


class DriftStat(Strict):
    """Population stability index of one distribution against its reference, the calibrated threshold
    it was compared with for this window's frame count, and the verdict."""

    psi: float = Field(ge=0, le=1000)
    threshold: float = Field(ge=0, le=1000)
    drifted: bool


class TelemetryWindow(StrictByName):
    schema_: Literal["edgeline.telemetry/1"] = Field(default=SCHEMA, alias="schema")
    key: str = Field(pattern=r"^[0-9a-f]{32}$")
    device: str = Field(pattern=r"^[0-9a-f]{32}$")
    group: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]{1,128}$")
    model: ModelRef
    start: float = Field(ge=0, le=1e11)
    end: float = Field(ge=0, le=1e11)
    #: frames in the window (noised when ``noise_epsilon`` is set)
    frames: Count
    #: how many raw windows were merged to reach the minimum frame count k
    merged: int = Field(default=1, ge=1, le=1_000_000)
    class_counts: dict[str, Count] = Field(max_length=MAX_LABELS)
    confidence: list[Count] = Field(min_length=CONF_BINS, max_length=CONF_BINS)
    #: anomaly-score histogram (see ANOMALY_BINS); None for models without a good-part part
    anomaly_score: list[Count] | None = Field(default=None, min_length=ANOMALY_BINS, max_length=ANOMALY_BINS)
    input_stats: dict[str, Hist] = Field(max_length=len(STAT_NAMES))
    #: frames whose input statistics were sampled into ``input_stats``
    stats_frames: Count = 0
    latency_ms: Latency | None = None
    errors: Count = 0
    drops: Count = 0
    drift: dict[str, DriftStat] = Field(default_factory=dict, max_length=len(DRIFT_KEYS))
    #: telemetry windows the device's outbox has dropped so far (cap or TTL), reported, never hidden
    outbox_dropped: Count = 0
    #: epsilon of the Laplace noise added to every count, or None when counts are exact
    noise_epsilon: float | None = Field(default=None, gt=0, le=100)
    #: field metrics: defect-score histograms and operator-feedback counts (:mod:`.field_window`)
    field_metrics: FieldMetrics | None = None
    #: the champion x challenger comparison over the window, when a challenger runs beside the
    #: serving model (aggregates only: :mod:`.shadow_window`)
    shadow: ShadowWindow | None = None

    @field_validator("class_counts")
    @classmethod
    def _labels(cls, v: dict[str, int]) -> dict[str, int]:
        for label in v:
            if label in _GOOD_LABELS:  # a fleet's windows repeat the same few labels
                continue
            if not _LABEL_RE.fullmatch(label):
                raise ValueError(f"class label {label[:70]!r} is not 1-64 letters, digits, '_', '.', '-'")
            if len(_GOOD_LABELS) < 4096:
                _GOOD_LABELS.add(label)
        return v

    @field_validator("input_stats")
    @classmethod
    def _stats(cls, v: dict[str, list[int]]) -> dict[str, list[int]]:
        for name, hist in v.items():
            if name not in STAT_RANGES:
                raise ValueError(f"unknown input statistic {name[:40]!r} (known: {', '.join(STAT_NAMES)})")
            if len(hist) != STAT_BINS:
                raise ValueError(f"input statistic {name!r} needs {STAT_BINS} bins, got {len(hist)}")
        return v

    @field_validator("drift")
    @classmethod
    def _drift(cls, v: dict[str, DriftStat]) -> dict[str, DriftStat]:
        if v.keys() <= _DRIFT_SET:
            return v
        for name in v:
            if name not in DRIFT_KEYS:
                raise ValueError(f"unknown drift entry {name[:40]!r} (known: {', '.join(DRIFT_KEYS)})")
        return v

    @model_validator(mode="after")
    def _order(self) -> TelemetryWindow:
        if self.end < self.start:
            raise ValueError("window end is before its start")
        return self

    def to_body(self) -> dict[str, Any]:
        body = self.model_dump(mode="json", by_alias=True)
        if body.get("shadow", 0) is None:  # a window without a challenger reads as before the block
            del body["shadow"]
        return body

    def encode(self) -> bytes:
        """Canonical JSON bytes; raises :class:`ProtocolError` when over :data:`MAX_WINDOW_BYTES`."""
        data = canonical_json(self.to_body())
        if len(data) > MAX_WINDOW_BYTES:
            raise ProtocolError(f"telemetry window of {len(data)} bytes exceeds {MAX_WINDOW_BYTES} bytes")
        return data


_M = TypeVar("_M", bound=BaseModel)


def _validated(cls: type[_M], body: Any, what: str, field_prefix: str, whole: str, *, count_more: bool = False) -> _M:
    """``body`` as ``cls``; a non-object or the first invalid field becomes a :class:`ProtocolError`
    (``<field_prefix> field <loc>: <why>``, ``whole`` naming the message when the error has no field)."""
    if not isinstance(body, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or whole
        more = f" (and {exc.error_count() - 1} more)" if count_more and exc.error_count() > 1 else ""
        raise ProtocolError(f"{field_prefix} field {loc[:80]}: {first['msg']}{more}") from exc


def _has_constant(payload: bytes) -> bool:
    """Whether the payload spells NaN or Infinity anywhere (two substring scans: a regular
    expression searching for either took a quarter of the window's validation)."""
    return b"NaN" in payload or b"Infinity" in payload


def parse_window(payload: bytes | str | dict[str, Any], *, max_bytes: int = MAX_WINDOW_BYTES) -> TelemetryWindow:
    """Validate a window from the wire. Oversized, non-JSON, unknown fields, wrong lengths: all become a
    :class:`ProtocolError` naming the first offending field.

    Bytes are first validated by pydantic straight from JSON (its parser and the schema in one pass,
    half the time of ``json.loads`` and then the model: the ingest's hottest step). That pass
    accepts nothing the stdlib path refuses, with one exception kept out: the NaN/Infinity
    constants (any payload spelling them takes the stdlib path, which refuses them). Anything it
    refuses takes the stdlib path too, so refusals and their messages stay as they were."""
    if isinstance(payload, bytes) and len(payload) <= max_bytes and not _has_constant(payload):
        try:
            return TelemetryWindow.model_validate_json(payload)
        except ValidationError:
            pass  # the stdlib path names the error
    body = payload if isinstance(payload, dict) else parse_json(payload, max_bytes=max_bytes)
    return _validated(TelemetryWindow, body, "telemetry window", "telemetry", "window", count_more=True)


# -- the end-to-end acknowledgement (ingest -> device) ------------------------------------------------
ACK_SCHEMA: Literal["edgeline.ack/1"] = "edgeline.ack/1"
#: Most keys of one kind in one acknowledgement.
MAX_ACK_KEYS = 256
#: Hard ceiling on an encoded acknowledgement (4 lists of 256 keys of 32 characters fit).
MAX_ACK_BYTES = 48 * 1024
AckKey = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
AckKeys = Annotated[list[AckKey], Field(max_length=MAX_ACK_KEYS)]


class Ack(StrictByName):
    """On ``devices/<id>/acks``: which of the device's messages the ingest has stored (now or
    before: a redelivery is acknowledged again), and which it refused for good (the schema), so the
    device stops sending them. Idempotency keys only, never data: window ``key`` and event
    ``event_id`` values."""

    schema_: Literal["edgeline.ack/1"] = Field(default=ACK_SCHEMA, alias="schema")
    windows: AckKeys = Field(default_factory=list)
    events: AckKeys = Field(default_factory=list)
    rejected_windows: AckKeys = Field(default_factory=list)
    rejected_events: AckKeys = Field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.windows or self.events or self.rejected_windows or self.rejected_events)

    def encode(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", by_alias=True))


def parse_ack(payload: bytes | str) -> Ack:
    """Validate an acknowledgement from the wire; anything else becomes a :class:`ProtocolError`."""
    body = parse_json(payload, max_bytes=MAX_ACK_BYTES)
    return _validated(Ack, body, "acknowledgement", "acknowledgement", "acknowledgement")


CAPABILITIES_SCHEMA: Literal["edgeline.ingest/1"] = "edgeline.ingest/1"


class IngestCapabilities(StrictByName):
    """Retained on ``ingest/capabilities`` by the ingest. ``acks``: it acknowledges every window and
    event it stores, so a device keeps each message until acknowledged, however long that takes."""

    schema_: Literal["edgeline.ingest/1"] = Field(default=CAPABILITIES_SCHEMA, alias="schema")
    acks: bool = True

    def encode(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", by_alias=True))


def parse_capabilities(payload: bytes | str) -> IngestCapabilities:
    body = parse_json(payload, max_bytes=4096)
    return _validated(IngestCapabilities, body, "ingest capabilities", "ingest capabilities", "capabilities")
