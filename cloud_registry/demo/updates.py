"""The second half of the story: retrain v2 from the drift evidence, roll it out (canary on the drifted
line, then everyone), and keep inspecting on v2."""

from __future__ import annotations

import time

from cloud_registry.demo.context import DemoContext, Outcome
from cloud_registry.demo.errors import DemoError
from cloud_registry.demo.models import MODEL_NAME, model_facts
from cloud_registry.demo.retrain import retrain
from cloud_registry.demo.rollouts import deploy
from cloud_registry.errors import RegistryError


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
    if ctx.holdout is None:
        raise DemoError("no held-out data (v1 was not built)")
    line = s.drifted_device
    since = ctx.t0 + ctx.marks.get("drift_full", ctx.marks["drift_start"])
    _wait_evidence(ctx, line, since)
    r = retrain(ctx.need_cloud(), ctx.ws, s, ctx.holdout, line=line, parent=1, since=since, report=ctx.detail)
    ctx.v2 = r
    try:
        mv = ctx.need_cloud().register(r.result.bundle_dir, f"v2: retrained from drift on {line}", stage="staging")
    except RegistryError as exc:
        raise DemoError(f"registering v2 failed: {exc}") from exc
    ev = r.shift.evidence
    details = {
        **model_facts(r.result),
        "evidence": {
            "line": line,
            "windows": ev["windows"],
            "frames": ev["frames"],
            "brightness": ev["brightness"],
            "contrast": ev["contrast"],
        },
        "estimated_lighting": {"brightness": r.lighting[0], "contrast": r.lighting[1]},
        "actual_lighting": {"brightness": s.drift_brightness, "contrast": s.drift_contrast},
        "augmentation": r.augment,
        "gate": r.gate,
        "registered": {"name": mv.name, "version": mv.version, "parent": mv.parent, "stage": "staging"},
    }
    g = r.gate
    summary = (
        f"field lighting read from {ev['windows']} windows: brightness {r.lighting[0]:+.0f}, "
        f"contrast x{r.lighting[1]:.2f} "
        f"(actual {s.drift_brightness:+.0f}, x{s.drift_contrast}); gate on field-like images v1 {g['v1_field']:.0%} → "
        f"v2 {g['v2_field']:.0%}; registered v{mv.version} (parent v{mv.parent})"
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
