"""The promotion policy: when a challenger's field evidence is enough to make it the champion.

A challenger is promoted only when (1) at least ``min_lines`` lines sent evidence of it, (2) every
such line compared at least ``min_frames`` frames, (3) the verdict agreement of every line is at
least ``min_agreement``, and (4) no line saw the challenger drift against its own reference in
``max_drift_run`` windows in a row (sustained drift; a lone flagged window is allowed). Pure.

Noised evidence (windows under the device's Laplace noise, ``shadow.noise_scale``): the counts are
signed sums, the agreement an estimate. Condition (3) then holds only when the agreement is at least
``min_agreement`` even at the low end of the range the noise leaves (:attr:`Evidence.agreement_low`,
the rate minus 1.96 noise standard deviations): noise can delay a promotion, it does not make one.
Exact evidence is judged on the rate itself, as before. Frames compared (1) are the signed sum.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cloud_registry.errors import RegistryError
from cloud_registry.telemetry.shadow_report import ShadowReport


@dataclass(frozen=True)
class PromotionPolicy:
    min_frames: int = 500
    min_agreement: float = 0.95
    max_drift_run: int = 3
    min_lines: int = 1

    def __post_init__(self) -> None:
        if self.min_frames < 1:
            raise RegistryError("the promotion policy needs min_frames >= 1")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise RegistryError("the promotion policy needs min_agreement in [0, 1]")
        if self.max_drift_run < 1:
            raise RegistryError("the promotion policy needs max_drift_run >= 1")
        if self.min_lines < 1:
            raise RegistryError("the promotion policy needs min_lines >= 1")

    def describe(self) -> str:
        return (
            f"at least {self.min_lines} line(s) with evidence; per line at least {self.min_frames} frames compared, "
            f"verdict agreement >= {self.min_agreement:.1%} (on noised evidence: its lower 95% bound under "
            f"the noise), and the challenger's drift flagged in fewer than {self.max_drift_run} windows in a row"
        )


@dataclass
class Decision:
    policy: PromotionPolicy
    accepted: bool
    #: why not, one sentence per failed condition (empty when accepted)
    reasons: list[str] = field(default_factory=list)
    #: line -> the conditions it failed
    failing_lines: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": asdict(self.policy),
            "accepted": self.accepted,
            "reasons": self.reasons,
            "failing_lines": self.failing_lines,
        }


def judge(report: ShadowReport, policy: PromotionPolicy) -> Decision:
    reasons: list[str] = []
    failing: dict[str, list[str]] = {}
    if len(report.lines) < policy.min_lines:
        reasons.append(f"evidence from {len(report.lines)} line(s), the policy needs {policy.min_lines}")
    for line, ev in sorted(report.lines.items()):
        why = []
        if ev.compared < policy.min_frames:
            why.append(f"{ev.compared} frames compared < {policy.min_frames}")
        rate, low, sd = ev.agreement_rate, ev.agreement_low, ev.agreement_noise_sd
        if rate is None or low is None:
            why.append(f"agreement 0.0% < {policy.min_agreement:.1%}")
        elif sd > 0 and low < policy.min_agreement:
            why.append(
                f"agreement {rate:.1%} (noised: noise sd {100 * sd:.2f} pp, lower bound {low:.1%}) "
                f"< {policy.min_agreement:.1%}"
            )
        elif rate < policy.min_agreement:
            why.append(f"agreement {rate:.1%} < {policy.min_agreement:.1%}")
        if ev.drift_run >= policy.max_drift_run:
            why.append(
                f"challenger drift flagged in {ev.drift_run} windows in a row (limit {policy.max_drift_run - 1})"
            )
        if why:
            failing[line] = why
    if failing:
        reasons.append(f"{len(failing)} of {len(report.lines)} line(s) below the policy")
    return Decision(policy, not reasons, reasons, failing)
