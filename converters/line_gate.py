"""The gate in the line's terms: escape and false reject on held-out parts, with the evidence for them.

A bundle is refused when

* a rate misses its target (the held-out share is above it), or
* the held-out parts cannot support the claim: the 95% upper bound of the rate is above
  ``evidence_factor`` times the target ("6 defects cannot show an escape rate under 5%"), and the
  message says how many parts would settle it.

With no defect examples at all the false-reject rate is still gated; the escape rate is reported as
unmeasured, never as zero. A good-part model is also refused when it is blind on this part: when it
finds fewer than ``min_planted_found`` of the faint blemishes planted on held-out good parts
(:mod:`converters.blemish`, at a 2% false reject). Measured over six part families (docs/benchmarks.md,
"Fourth final run"), the builds that found 92-99% of them let 0-1 of 300 fresh defects pass at 1%
false reject, those that found 3-49% let 5-98% pass; the 80% default sits between.
``force`` (``--force-unverified``) signs the bundle anyway and records every refusal reason in the
manifest (``unverified``), which ``edgeline registry show`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from converters.errors import ConverterError
from converters.operating_point import Counts, Rate, Target, parts_needed


@dataclass(frozen=True)
class LineTargets:
    """``operate_for``: the rate the threshold is chosen for; the other is gated as a limit.
    ``max_escape`` None: escape is measured and reported, not gated."""

    max_false_reject: float = 0.01
    max_escape: float | None = 0.05
    operate_for: Target = "max_false_reject"
    confidence: float = 0.95
    evidence_factor: float = 5.0
    #: the threshold is chosen for this share of the target, so that new parts stay within it (a
    #: threshold chosen AT the target would miss it on about half of all fresh sets)
    design_margin: float = 0.5
    #: the least share of planted blemishes a good-part model must find (0 turns the check off)
    min_planted_found: float = 0.8

    def __post_init__(self) -> None:
        if not 0.0 < self.max_false_reject < 1.0:
            raise ConverterError("max_false_reject must be a share between 0 and 1 (e.g. 0.01 for 1%)")
        if self.max_escape is not None and not 0.0 < self.max_escape < 1.0:
            raise ConverterError("max_escape must be a share between 0 and 1 (e.g. 0.05 for 5%)")
        if self.operate_for == "max_escape" and self.max_escape is None:
            raise ConverterError("choosing the threshold for escapes needs a max_escape target")
        if not 0.5 <= self.confidence < 1.0:
            raise ConverterError("confidence must be between 0.5 and 1")
        if self.evidence_factor < 1.0:
            raise ConverterError("evidence_factor must be at least 1")
        if not 0.0 < self.design_margin <= 1.0:
            raise ConverterError("design_margin must be in (0, 1]")
        if not 0.0 <= self.min_planted_found <= 1.0:
            raise ConverterError("min_planted_found must be a share between 0 and 1 (e.g. 0.8 for 80%)")

    @property
    def target_value(self) -> float:
        if self.operate_for == "max_escape":
            assert self.max_escape is not None
            return self.max_escape
        return self.max_false_reject

    @property
    def design_value(self) -> float:
        """What the threshold is chosen for: ``design_margin`` times the target."""
        return self.design_margin * self.target_value


@dataclass
class LineGate:
    passed: bool
    counts: Counts
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"passed": self.passed, "failures": self.failures, "notes": self.notes, **self.counts.to_dict()}


def _check_rate(what: str, parts: str, r: Rate, target: float, t: LineTargets) -> list[str]:
    out: list[str] = []
    pct = 100.0 * target
    if r.value is not None and r.value > target + 1e-12:
        out.append(f"{what} {r.text()} misses the {pct:g}% target by {100 * (r.value - target):.2f} pp")
    limit = t.evidence_factor * target
    if r.high > limit:
        event = "escape" if what == "escape rate" else "false reject"
        clean = parts_needed(limit, t.confidence, events=0)
        settle = f"{clean} held-out {parts} with no {event} would settle it"
        if r.events and r.value is not None:
            at_rate = parts_needed(limit, t.confidence, observed=r.value)
            settle += (
                f"; at the observed {100 * r.value:.2f}%, no amount of data would"
                if at_rate >= 1_000_000
                else f"; at the observed {100 * r.value:.2f}%, about {at_rate}"
            )
        out.append(
            f"{r.n} {parts} cannot show {'an' if what[0] in 'aeiou' else 'a'} {what} under {pct:g}%: the 95% upper "
            f"bound is {100 * r.high:.1f}%, above the {100 * limit:.1f}% the gate accepts "
            f"({t.evidence_factor:g} x target); {settle}"
        )
    return out


def judge(counts: Counts, targets: LineTargets) -> LineGate:
    """Gate the held-out counts against the targets (see the module doc)."""
    failures: list[str] = []
    notes: list[str] = []
    if counts.false_reject.n == 0:
        failures.append("no held-out good parts: the false-reject rate cannot be measured")
    else:
        failures += _check_rate(
            "false-reject rate", "good parts", counts.false_reject, targets.max_false_reject, targets
        )
    if counts.escape.n == 0:
        notes.append("escape rate UNMEASURED: the dataset has no defect examples; only the false-reject rate is gated")
    elif targets.max_escape is not None:
        failures += _check_rate("escape rate", "defective parts", counts.escape, targets.max_escape, targets)
    else:
        notes.append(f"escape rate {counts.escape.text()} (no escape target set)")
    return LineGate(not failures, counts, failures, notes)


def planted_check(found: float | None, targets: LineTargets) -> tuple[list[str], list[str]]:
    """(failures, notes) for the share of planted blemishes the chosen good-part model finds
    (None: not measured, e.g. too few good parts or a model size given by hand)."""
    if found is None:
        return [], ["planted-blemish sensitivity not measured (too few good parts, or the model size was given)"]
    text = f"the good-part model finds {100 * found:.1f}% of the faint blemishes planted on held-out good parts"
    if found + 1e-12 < targets.min_planted_found:
        return [
            f"{text}, below the {100 * targets.min_planted_found:g}% the gate asks: it is nearly blind on these "
            "parts and would likely pass real defects (their own surface texture hides small deviations); "
            "labelled defect examples, more uniform lighting or a closer view would tell"
        ], []
    return [], [f"{text} (the gate asks {100 * targets.min_planted_found:g}%)"]
