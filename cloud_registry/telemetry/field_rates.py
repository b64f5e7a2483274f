"""Field escape and false-reject rates measured from operator feedback, pure (no I/O).

Windows carry, per model version, the verdicts that got feedback as cells (side x truth x
defect-score bin, ``added`` and ``retracted``: :mod:`edgeline.core.protocol.field_window`).
:class:`FieldTotals` sums them over any set of windows (a line, a group, a version, a slice), with
the frames and defect-score histograms of the windows served by that version. From the net cells:

* **field escape** = defective parts passed / defective parts with feedback
  (``pass_defect / (pass_defect + reject_defect + unknown_defect)``);
* **field false reject** = good parts rejected or sent to review / good parts with feedback
  (``(reject_ok + unknown_ok) / (pass_ok + reject_ok + unknown_ok)``),

the line's terms of docs/decisions.md (``unknown`` is not a pass), each with its 95% Clopper-Pearson
interval (:func:`converters.operating_point.clopper_pearson`, the one the build gate uses). Fewer than
``min_parts`` parts in a denominator is said plainly: too little feedback to tell, with how many
parts with feedback would settle the configured limit.

These rates hold for the parts operators chose to give feedback on: they are the field rates only
when that choice does not depend on the truth given the verdict (docs/drift.md, "Field rates").

Noised windows (``field_metrics.noise_scale``) carry signed counts: the sums over windows are used
as they are (unbiased) and only the rate is clipped into [0, 1]; the events are clipped into
[0, n] for the interval, and the interval is widened by the noise's variance (``2 b**2`` per cell
and window, through the rate by the delta method, added in quadrature to the Clopper-Pearson half
widths: :func:`rate`). Where the noise alone has a standard deviation above :data:`MAX_NOISE_SD`, the
rate is not stated ("too little feedback to tell (noise)", status ``noisy``). The slices' test
(:mod:`.field_slices`) leaves noisy rates out and adds the others' noise variance to its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from converters.operating_point import clopper_pearson, parts_needed
from edgeline.core.protocol.field_window import SCORE_BINS, FeedbackCells, FieldMetrics

#: fewest parts in a rate's denominator before the rate is stated
MIN_PARTS = 30
#: passed and rejected parts' feedback shares further apart than this are reported
SAMPLING_RATIO = 3.0
#: a rate (or an estimate) whose noise alone has a larger standard deviation than this is not stated:
#: "too little feedback to tell (noise)" (1.96 x 0.05: the noise alone would make the 95% interval
#: about +-10 percentage points wide)
MAX_NOISE_SD = 0.05
Status = Literal["measured", "too_little", "noisy", "none"]
_CELL_ROWS = ("pass_ok", "pass_defect", "reject_ok", "reject_defect")
#: the normal quantile of the 95% intervals the noise widens
Z95 = 1.959964
#: noise-variance cells of one cell block: every cell a block has on the wire (rows 0-1: the score bins)
_WIRE_CELLS = np.ones((4, SCORE_BINS + 1))
_WIRE_CELLS[:2, SCORE_BINS] = 0.0


def cells_array(c: FeedbackCells) -> np.ndarray:
    """A wire cell block as a (4, SCORE_BINS + 1) array: rows pass_ok, pass_defect, reject_ok,
    reject_defect over the score bins; the extra column holds ``unknown_ok`` (row 2) and
    ``unknown_defect`` (row 3), both rejected by the line."""
    a = np.zeros((4, SCORE_BINS + 1), np.int64)
    for i, name in enumerate(_CELL_ROWS):
        a[i, :SCORE_BINS] = getattr(c, name)
    a[2, SCORE_BINS] = c.unknown_ok
    a[3, SCORE_BINS] = c.unknown_defect
    return a


@dataclass
class FieldTotals:
    """Sums over windows: net feedback cells (see :func:`cells_array`) of one model version, and the
    frames, verdict defect-score histograms and unknown verdicts of the windows that version served."""

    cells: np.ndarray = field(default_factory=lambda: np.zeros((4, SCORE_BINS + 1), np.int64))
    frames: int = 0
    windows: int = 0
    score_pass: np.ndarray = field(default_factory=lambda: np.zeros(SCORE_BINS, np.int64))
    score_reject: np.ndarray = field(default_factory=lambda: np.zeros(SCORE_BINS, np.int64))
    unknown: int = 0
    gap: bool = False
    #: variance of the Laplace noise summed into each cell (0 for exact windows)
    noise_var: np.ndarray = field(default_factory=lambda: np.zeros((4, SCORE_BINS + 1)))
    #: variance of the Laplace noise summed into each bin of the defect-score histograms
    hist_var: float = 0.0

    def add_served(self, frames: int, fm: FieldMetrics | None, unknown: int) -> None:
        """A window this version served: its frames and histograms."""
        self.frames += frames
        self.windows += 1
        self.unknown += unknown
        if fm is not None:
            self.score_pass += np.asarray(fm.score_pass, np.int64)
            self.score_reject += np.asarray(fm.score_reject, np.int64)
            if fm.noise_scale is not None:
                self.hist_var += 2.0 * fm.noise_scale**2

    def add_feedback(
        self,
        added: FeedbackCells,
        retracted: FeedbackCells | None,
        gap: bool = False,
        noise_scale: float | None = None,
    ) -> None:
        """One window's cells of this version (signed when noised: summed as they are)."""
        self.cells += cells_array(added)
        if retracted is not None:
            self.cells -= cells_array(retracted)
        if noise_scale is not None:
            blocks = 1 if retracted is None else 2
            self.noise_var += blocks * 2.0 * noise_scale**2 * _WIRE_CELLS
        self.gap = self.gap or gap

    def merge(self, other: FieldTotals) -> FieldTotals:
        return FieldTotals(
            self.cells + other.cells,
            self.frames + other.frames,
            self.windows + other.windows,
            self.score_pass + other.score_pass,
            self.score_reject + other.score_reject,
            self.unknown + other.unknown,
            self.gap or other.gap,
            self.noise_var + other.noise_var,
            self.hist_var + other.hist_var,
        )

    @property
    def net(self) -> np.ndarray:
        """The cells, each clipped at 0 (a noised sum can be negative); for shares per bin only: a
        sum of these is biased upwards under noise, the totals use :meth:`counts`."""
        return np.maximum(self.cells, 0)

    def counts(self) -> dict[str, int]:
        """The cells summed by side and truth over the score bins, signed (unbiased under noise)."""
        n = self.cells
        return {
            "pass_ok": int(n[0, :SCORE_BINS].sum()),
            "pass_defect": int(n[1, :SCORE_BINS].sum()),
            "reject_ok": int(n[2, :SCORE_BINS].sum()),
            "reject_defect": int(n[3, :SCORE_BINS].sum()),
            "unknown_ok": int(n[2, SCORE_BINS]),
            "unknown_defect": int(n[3, SCORE_BINS]),
        }

    @property
    def feedback(self) -> int:
        """Verdicts with feedback (the signed sum, at least 0)."""
        return max(0, int(self.cells.sum()))

    @property
    def feedback_share(self) -> float | None:
        """Verdicts with feedback per verdict served (None without frames)."""
        return self.feedback / self.frames if self.frames else None

    def side_shares(self) -> tuple[float | None, float | None]:
        """(share of passed verdicts with feedback, share of rejected ones, unknown included)."""
        c = self.counts()
        passed, rejected = int(self.score_pass.sum()), int(self.score_reject.sum()) + self.unknown
        fb_pass = max(0, c["pass_ok"] + c["pass_defect"])
        fb_rej = max(0, c["reject_ok"] + c["reject_defect"] + c["unknown_ok"] + c["unknown_defect"])
        return (fb_pass / passed if passed else None, fb_rej / rejected if rejected else None)

    def sampling_warning(self, ratio: float = SAMPLING_RATIO, min_feedback: int = 10) -> str | None:
        """A plain warning when passed and rejected parts got feedback at very different shares: the
        measured rates assume feedback random given the verdict's side, and the rates then lean on
        one side (an operator who checks only rejects measures no escape at all)."""
        sp, sr = self.side_shares()
        if sp is None or sr is None or self.feedback < min_feedback:
            return None
        lo, hi = sorted((sp, sr))
        if hi > 0 and (lo == 0 or hi / lo > ratio):
            return (
                f"feedback is not spread like the verdicts: {100 * sp:.1f}% of passed parts, "
                f"{100 * sr:.1f}% of rejected parts got feedback"
            )
        return None


