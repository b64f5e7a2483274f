"""Field escape and false-reject rates estimated without labels, pure (no I/O): the idea of
confidence-based performance estimation (CBPE), on the aggregates a window carries.

A window has the defect-score histograms of the verdicts that passed and that rejected parts
(``field_metrics.score_pass`` / ``score_reject``) and the count of ``unknown`` verdicts. Given
``q[b]`` = P(part defective | defect score in bin b), the expected confusion matrix of any set of
windows is::

    expected escapes         = sum_b pass[b] * q[b]
    expected caught defects  = sum_b reject[b] * q[b] + unknown * q_unknown
    expected false rejects   = sum_b reject[b] * (1 - q[b]) + unknown * (1 - q_unknown)
    expected good passed     = sum_b pass[b] * (1 - q[b])

and the estimates are escapes / defects and false rejects / good parts. :func:`calibrate` learns
``q`` from the operator feedback of a model version (the feedback cells are binned by the same
defect score), as CBPE calibrates scores on a labelled reference set: per bin, the share of
defective parts among those with feedback, shrunk towards the bin's own score (``PRIOR_WEIGHT``
pseudo-parts: a bin without feedback takes the score at face value), then made non-decreasing in the
score (pool-adjacent-violators). The estimate then holds for windows, lines and slices with little
or no feedback of their own. Its assumptions are stated in docs/drift.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cloud_registry.telemetry.field_rates import FieldTotals
from edgeline.core.protocol.field_window import SCORE_BINS

#: pseudo-parts at the bin's own score that every bin's calibration starts from
PRIOR_WEIGHT = 2.0
#: the score of a bin when nothing else is known: its middle
BIN_MIDS = (np.arange(SCORE_BINS) + 0.5) / SCORE_BINS


@dataclass(frozen=True)
class Calibration:
    """P(defective | defect-score bin), and for ``unknown`` verdicts; ``labelled``: parts with
    feedback it was learned from (per bin in ``per_bin``)."""

    p_defect: np.ndarray
    p_unknown: float
    labelled: int
    per_bin: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "p_defect": [round(float(x), 6) for x in self.p_defect],
            "p_unknown": round(self.p_unknown, 6),
            "labelled": self.labelled,
            "per_bin": [int(x) for x in self.per_bin],
        }


def pav(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to ``values`` in weighted least squares."""
    blocks: list[list[float]] = []  # [mean, weight, length]
    for v, w in zip(values.astype(float), weights.astype(float), strict=True):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, n2 = blocks.pop()
            m1, w1, n1 = blocks.pop()
            both = w1 + w2
            blocks.append([(m1 * w1 + m2 * w2) / both if both > 0 else (m1 + m2) / 2, both, n1 + n2])
    return np.concatenate([np.full(int(n), m) for m, _, n in blocks])


def calibrate(t: FieldTotals, prior_weight: float = PRIOR_WEIGHT) -> Calibration:
    """The calibration a version's feedback gives (see the module's docstring)."""
    n = t.net.astype(float)
    defects = n[1, :SCORE_BINS] + n[3, :SCORE_BINS]
    goods = n[0, :SCORE_BINS] + n[2, :SCORE_BINS]
    labelled = defects + goods
    q = (defects + prior_weight * BIN_MIDS) / (labelled + prior_weight)
    q = pav(q, labelled + prior_weight)
    u_def, u_ok = n[3, SCORE_BINS], n[2, SCORE_BINS]
    q_u = (u_def + prior_weight * 0.5) / (u_def + u_ok + prior_weight)
    total = int(labelled.sum() + u_def + u_ok)
    return Calibration(np.clip(q, 0.0, 1.0), float(q_u), total, labelled.astype(np.int64))


@dataclass(frozen=True)
class Estimate:
    """Expected field rates of a set of windows, from their histograms and a calibration."""

    escape: float | None
    false_reject: float | None
    expected_defects: float
    expected_good: float
    #: verdicts the estimate is computed from (passed + rejected + unknown)
    verdicts: int
    #: parts with feedback behind the calibration
    calibrated_on: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "escape": self.escape,
            "false_reject": self.false_reject,
            "expected_defects": round(self.expected_defects, 3),
            "expected_good": round(self.expected_good, 3),
            "verdicts": self.verdicts,
            "calibrated_on": self.calibrated_on,
        }


def estimate(t: FieldTotals, cal: Calibration) -> Estimate:
    passed = t.score_pass.astype(float)
    rejected = t.score_reject.astype(float)
    q, qu, unknown = cal.p_defect, cal.p_unknown, float(t.unknown)
    escapes = float(passed @ q)
    caught = float(rejected @ q) + unknown * qu
    false_rejects = float(rejected @ (1 - q)) + unknown * (1 - qu)
    good_passed = float(passed @ (1 - q))
    defects, good = escapes + caught, false_rejects + good_passed
    return Estimate(
        escape=escapes / defects if defects > 0 else None,
        false_reject=false_rejects / good if good > 0 else None,
        expected_defects=defects,
        expected_good=good,
        verdicts=int(passed.sum() + rejected.sum() + unknown),
        calibrated_on=cal.labelled,
    )
