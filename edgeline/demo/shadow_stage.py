"""The demo's shadow stage: v2 runs in the shadow of v1 on the drifted line (the same frames, its
verdicts never acted on) before it is promoted; the telemetry windows' comparison counts become the
agreement evidence of ``edgeline shadow report``, judged against the promotion policy."""

from __future__ import annotations

import time
from typing import Any

from cloud_registry import shadow_deploy
from cloud_registry.errors import RegistryError
from cloud_registry.telemetry.shadow_policy import PromotionPolicy, judge
from cloud_registry.telemetry.shadow_report import build_report
from edgeline.demo.context import DemoContext, Outcome
from edgeline.demo.errors import DemoError
from edgeline.demo.models import MODEL_NAME
from edgeline.demo.rollouts import wait_online

#: how long v2 watches in the shadow, in telemetry windows of the line (at its camera rate)
SHADOW_WINDOWS = 3


def shadow_v2(ctx: DemoContext) -> Outcome:
    cloud, s = ctx.need_cloud(), ctx.settings
    line = s.drifted_device
    wait_online(ctx)
    try:
        plan = shadow_deploy.deploy(cloud.registry, cloud.publisher, cloud.fleet, f"{MODEL_NAME}@2", f"device:{line}")
    except RegistryError as exc:
        raise DemoError(f"the shadow deployment of v2 failed to start: {exc}") from exc
    answer = shadow_deploy.wait(cloud.fleet, dict(plan.sequences), plan.model.sha256, s.rollout_timeout_s)[line]
    if answer.status != "running":
        return Outcome(False, f"v2 as a shadow on {line}: {answer.status} {answer.reason} {answer.detail}".strip())
    ctx.mark("v2_shadow")
    ctx.sleep(SHADOW_WINDOWS * s.window_frames / s.fps, f"v2 in the shadow of v1 on {line}")
    report = _evidence(ctx, line)
    shadow_deploy.stop(cloud.publisher, cloud.fleet, f"device:{line}")
    total = report.total()
    policy = PromotionPolicy(min_frames=max(1, s.window_frames), min_agreement=0.9, min_lines=1)
    decision = judge(report, policy)
    pairs = ", ".join(f"{a}->{b} {n}" for a, b, n in total.top_disagreements(3)) or "none"
    rate = total.agreement_rate
    summary = (
        f"v2 beside v1 on {line}: {total.compared} parts compared in {total.windows} windows, "
        f"agreement {0.0 if rate is None else rate:.0%} (disagreements {pairs}); "
        + ("meets" if decision.accepted else "below")
        + " the promotion policy (v1 is the one the drift hurts)"
    )
    details: dict[str, Any] = {
        "line": line,
        "sequence": plan.sequences[line],
        "policy": policy.describe(),
        "decision": decision.to_dict(),
        "evidence": report.to_dict(),
    }
    return Outcome(total.compared > 0, summary, details)


def _evidence(ctx: DemoContext, line: str, timeout_s: float = 20.0) -> Any:
    """The report once the line's windows with the comparison reached the ingest."""
    cloud = ctx.need_cloud()
    deadline = time.monotonic() + timeout_s
    while True:
        windows = [sw.window for sw in cloud.telemetry.windows(MODEL_NAME)]
        report = build_report(windows, MODEL_NAME, 2)
        if report.total().windows >= SHADOW_WINDOWS - 1 or time.monotonic() >= deadline:
            return report
        ctx.detail(f"waiting for {line}'s windows with the comparison ({report.total().windows} so far)")
        time.sleep(0.5)
