"""The comparison's counts for one telemetry window (pure: verdicts in, aggregates out).

:class:`ShadowCounts` lives on the device beside a :class:`~edge_agent.telemetry.windows.RawWindow`:
it merges by addition (the minimum-frame-count rule), persists with a pending window, takes the
window's Laplace noise, and becomes the wire :class:`~edgeline.core.protocol.shadow_window.ShadowWindow`
with the challenger's drift against its own reference. No frame, no value per frame: the latency is
a log-binned histogram like the window's own, the class pairs a bounded map of counts.

Under the window's Laplace noise (:meth:`ShadowCounts.noised`) every count of the block is noised
and kept signed (the cloud sums them over windows: see
:mod:`edgeline.core.protocol.shadow_window`), and the block carries the scale. One compared frame
adds 1 to :data:`SHADOW_SENSITIVITY` of the noised counts, which the window's noise scale includes
(:mod:`edge_agent.telemetry.privacy`). The latency histogram is not noised: like the window's own
``latency_ms`` it describes the device (docs/privacy.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edge_agent.telemetry.drift import Calibrator
from edge_agent.telemetry.windows import (
    ANOMALY_EDGES,
    CONF_EDGES,
    LAT_BINS,
    DriftContext,
    ModelKey,
    RawWindow,
    drift_of,
    latency_bin,
    latency_percentile,
    safe_label,
)
from edgeline.core.protocol.model_ref import ModelRef
from edgeline.core.protocol.shadow_window import MAX_PAIRS, VERDICTS, ShadowDrift, ShadowLatency, ShadowWindow

_V = {v: i for i, v in enumerate(VERDICTS)}
#: a pair beyond :data:`MAX_PAIRS` distinct ones is counted here (champion label, challenger label)
OTHER = "_other"
#: Noised counts one compared frame adds 1 to (:meth:`ShadowCounts.add`): ``compared``, one agreement
#: cell, one class pair of disagreement (its labels differ), one of the challenger's class counts
#: (its drift's class mix), one confidence bin and one anomaly-score bin. A skipped or refused frame
#: adds 1 to ``skipped`` or ``errors`` instead. ``latency`` is not noised (see the module's docstring).
SHADOW_SENSITIVITY = 6


def _bin(edges: np.ndarray, value: float) -> int:
    if not math.isfinite(value):
        return 0
    i = int(np.searchsorted(edges, value, side="right")) - 1
    return min(max(i, 0), len(edges) - 2)


@dataclass
class ShadowCounts:
    """What the comparison counted since the last window closed. ``challenger`` is set by the
    worker; ``ctx`` (the challenger's drift reference) is not persisted."""

    challenger: ModelKey | None = None
    compared: int = 0
    skipped: int = 0
    errors: int = 0
    agreement: np.ndarray = field(default_factory=lambda: np.zeros((3, 3), np.int64))
    pairs: dict[tuple[str, str], int] = field(default_factory=dict)
    class_counts: dict[str, int] = field(default_factory=dict)
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(len(CONF_EDGES) - 1, np.int64))
    anomaly: np.ndarray = field(default_factory=lambda: np.zeros(len(ANOMALY_EDGES) - 1, np.int64))
    latency: np.ndarray = field(default_factory=lambda: np.zeros(LAT_BINS, np.int64))
    ctx: DriftContext | None = None
    #: the Laplace scale of the noise these counts carry (set by :meth:`noised`; never persisted)
    noise_scale: float | None = None

    def add(
        self,
        champion: tuple[str, str],
        challenger: tuple[str, str],
        confidence: float,
        anomaly_logit: float | None,
        latency_ms: float,
    ) -> None:
        """One compared frame: (verdict, label) of each model and the challenger's figures."""
        self.compared += 1
        a, b = _V.get(champion[0]), _V.get(challenger[0])
        if a is not None and b is not None:
            self.agreement[a, b] += 1
        if champion[1] != challenger[1]:
            key = (safe_label(champion[1]), safe_label(challenger[1]))
            if key not in self.pairs and len(self.pairs) >= MAX_PAIRS - 1:
                key = (OTHER, OTHER)
            self.pairs[key] = self.pairs.get(key, 0) + 1
        self.class_counts[challenger[1]] = self.class_counts.get(challenger[1], 0) + 1
        self.confidence[_bin(CONF_EDGES, confidence)] += 1
        if anomaly_logit is not None and math.isfinite(anomaly_logit):
            self.anomaly[_bin(ANOMALY_EDGES, anomaly_logit)] += 1
        self.latency[latency_bin(latency_ms)] += 1

    def merge(self, other: ShadowCounts) -> ShadowCounts:
        """This window's counts followed by ``other``'s. Counts of another challenger do not add:
        the newer challenger's are kept (a window describes one comparison)."""
        if other.challenger is not None and self.challenger is not None and other.challenger != self.challenger:
            return other
        pairs = dict(self.pairs)
        for pk, n in other.pairs.items():
            pairs[pk] = pairs.get(pk, 0) + n
        classes = dict(self.class_counts)
        for ck, n in other.class_counts.items():
            classes[ck] = classes.get(ck, 0) + n
        return ShadowCounts(
            challenger=other.challenger or self.challenger,
            compared=self.compared + other.compared,
            skipped=self.skipped + other.skipped,
            errors=self.errors + other.errors,
            agreement=self.agreement + other.agreement,
            pairs=pairs,
            class_counts=classes,
            confidence=self.confidence + other.confidence,
            anomaly=self.anomaly + other.anomaly,
            latency=self.latency + other.latency,
            ctx=other.ctx or self.ctx,
        )

    def noised(
        self,
        noisy: Callable[[np.ndarray], np.ndarray],
        scale: float | None = None,
        champion_labels: tuple[str, ...] | None = None,
    ) -> ShadowCounts:
        """Every count through ``noisy`` (the window's Laplace noise of scale ``scale``: with a
        scale, ``noisy`` keeps the sign and the block says so on the wire).

        The class pairs of disagreement are noised over a domain that does not depend on the frames
        (every pair of a champion label of ``champion_labels`` and a different challenger label of
        the challenger's manifest, ``_other`` for the rest), zeros included: the presence of a pair
        says nothing then. Without such a domain (labels unknown, or more than :data:`MAX_PAIRS`
        pairs) the noised block carries no pairs."""
        pairs = self._pair_domain(champion_labels)
        pair_keys, class_keys = list(pairs), self._class_domain()
        pair_n: list[int] = noisy(np.array([pairs[k] for k in pair_keys], np.int64)).tolist() if pair_keys else []
        class_n: list[int] = (
            noisy(np.array([self.class_counts.get(k, 0) for k in class_keys], np.int64)).tolist() if class_keys else []
        )
        one = noisy(np.array([self.compared, self.skipped, self.errors], np.int64))
        return replace(
            self,
            compared=int(one[0]),
            skipped=int(one[1]),
            errors=int(one[2]),
            agreement=noisy(self.agreement),
            pairs={k: int(n) for k, n in zip(pair_keys, pair_n, strict=True)},
            class_counts={k: int(n) for k, n in zip(class_keys, class_n, strict=True)},
            confidence=noisy(self.confidence),
            anomaly=noisy(self.anomaly) if self.anomaly.sum() else self.anomaly,
            noise_scale=scale,
        )

    def _pair_domain(self, champion_labels: tuple[str, ...] | None) -> dict[tuple[str, str], int]:
        """The pairs to noise with their true counts (see :meth:`noised`); empty without a domain."""
        mine = self.ctx.labels if self.ctx is not None else ()
        if not champion_labels or not mine:
            return {}
        domain = {(safe_label(a), safe_label(b)) for a in champion_labels for b in mine}
        keys = sorted(k for k in domain if k[0] != k[1])
        if len(keys) + 1 > MAX_PAIRS:
            return {}
        out = dict.fromkeys([*keys, (OTHER, OTHER)], 0)
        for k, n in self.pairs.items():
            out[k if k in out else (OTHER, OTHER)] += n
        return out

    def _class_domain(self) -> list[str]:
        """The challenger's classes to noise: its manifest's, zeros included, and any other it counted."""
        mine = list(self.ctx.labels) if self.ctx is not None else []
        return mine + [k for k in self.class_counts if k not in mine]

    # -- persistence with a pending window (stays on the device) ----------------------------------
    def to_state(self) -> dict[str, Any]:
        c = self.challenger
        nz = np.nonzero(self.latency)[0]
        return {
            "challenger": None if c is None else [c.name, c.version, c.sha256],
            "compared": self.compared,
            "skipped": self.skipped,
            "errors": self.errors,
            "agreement": self.agreement.tolist(),
            "pairs": [[a, b, n] for (a, b), n in self.pairs.items()],
            "class_counts": self.class_counts,
            "confidence": self.confidence.tolist(),
            "anomaly": self.anomaly.tolist(),
            "latency": {str(int(i)): int(self.latency[i]) for i in nz},
        }

    @classmethod
    def from_state(cls, d: Mapping[str, Any]) -> ShadowCounts:
        lat = np.zeros(LAT_BINS, np.int64)
        for i, n in d["latency"].items():
            lat[int(i)] = int(n)
        c = d["challenger"]
        return cls(
            challenger=None if c is None else ModelKey(str(c[0]), int(c[1]), str(c[2])),
            compared=int(d["compared"]),
            skipped=int(d["skipped"]),
            errors=int(d["errors"]),
            agreement=np.asarray(d["agreement"], np.int64).reshape(3, 3),
            pairs={(str(a), str(b)): int(n) for a, b, n in d["pairs"]},
            class_counts={str(k): int(v) for k, v in d["class_counts"].items()},
            confidence=np.asarray(d["confidence"], np.int64),
            anomaly=np.asarray(d["anomaly"], np.int64),
            latency=lat,
        )

    # -- the wire ----------------------------------------------------------------------------------
    def to_wire(self, calibrator: Calibrator, noise_scale: float = 0.0) -> ShadowWindow | None:
        """The window's ``shadow`` block; None before the challenger is known."""
        c = self.challenger
        if c is None:
            return None
        disagreement: dict[str, dict[str, int]] = {}
        for (a, b), n in sorted(self.pairs.items()):
            if n > 0 or self.noise_scale is not None:  # noised: every pair of the domain, signed
                disagreement.setdefault(a, {})[b] = n
        latency = None
        if self.latency.sum() > 0:
            latency = ShadowLatency(
                p50=latency_percentile(self.latency, 0.50), p99=latency_percentile(self.latency, 0.99)
            )
        return ShadowWindow(
            challenger=ModelRef(name=c.name, version=c.version, sha256=c.sha256),
            compared=self.compared,
            skipped=self.skipped,
            errors=self.errors,
            agreement={
                a: {b: int(self.agreement[i, j]) for j, b in enumerate(VERDICTS)} for i, a in enumerate(VERDICTS)
            },
            disagreement=disagreement,
            confidence=[int(x) for x in self.confidence],
            anomaly_score=[int(x) for x in self.anomaly] if self.anomaly.any() else None,
            latency_ms=latency,
            drift=self._drift(calibrator, self.noise_scale or noise_scale),
            noise_scale=self.noise_scale,
        )

    def _drift(self, calibrator: Calibrator, noise_scale: float) -> dict[str, ShadowDrift]:
        """The challenger's confidence, anomaly score and class mix against its own reference (the
        window scorer of the champion, on the challenger's counts). Noised counts are scored clipped
        at 0, as the calibrator's thresholds for noise are simulated."""
        if self.ctx is None or self.challenger is None or self.compared <= 0:
            return {}
        as_window = RawWindow(
            model=self.challenger,
            start=0.0,
            end=0.0,
            frames=self.compared,
            class_counts={k: max(0, n) for k, n in self.class_counts.items()},
            confidence=np.maximum(self.confidence, 0),
            anomaly=np.maximum(self.anomaly, 0),
        )
        got = drift_of(as_window, self.ctx, calibrator, noise_scale)
        return {k: ShadowDrift(psi=s.psi, threshold=s.threshold, drifted=s.drifted) for k, s in got.items()}
