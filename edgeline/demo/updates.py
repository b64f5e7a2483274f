"""The second half of the story: retrain v2 from the drift evidence, roll it out (canary on the drifted
line, then everyone), and keep inspecting on v2; then v3, the inspection model, meets a defect kind
that no training image shows (:mod:`.newkind`)."""

from __future__ import annotations

import time
from typing import Any

from cloud_registry.errors import RegistryError
from edgeline.demo import newkind
from edgeline.demo.context import DemoContext, Outcome
from edgeline.demo.errors import DemoError
from edgeline.demo.models import MODEL_NAME, model_facts
from edgeline.demo.retrain import retrain
from edgeline.demo.rollouts import deploy
from edgeline.demo.scoring import load_truth, score_device


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


def _rate(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("value", "low", "high", "events", "n")
    return {k: (round(r[k], 4) if isinstance(r.get(k), float) else r.get(k)) for k in keys}


def _wait_verdicts(ctx: DemoContext, line: str, until: float, timeout: float = 5.0) -> None:
    """The line's agent has written its verdicts up to ``until`` (it reads the stream live, so only
    the frames still in its queue are missing)."""
    proc = ctx.devices[line]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = max((float(r.get("ts", 0)) for r in proc.records() if r.get("type") == "verdict"), default=0.0)
        if last >= until:
            return
        ctx.detail(f"waiting for {line}'s last verdicts")
        time.sleep(0.2)


def new_kind_stage(ctx: DemoContext) -> Outcome:
    """Register and roll out v3, then show a defect kind the training set lacks on one line."""
    s = ctx.settings
    cloud, camera = ctx.need_cloud(), ctx.need_camera()
    line, kind = s.new_kind_device, s.new_kind
    if ctx.v3_build is None:
        raise DemoError("v3 was never started (it builds in the background after v1)")
    waited = time.monotonic()
    ctx.v3 = v3 = ctx.v3_build.wait(s.v3_build_timeout_s, ctx.detail, cloud.trust)
    waited = round(time.monotonic() - waited, 2)
    try:
        mv = cloud.register(v3.bundle_dir, "v3: inspection model (good parts + known defect kinds)", stage="staging")
    except RegistryError as exc:
        raise DemoError(f"registering v3 failed: {exc}") from exc
    rollout = deploy(ctx, 3, list(ctx.devices))
    if not rollout.ok:
        return Outcome(False, f"v3 rollout: {rollout.summary}", {"rollout": rollout.details})
    ctx.mark("new_kind_start")
    shown = time.monotonic()
    camera.set_parts(line, kind, s.new_kind_share)
    try:
        # meanwhile, v2 (and v3) offline on rendered parts of the new kind, through the agents' code path
        ctx.detail(f"{line} shows {kind} parts; v2 and v3 offline on {s.new_kind_offline} rendered ones")
        frames = newkind.render_parts(kind, s.new_kind_offline, seed=s.seed * 1000 + 99)
        offline = {
            "v2": newkind.offline_routes(ctx.ws.bundle("v2"), cloud.trust, frames),
            "v3": newkind.offline_routes(v3.bundle_dir, cloud.trust, frames),
        }
        del frames
        left = s.new_kind_s - (time.monotonic() - shown)
        ctx.sleep(left, f"{line} shows {kind} parts ({s.new_kind_share:.0%} of its parts)")
    finally:
        camera.set_parts(line, None)
    end = ctx.t0 + ctx.mark("new_kind_end")
    _wait_verdicts(ctx, line, end)
    proc = ctx.devices[line]
    truth = load_truth(ctx.ws.root / "truth" / f"{line}.csv")
    drifted = (s.drift_brightness, s.drift_contrast)
    scored, _ = score_device(line, proc.records(), truth, drifted)
    on_v3 = [f for f in scored if f.version == 3]
    live = newkind.live_routes(f for f in on_v3 if f.truth == kind)
    good = newkind.live_routes(f for f in on_v3 if f.truth == "ok")
    known = newkind.live_routes(f for f in on_v3 if f.truth not in ("ok", kind))
    # good parts on every line under v3 (the darkened one too: v3 serves the whole fleet)
    fleet_good: dict[str, Any] = {}
    for d, p in ctx.devices.items():
        if d == line:
            got = scored
        else:
            got, _ = score_device(d, p.records(), load_truth(ctx.ws.root / "truth" / f"{d}.csv"), drifted)
        fleet_good[d] = {
            "lighting": "darkened" if d == s.drifted_device else "normal",
            **newkind.live_routes(f for f in got if f.version == 3 and f.truth == "ok"),
        }
    report = v3.report
    details: dict[str, Any] = {
        "kind": kind,
        "line": line,
        "in_training": False,
        "share_shown": s.new_kind_share,
        "seconds_shown": s.new_kind_s,
        "v3": {
            **model_facts(v3.manifest),
            "model_kind": v3.kind,
            "seconds_to_build": ctx.v3_build.seconds,
            "labels": list(v3.manifest.labels),
            "registered": {"name": mv.name, "version": mv.version, "stage": "staging"},
            "build": {
                "false_reject": _rate(report["false_reject"]),
                "escape": _rate(report["escape"]),
                "threshold": v3.metrics.get("threshold"),
                "targets": {"max_false_reject": s.v3_max_false_reject, "max_escape": s.v3_max_escape},
                "folds": s.v3_folds,
                "seconds": ctx.v3_build.seconds,
                "cpu_s": ctx.v3_build.cpu_s,
                "waited_s": waited,
            },
        },
        "live": live,
        "good_parts": good,
        "known_defects": known,
        "good_parts_by_line": fleet_good,
        "offline": offline,
        "rollout": rollout.details,
        "rule": (
            f"at least {s.new_kind_min_caught:.0%} of at least {s.new_kind_min_frames} {kind} parts rejected or sent "
            f"to review by v3 on {line}, and at most {s.new_kind_max_good_reject:.0%} of its good parts rejected"
        ),
    }
    ctx.new_kind = details
    enough = live["frames"] >= s.new_kind_min_frames and good["frames"] > 0
    ok = enough and live["caught"] >= s.new_kind_min_caught and (good["rejected"] or 0.0) <= s.new_kind_max_good_reject
    if not enough:
        summary = f"too few scored {kind} parts on {line} ({live['frames']}; need {s.new_kind_min_frames})"
    else:
        fr, esc = details["v3"]["build"]["false_reject"], details["v3"]["build"]["escape"]
        summary = (
            f"v3 ({v3.kind}; out of fold: false reject {fr['value']:.1%}, escape {esc['value']:.1%}) rolled out, "
            f"canary {rollout.details['waves'][0][0]} first; {live['frames']} {kind} parts on {line}, a kind no "
            f"training image shows: v3 rejected {live['reject']}, sent {live['review']} to review "
            f"({live['caught']:.0%}); v2 on {offline['v2']['frames']} such parts offline: "
            f"{offline['v2']['caught']:.0%}; "
            f"v3 rejected {good['rejected']:.0%} of the line's {good['frames']} good parts"
        )
    return Outcome(ok, summary, details)