@dataclass(frozen=True)
class FieldRate:
    """``events`` of ``n`` parts with feedback, its 95% interval, and whether it says anything."""

    name: Literal["escape", "false_reject"]
    events: int
    n: int
    low: float
    high: float
    status: Status
    #: parts with feedback (of this denominator) that would show the rate at or below ``limit``
    needed: int | None = None
    limit: float | None = None
    #: standard deviation of the rate due to the windows' Laplace noise (0: exact counts)
    noise_sd: float = 0.0
    #: standard deviation of the denominator's noised sum, in parts (0: exact counts)
    noise_sd_parts: float = 0.0

    @property
    def value(self) -> float | None:
        return self.events / self.n if self.n else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "events": self.events,
            "n": self.n,
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "status": self.status,
            "needed": self.needed,
            "limit": self.limit,
            "noise_sd": self.noise_sd,
            "noise_sd_parts": self.noise_sd_parts,
            "text": self.text(),
        }

    def text(self) -> str:
        what = "defective" if self.name == "escape" else "good"
        if self.status == "none":
            return f"no feedback on {what} parts"
        if self.status == "noisy":  # no figure: the noise would be most of it
            sd = f"{100 * self.noise_sd:.0f} pp" if self.n else f"{self.noise_sd_parts:.0f} parts"
            return (
                f"too little feedback to tell (noise): about {self.n} {what} parts with feedback, "
                f"the noise alone s.d. {sd}"
            )
        noise = f", noise sd {100 * self.noise_sd:.2f} pp included" if self.noise_sd > 0 else ""
        ci = f"95% CI {100 * self.low:.2f}-{100 * self.high:.2f}%{noise}"
        share = f"{100 * self.events / self.n:.2f}% ({self.events}/{self.n}, {ci})"
        if self.status == "too_little":
            more = f"; about {self.needed} would settle {100 * (self.limit or 0):.2f}%" if self.needed else ""
            return f"too little feedback to tell: {self.n} {what} parts with feedback{more} [{share}]"
        return share


