"""Turn a model's outputs into a verdict for the line. Pure logic, no I/O.

Two decision rules:

* with an :class:`~edgeline.core.protocol.manifest.OperatingPoint` (every bundle ``edgeline train``
  writes): the defect score ``1 - p(ok)`` against the threshold chosen on held-out data for the line's
  target; a score in the review band passes as ``uncertain``. The label of a defect is the most likely
  known defect class, or ``anomaly`` when the good-part model alone found it.
* without one (imported models, older bundles): the top class, defect when it is not ``ok_label`` and
  reaches ``defect_min_confidence``; a weaker defect passes as ``uncertain``.

Either way a frame the model cannot speak for (no part found, or unlike every good part as a whole)
gets the verdict ``unknown``: routed like ``uncertain`` (to review), never a confident defect class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeline.core.protocol.manifest import OperatingPoint, Thresholds

UNKNOWN = "unknown"
ANOMALY = "anomaly"


@dataclass(frozen=True, slots=True)
class Region:
    """Where to look: a box in frame pixels and the anomaly score inside it."""

    x: float
    y: float
    w: float
    h: float
    score: float

    def to_dict(self) -> dict[str, float]:
        return {
            "x": round(self.x, 1),
            "y": round(self.y, 1),
            "w": round(self.w, 1),
            "h": round(self.h, 1),
            "score": round(self.score, 3),
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the line gets for one frame. Carries no pixels and no features."""

    frame_id: int
    verdict: str  # "ok", "defect" or "unknown"
    label: str  # the class behind the verdict
    confidence: float
    uncertain: bool
    model: str
    model_version: int
    latency_ms: float
    ts: float
    anomaly_score: float | None = None
    region: Region | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    probs: np.ndarray,
    labels: tuple[str, ...],
    thresholds: Thresholds,
    *,
    operating_point: OperatingPoint | None = None,
    unknown: bool = False,
) -> tuple[str, str, float, bool]:
    """Return (verdict, label, confidence, uncertain) for one probability vector."""
    if unknown:
        return UNKNOWN, UNKNOWN, 0.0, True
    if operating_point is not None:
        return _decide_at(probs, labels, thresholds.ok_label, operating_point)
    idx = int(np.argmax(probs))
    label = labels[idx]
    conf = float(probs[idx])
    if label == thresholds.ok_label:
        return "ok", label, conf, False
    need = thresholds.per_class.get(label, thresholds.defect_min_confidence)
    if conf >= need:
        return "defect", label, conf, False
    return "ok", label, conf, True


def _decide_at(
    probs: np.ndarray, labels: tuple[str, ...], ok_label: str, op: OperatingPoint
) -> tuple[str, str, float, bool]:
    ok = labels.index(ok_label)
    score = defect_score(probs, ok)
    if score < op.threshold:
        return "ok", ok_label, 1.0 - score, score >= op.review
    return "defect", defect_label(probs, labels, ok), score, False


def defect_score(probs: np.ndarray, ok_index: int) -> float:
    """``1 - p(ok)``: the probability that the part is not good, whatever says so."""
    return float(min(1.0, max(0.0, 1.0 - float(probs[ok_index]))))


def defect_label(probs: np.ndarray, labels: tuple[str, ...], ok_index: int) -> str:
    """The known defect class the classifier ranks first when it ranks one above ``ok``; else the
    largest non-ok entry (``anomaly`` when only the good-part model objects)."""
    known = [i for i, name in enumerate(labels) if i != ok_index and name != ANOMALY]
    if known:
        top_known = max(known, key=lambda i: float(probs[i]))
        if float(probs[top_known]) > float(probs[ok_index]):
            return labels[top_known]
    if ANOMALY in labels:
        return ANOMALY
    rest = [i for i in range(len(labels)) if i != ok_index]
    return labels[max(rest, key=lambda i: float(probs[i]))]
