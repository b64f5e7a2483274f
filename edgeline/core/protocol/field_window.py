"""The ``field_metrics`` block of a telemetry window: how the model fares in production, as counts.

Two parts, both fixed-length lists of counts (no field can carry a part id, a result id or the
confidence of one part):

* ``score_pass`` / ``score_reject``: histograms of the defect score of the window's verdicts that
  passed the part (``ok``) and rejected it (``defect``), on :data:`SCORE_BINS` equal bins over
  [0, 1]. The defect score of a verdict is ``1 - confidence`` for ``ok`` and ``confidence`` for
  ``defect`` (for bundles with an operating point that is exactly ``1 - p(ok)``). ``unknown``
  verdicts have no score; the window's ``class_counts`` count them. The cloud estimates field
  escape and false-reject rates from these without labels (docs/drift.md).
* ``feedback``: per model version (any version, not only the window's: feedback can come long after
  its verdict), the verdicts that got operator feedback since the previous window, by how the line
  treated the part (passed, rejected, unknown) x the truth given (ok, defect; a defect class counts
  as defect) and, for passed and rejected parts, the verdict's defect-score bin. ``added`` counts
  feedback given; ``retracted`` the earlier feedback a correction replaced (the cloud subtracts it),
  so the sum over windows is the feedback stored on the device. ``feedback_gap``: the device's
  feedback log no longer held everything since the previous window (some feedback is not counted).

The device applies the window's privacy rules to these counts too: they ride in the window that
reaches the minimum frame count, and the optional Laplace noise is added to each of them. Noised
field counts are rounded but **not** clipped at 0 (a sum over windows of signed noisy counts is
unbiased; clipping every cell that is 0 at 0 would add about half the noise scale to each): with
``noise_scale`` (the Laplace scale ``b`` of every field count) set, a count may be negative, down to
``-NOISE_TAIL * noise_scale`` (a Laplace draw goes that far with probability ``e**-40 / 2``); without
it, every count is ``>= 0``. The cloud sums the signed counts and clips only the rates it computes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated

from pydantic import Field, model_validator

from edgeline.core.protocol.model_ref import MAX_VERSION
from edgeline.core.strict import Strict

#: Bins of the defect-score histograms over [0, 1].
SCORE_BINS = 10
#: Most model versions one window reports feedback for.
MAX_FIELD_VERSIONS = 8
_MAX_COUNT = 1_000_000_000
#: a noised count may be as low as ``-NOISE_TAIL * noise_scale``
NOISE_TAIL = 40
#: largest Laplace scale a window may declare
MAX_NOISE_SCALE = 1e7
#: signed counts; the sign is checked against ``FieldMetrics.noise_scale``
_Count = Annotated[int, Field(ge=-_MAX_COUNT, le=_MAX_COUNT)]
_Bins = Annotated[list[_Count], Field(min_length=SCORE_BINS, max_length=SCORE_BINS)]
#: how the line treated a part, and the names of the cells of :class:`FeedbackCells`
SIDES: tuple[str, ...] = ("pass", "reject", "unknown")
TRUTHS: tuple[str, ...] = ("ok", "defect")


class FeedbackCells(Strict):
    """Verdicts with feedback: ``<side>_<truth>``, per defect-score bin for ``pass`` and ``reject``."""

    pass_ok: _Bins
    pass_defect: _Bins
    reject_ok: _Bins
    reject_defect: _Bins
    unknown_ok: _Count = 0
    unknown_defect: _Count = 0

    def values(self) -> Iterator[int]:
        for name in ("pass_ok", "pass_defect", "reject_ok", "reject_defect"):
            yield from getattr(self, name)
        yield self.unknown_ok
        yield self.unknown_defect

    def total(self) -> int:
        return (
            sum(self.pass_ok)
            + sum(self.pass_defect)
            + sum(self.reject_ok)
            + sum(self.reject_defect)
            + self.unknown_ok
            + self.unknown_defect
        )


class FieldVersion(Strict):
    """Feedback on the verdicts of one model version."""

    model: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    version: int = Field(ge=0, le=MAX_VERSION)
    added: FeedbackCells
    retracted: FeedbackCells | None = None


class FieldMetrics(Strict):
    score_pass: _Bins
    score_reject: _Bins
    feedback: list[FieldVersion] = Field(default_factory=list, max_length=MAX_FIELD_VERSIONS)
    feedback_gap: bool = False
    #: the Laplace scale of the noise on every count of this block, or None when they are exact
    noise_scale: float | None = Field(default=None, gt=0, le=MAX_NOISE_SCALE)

    @model_validator(mode="after")
    def _versions_once(self) -> FieldMetrics:
        keys = [(v.model, v.version) for v in self.feedback]
        if len(set(keys)) != len(keys):
            raise ValueError("a model version appears twice in field_metrics.feedback")
        low = self.lowest()
        floor = 0 if self.noise_scale is None else -math.ceil(NOISE_TAIL * self.noise_scale)
        if low < floor:
            why = "without noise_scale" if self.noise_scale is None else f"below -{NOISE_TAIL} x noise_scale"
            raise ValueError(f"field_metrics count {low} is negative {why}")
        return self

    def lowest(self) -> int:
        """The smallest count of the block (negative only for noised counts)."""
        values = [*self.score_pass, *self.score_reject]
        for v in self.feedback:
            values.extend(v.added.values())
            if v.retracted is not None:
                values.extend(v.retracted.values())
        return min(values)


__all__ = [
    "MAX_FIELD_VERSIONS",
    "MAX_NOISE_SCALE",
    "NOISE_TAIL",
    "SCORE_BINS",
    "SIDES",
    "TRUTHS",
    "FeedbackCells",
    "FieldMetrics",
    "FieldVersion",
]
