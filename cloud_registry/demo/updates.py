"""The second half of the story: retrain v2 from the drift evidence, roll it out (canary on the drifted
line, then everyone), and keep inspecting on v2."""

from __future__ import annotations

import time

from cloud_registry.demo.context import DemoContext, Outcome
from cloud_registry.demo.errors import DemoError
from cloud_registry.demo.models import MODEL_NAME, model_facts
from cloud_registry.demo.retrain import retrain
from cloud_registry.demo.rollouts import deploy


def _wait_evidence(ctx: DemoContext, line: str, since: float, timeout: float = 60.0) -> None:
    """Enough windows of the settled drift for a good estimate of the field's lighting."""
    need = ctx.settings.evidence_windows
    deadline = time.monotonic() + timeout
    while True:
        ctx.check_devices()
        have = sum(
            1
            for sw in ctx.need_cloud().telemetry.windows(MODEL_NAME, version=1, group=line)
            if sw.window.start >= since
        )
        if have >= need:
            return
        if time.monotonic() > deadline:
            raise DemoError(f"only {have} telemetry windows of {line} since its lighting settled; need {need}")
        ctx.detail(f"collecting drift evidence: {have}/{need} windows of {line} since its lighting settled")
        time.sleep(0.3)


def retrain_stage(ctx: DemoContext) -> Outcome:
    s = ctx.settings
    line = s.drifted_device
    since = ctx.t0 + ctx.marks.get("drift_full", ctx.marks["drift_start"])
    _wait_evidence(ctx, line, since)
    r = retrain(ctx.need_cloud(), ctx.ws, s, parent=1, since=since, report=ctx.detail)
    ctx.v2 = r
    ev = r.result.plan.shift.evidence
    gate = r.gate(s.min_gain, s.max_normal_drop_pp)
    mv = r.registered
    details = {
        **model_facts(r.manifest),
        "evidence": {
            "windows": ev.get("windows"),
            "windows_total": ev.get("windows_total"),
            "frames": ev.get("frames"),
            "brightness": ev.get("brightness"),
            "contrast": ev.get("contrast"),
            "psi": ev.get("psi"),
        },
        "estimated_lighting": {"brightness": r.lighting[0], "contrast": r.lighting[1]},
        "actual_lighting": {"brightness": s.drift_brightness, "contrast": s.drift_contrast},
        "gate": gate,
        "registered": {"name": mv.name, "version": mv.version, "parent": mv.parent, "stage": "staging"},
    }
    summary = (
        f"field lighting read from {ev.get('windows')} drifted windows: brightness {r.lighting[0]:+.0f}, "
        f"contrast x{r.lighting[1]:.2f} (actual {s.drift_brightness:+.0f}, x{s.drift_contrast}); "
        f"gate on held-out images under that lighting: v1 {gate['v1_field']:.0%} → v2 {gate['v2_field']:.0%}; "
        f"registered v{mv.version} (parent v{mv.parent})"
    )
    return Outcome(True, summary, details)


def deploy_v2(ctx: DemoContext) -> Outcome:
    line = ctx.settings.drifted_device
    order = [line] + [d for d in ctx.devices if d != line]
    ctx.mark("v2_rollout")
    out = deploy(ctx, 2, order)
    ctx.mark("v2_everywhere")
    if out.ok:
        ctx.sleep(ctx.settings.after_v2_s, "inspecting on v2")
    return out
