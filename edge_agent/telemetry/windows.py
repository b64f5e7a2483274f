"""Metrics windows: what the device aggregates from every inspected frame, closed by time or frame count.

A :class:`RawWindow` lives only on the device. It holds counts and histograms (never a frame, a
value per frame or a feature vector): counts per predicted class, a top-class confidence histogram,
histograms of the input statistics on the fixed ``stat_edges``, a latency histogram (log-spaced bins,
so percentiles of merged windows stay exact to the bin), and error/drop counts. Raw windows merge by
addition, which is what the minimum-frame-count rule of :mod:`.privacy` needs.

:func:`build_window` turns a raw window into the wire :class:`TelemetryWindow`, with drift scores
against the model's reference histograms.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from edge_agent.errors import ProtocolError
from edge_agent.plugins import FrameResult
from edge_agent.preprocessing import STAT_BINS, STAT_RANGES, stat_edges
from edge_agent.telemetry.drift import Calibrator, class_mix_vectors, ref_freqs, reference_on, score
from edge_agent.telemetry.field import FieldTally
from edgeline.core.protocol.manifest import Manifest, Reference
from edgeline.core.protocol.shadow_window import ShadowWindow
from edgeline.core.protocol.telemetry import (
    ANOMALY_BINS,
    ANOMALY_RANGE,
    CONF_BINS,
    DriftStat,
    Latency,
    ModelRef,
    TelemetryWindow,
)

if TYPE_CHECKING:
    from edge_agent.shadow.window import ShadowCounts

CONF_EDGES = np.linspace(0.0, 1.0, CONF_BINS + 1)
ANOMALY_EDGES = np.linspace(ANOMALY_RANGE[0], ANOMALY_RANGE[1], ANOMALY_BINS + 1)
#: Latency bins: 1 µs .. 100 s, 5% wide each (percentile error below 2.5%).
LAT_RATIO = 1.05
LAT_MIN_MS = 0.001
LAT_BINS = math.ceil(math.log(100_000.0 / LAT_MIN_MS) / math.log(LAT_RATIO)) + 1
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
_STAT_EDGES = {name: stat_edges(name) for name in STAT_RANGES}


def _bin(value: float, lo: float, hi: float, bins: int) -> int:
    if not math.isfinite(value):
        return 0
    return min(bins - 1, max(0, int((value - lo) / (hi - lo) * bins)))


def latency_bin(ms: float) -> int:
    if not math.isfinite(ms) or ms <= LAT_MIN_MS:
        return 0
    return min(LAT_BINS - 1, int(math.log(ms / LAT_MIN_MS) / math.log(LAT_RATIO)) + 1)


def latency_percentile(hist: np.ndarray, q: float) -> float:
    """Upper edge of the bin holding the ``q`` quantile (ms)."""
    total = int(hist.sum())
    if total == 0:
        return 0.0
    idx = int(np.searchsorted(np.cumsum(hist), math.ceil(q * total)))
    return float(LAT_MIN_MS * LAT_RATIO**idx)


@dataclass
class ModelKey:
    name: str
    version: int
    sha256: str


@dataclass
class RawWindow:
    model: ModelKey
    start: float
    end: float
    frames: int = 0
    merged: int = 1
    class_counts: dict[str, int] = field(default_factory=dict)
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(CONF_BINS, np.int64))
    #: anomaly-score logits of the frames that had one (models with a good-part part)
    anomaly: np.ndarray = field(default_factory=lambda: np.zeros(ANOMALY_BINS, np.int64))
    stats: dict[str, np.ndarray] = field(
        default_factory=lambda: {n: np.zeros(STAT_BINS, np.int64) for n in STAT_RANGES}
    )
    stats_frames: int = 0
    latency: np.ndarray = field(default_factory=lambda: np.zeros(LAT_BINS, np.int64))
    latency_max: float = 0.0
    errors: int = 0
    drops: int = 0
    #: field metrics: defect-score histograms of the verdicts, feedback counts attached at release
    field_metrics: FieldTally = field(default_factory=FieldTally)
    #: the champion x challenger comparison over the window, when a challenger runs (attached at close)
    shadow: ShadowCounts | None = None

    def add(self, result: FrameResult) -> None:
        v = result.verdict
        self.frames += 1
        self.class_counts[v.label] = self.class_counts.get(v.label, 0) + 1
        self.field_metrics.add_verdict(v)
        self.confidence[_bin(v.confidence, 0.0, 1.0, CONF_BINS)] += 1
        if result.anomaly_logit is not None and math.isfinite(result.anomaly_logit):
            self.anomaly[_bin(result.anomaly_logit, ANOMALY_RANGE[0], ANOMALY_RANGE[1], ANOMALY_BINS)] += 1
        self.latency[latency_bin(v.latency_ms)] += 1
        if math.isfinite(v.latency_ms):
            self.latency_max = max(self.latency_max, v.latency_ms)
        if result.input_stats is not None:
            self.stats_frames += 1
            for name, (lo, hi) in STAT_RANGES.items():
                value = result.input_stats.get(name)
                if value is not None:
                    self.stats[name][_bin(value, lo, hi, STAT_BINS)] += 1

    def merge(self, other: RawWindow) -> RawWindow:
        """This window followed by ``other`` (same model), as one window."""
        counts = dict(self.class_counts)
        for k, n in other.class_counts.items():
            counts[k] = counts.get(k, 0) + n
        return RawWindow(
            model=self.model,
            start=min(self.start, other.start),
            end=max(self.end, other.end),
            frames=self.frames + other.frames,
            merged=self.merged + other.merged,
            class_counts=counts,
            confidence=self.confidence + other.confidence,
            anomaly=self.anomaly + other.anomaly,
            stats={n: self.stats[n] + other.stats[n] for n in STAT_RANGES},
            stats_frames=self.stats_frames + other.stats_frames,
            latency=self.latency + other.latency,
            latency_max=max(self.latency_max, other.latency_max),
            errors=self.errors + other.errors,
            drops=self.drops + other.drops,
            field_metrics=self.field_metrics.merge(other.field_metrics),
            shadow=_merge_shadow(self.shadow, other.shadow),
        )

    # -- persistence of a pending (too small) window across restarts; stays on the device ----------
    def to_state(self) -> dict[str, Any]:
        nz = np.nonzero(self.latency)[0]
        shadow = {} if self.shadow is None else {"shadow": self.shadow.to_state()}
        return shadow | {
            "model": [self.model.name, self.model.version, self.model.sha256],
            "start": self.start,
            "end": self.end,
            "frames": self.frames,
            "merged": self.merged,
            "class_counts": self.class_counts,
            "confidence": self.confidence.tolist(),
            "anomaly": self.anomaly.tolist(),
            "stats": {n: h.tolist() for n, h in self.stats.items()},
            "stats_frames": self.stats_frames,
            "latency": {str(int(i)): int(self.latency[i]) for i in nz},
            "latency_max": self.latency_max,
            "errors": self.errors,
            "drops": self.drops,
            "field_metrics": self.field_metrics.to_state(),
        }

    @classmethod
    def from_state(cls, d: Mapping[str, Any]) -> RawWindow:
        lat = np.zeros(LAT_BINS, np.int64)
        for i, n in d["latency"].items():
            lat[int(i)] = int(n)
        name, version, sha = d["model"]
        return cls(
            model=ModelKey(str(name), int(version), str(sha)),
            start=float(d["start"]),
            end=float(d["end"]),
            frames=int(d["frames"]),
            merged=int(d["merged"]),
            class_counts={str(k): int(v) for k, v in d["class_counts"].items()},
            confidence=np.asarray(d["confidence"], np.int64),
            anomaly=np.asarray(d.get("anomaly", [0] * ANOMALY_BINS), np.int64),  # state from before the field
            stats={n: np.asarray(d["stats"][n], np.int64) for n in STAT_RANGES},
            stats_frames=int(d["stats_frames"]),
            latency=lat,
            latency_max=float(d["latency_max"]),
            errors=int(d["errors"]),
            drops=int(d["drops"]),
            field_metrics=FieldTally.from_state(d.get("field_metrics")),
            shadow=_shadow_from(d.get("shadow")),
        )


def _merge_shadow(a: ShadowCounts | None, b: ShadowCounts | None) -> ShadowCounts | None:
    if a is None or b is None:
        return a if b is None else b
    return a.merge(b)


def _shadow_from(state: Mapping[str, Any] | None) -> ShadowCounts | None:
    if state is None:
        return None
    from edge_agent.shadow.window import ShadowCounts

    return ShadowCounts.from_state(state)


@dataclass
class WindowAggregator:
    """Accumulates frames into the current window. Closes it when ``window_frames`` frames are in
    (if > 0), when ``window_s`` seconds have passed since it opened (checked on every frame and by
    :meth:`poll`), and when the serving model changes (a window describes exactly one model)."""

    window_s: float
    window_frames: int = 0
    clock: Callable[[], float] = field(default=lambda: 0.0)
    current: RawWindow | None = None

    def add(self, result: FrameResult, model: ModelKey, labels: tuple[str, ...] = ()) -> list[RawWindow]:
        """Count one frame. ``labels`` (the model's classes) start at 0 in a new window, so a class
        that never occurred is reported as 0 (and noised like any other count), not left out."""
        now = self.clock()
        closed: list[RawWindow] = []
        cur = self.current
        if cur is not None and (cur.model.sha256 != model.sha256 or now - cur.start >= self.window_s):
            closed.append(self._close(now))
            cur = None
        if cur is None:
            cur = self.current = RawWindow(model=model, start=now, end=now, class_counts=dict.fromkeys(labels, 0))
        cur.add(result)
        cur.end = now
        if self.window_frames and cur.frames >= self.window_frames:
            closed.append(self._close(now))
        return closed

    def poll(self) -> RawWindow | None:
        """Close the current window if its time is up (call periodically: a stopped line still ends
        its window)."""
        now = self.clock()
        if self.current is not None and now - self.current.start >= self.window_s:
            return self._close(now)
        return None

    def flush(self) -> RawWindow | None:
        if self.current is None:
            return None
        return self._close(self.clock())

    def _close(self, now: float) -> RawWindow:
        assert self.current is not None
        w = self.current
        w.end = max(w.end, min(now, w.start + self.window_s))
        self.current = None
        return w


@dataclass
class DriftContext:
    """What drift scoring needs from the serving model's manifest. ``ref_n``: how many images the
    reference histograms were measured on, per drift key, where the manifest says (see
    :func:`context_of`); unknown ones use the calibrator's default."""

    reference: Reference
    labels: tuple[str, ...] = ()
    ref_n: dict[str, int] = field(default_factory=dict)


def context_of(manifest: Manifest) -> DriftContext:
    """Drift context of a manifest. The build pipeline measures the confidence and class-mix
    references on the held-out rows (``metrics.test_rows``) and the input statistics on the original
    training and held-out images; a small reference is noisier, so its thresholds must be wider."""
    m = manifest.metrics
    test_rows = int(m["test_rows"]) if m.get("test_rows", 0) >= 10 else None
    ref_n: dict[str, int] = {}
    if test_rows is not None:
        ref_n = {"confidence": test_rows, "class_mix": test_rows}
        if m.get("train_rows", 0) >= 10:
            # training rows may include augmented copies; the statistics come from originals only
            ref_n |= dict.fromkeys(STAT_RANGES, test_rows + int(m["train_rows"]) // 2)
    images = int(m.get("images", 0))
    if images >= 10:  # inspection bundles: every image was judged out of fold
        ref_n |= {"confidence": images, "class_mix": images} | dict.fromkeys(STAT_RANGES, images)
    if images >= 10:  # the anomaly reference: every training image's out-of-fold score
        ref_n["anomaly_score"] = images
    return DriftContext(manifest.reference, tuple(manifest.labels), ref_n)


def drift_of(
    raw: RawWindow, ctx: DriftContext | None, calibrator: Calibrator, noise_scale: float = 0.0
) -> dict[str, DriftStat]:
    """Drift of each input statistic, the confidence histogram and the class mix, for which the
    manifest has a reference. ``noise_scale``: the Laplace scale already added to ``raw``'s counts."""
    out: dict[str, DriftStat] = {}
    if ctx is None:
        return out

    def put(name: str, ref: np.ndarray, counts: np.ndarray, n: int) -> None:
        if counts.sum() <= 0 or n <= 0:
            return
        s = score(
            ref,
            counts,
            calibrator,
            n=n if noise_scale > 0 else None,
            noise_scale=noise_scale,
            ref_n=ctx.ref_n.get(name),
        )
        out[name] = DriftStat(psi=round(min(s.psi, 1000.0), 6), threshold=round(s.threshold, 6), drifted=s.drifted)

    for name, hist in ctx.reference.input_stats.items():
        if name in raw.stats:
            put(name, reference_on(hist, _STAT_EDGES[name]), raw.stats[name], raw.stats_frames)
    if ctx.reference.confidence is not None:
        put("confidence", reference_on(ctx.reference.confidence, CONF_EDGES), raw.confidence, raw.frames)
    if ctx.reference.anomaly_score is not None:
        put(
            "anomaly_score",
            reference_on(ctx.reference.anomaly_score, ANOMALY_EDGES),
            raw.anomaly,
            int(raw.anomaly.sum()),
        )
    if ctx.reference.class_mix:
        ref, obs = class_mix_vectors(ctx.reference.class_mix, raw.class_counts, ctx.labels)
        if ref.sum() > 0:
            put("class_mix", ref_freqs(ref), obs, raw.frames)
    return out


def build_window(
    raw: RawWindow,
    *,
    key: str,
    device: str,
    group: str | None,
    ctx: DriftContext | None,
    calibrator: Calibrator,
    outbox_dropped: int = 0,
    noise_epsilon: float | None = None,
    noise_scale: float = 0.0,
) -> TelemetryWindow:
    """The wire window for ``raw`` (already merged and, if configured, noised: see :mod:`.privacy`)."""
    latency = None
    if raw.latency.sum() > 0:
        latency = Latency(
            p50=latency_percentile(raw.latency, 0.50),
            p95=latency_percentile(raw.latency, 0.95),
            p99=latency_percentile(raw.latency, 0.99),
            max=min(raw.latency_max, 1e7),
        )
    try:
        drift = drift_of(raw, ctx, calibrator, noise_scale)
        shadow = raw.shadow.to_wire(calibrator, noise_scale) if raw.shadow is not None else None
        return _window(raw, key, device, group, drift, outbox_dropped, noise_epsilon, latency, shadow)
    except ValidationError as exc:
        raise ProtocolError(f"window does not fit the telemetry schema: {exc.errors()[0]['msg']}") from exc


def safe_label(label: str) -> str:
    """A class label as the wire allows it (1-64 of letters, digits, '_', '.', '-')."""
    return (_UNSAFE.sub("_", label) or "_")[:64]


def _window(
    raw: RawWindow,
    key: str,
    device: str,
    group: str | None,
    drift: dict[str, DriftStat],
    outbox_dropped: int,
    noise_epsilon: float | None,
    latency: Latency | None,
    shadow: ShadowWindow | None = None,
) -> TelemetryWindow:
    counts: dict[str, int] = {}
    for label, n in raw.class_counts.items():
        counts[safe_label(label)] = counts.get(safe_label(label), 0) + n
    return TelemetryWindow(
        key=key,
        device=device,
        group=group,
        model=ModelRef(name=raw.model.name, version=raw.model.version, sha256=raw.model.sha256),
        start=raw.start,
        end=raw.end,
        frames=raw.frames,
        merged=raw.merged,
        class_counts=dict(sorted(counts.items())),
        confidence=[int(x) for x in raw.confidence],
        anomaly_score=[int(x) for x in raw.anomaly] if raw.anomaly.sum() else None,
        input_stats={n: [int(x) for x in h] for n, h in raw.stats.items()} if raw.stats_frames else {},
        stats_frames=raw.stats_frames,
        latency_ms=latency,
        errors=raw.errors,
        drops=raw.drops,
        drift=drift,
        outbox_dropped=outbox_dropped,
        noise_epsilon=noise_epsilon,
        field_metrics=raw.field_metrics.wire(),
        shadow=shadow,
    )