def rate(
    name: Literal["escape", "false_reject"],
    events: int,
    n: int,
    *,
    min_parts: int = MIN_PARTS,
    limit: float | None = None,
    noise_var: tuple[float, float] = (0.0, 0.0),
    max_noise_sd: float = MAX_NOISE_SD,
) -> FieldRate:
    """``events`` of ``n``; noised sums are clipped (``n`` at 0, ``events`` into [0, n]).
    ``noise_var``: the noise variance of the events' sum and of the rest of the denominator's sum;
    it widens the interval by ``1.96 * sd``, ``sd`` of the rate by the delta method
    (``sqrt((1 - p)**2 var_events + p**2 var_rest) / n``), added in quadrature. When that ``sd`` is
    above ``max_noise_sd`` (or the noised denominator sums to nothing), the status is ``noisy``: too
    little feedback to tell for the noise, and no figure is stated."""
    n = max(0, int(n))
    events = min(max(0, int(events)), n)
    lo, hi = clopper_pearson(events, n)
    sd = 0.0
    noised = noise_var[0] > 0 or noise_var[1] > 0
    if n > 0 and noised:
        p = events / n
        sd = math.sqrt((1 - p) ** 2 * noise_var[0] + p**2 * noise_var[1]) / n
        half = Z95 * sd
        lo = max(0.0, p - math.hypot(p - lo, half))
        hi = min(1.0, p + math.hypot(hi - p, half))
    status: Status
    if noised and (n == 0 or sd > max_noise_sd):
        status = "noisy"
    else:
        status = "none" if n == 0 else "too_little" if n < min_parts else "measured"
    needed = None
    if status != "measured" and limit is not None and limit > 0:
        observed = events / n if n else 0.0
        needed = max(min_parts, parts_needed(limit, observed=observed if observed < limit else 0.0))
    parts_sd = math.sqrt(noise_var[0] + noise_var[1])
    return FieldRate(name, events, n, lo, hi, status, needed, limit, sd, parts_sd)


def measured(
    totals: FieldTotals,
    *,
    min_parts: int = MIN_PARTS,
    escape_limit: float | None = None,
    false_reject_limit: float | None = None,
) -> tuple[FieldRate, FieldRate]:
    """(field escape, field false reject) of ``totals``' feedback."""
    c = totals.counts()
    defects = c["pass_defect"] + c["reject_defect"] + c["unknown_defect"]
    goods = c["pass_ok"] + c["reject_ok"] + c["unknown_ok"]
    v = totals.noise_var
    escape_var = (float(v[1].sum()), float(v[3].sum()))
    fr_var = (float(v[2].sum()), float(v[0].sum()))
    return (
        rate("escape", c["pass_defect"], defects, min_parts=min_parts, limit=escape_limit, noise_var=escape_var),
        rate(
            "false_reject",
            c["reject_ok"] + c["unknown_ok"],
            goods,
            min_parts=min_parts,
            limit=false_reject_limit,
            noise_var=fr_var,
        ),
    )
