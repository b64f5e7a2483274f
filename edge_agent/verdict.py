"""Turn class probabilities into a verdict for the line. Pure logic, no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge_agent.protocol.manifest import Thresholds


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the line gets for one frame. Carries no pixels and no features."""

    frame_id: int
    verdict: str  # "ok" or "defect"
    label: str  # the top class
    confidence: float
    uncertain: bool
    model: str
    model_version: int
    latency_ms: float
    ts: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(probs: np.ndarray, labels: tuple[str, ...], thresholds: Thresholds) -> tuple[str, str, float, bool]:
    """Return (verdict, label, confidence, uncertain) for one probability vector."""
    idx = int(np.argmax(probs))
    label = labels[idx]
    conf = float(probs[idx])
    if label == thresholds.ok_label:
        return "ok", label, conf, False
    need = thresholds.per_class.get(label, thresholds.defect_min_confidence)
    if conf >= need:
        return "defect", label, conf, False
    return "ok", label, conf, True
