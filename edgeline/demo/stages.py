"""The first half of the story: set up, build v1, deploy it, inspect, drift, and detect the drift.

Each stage takes the :class:`DemoContext`, does its work against the real parts, and returns an
:class:`Outcome` that says whether it did what the story needs, with the figures that show it.
"""

from __future__ import annotations

import time
from typing import Any

from cloud_registry.errors import RegistryError
from edgeline.demo.broker import free_port, start_embedded_broker
from edgeline.demo.cloud import DemoCloud
from edgeline.demo.context import DemoContext, Outcome
from edgeline.demo.devices import DeviceProcess, DeviceSpec
from edgeline.demo.errors import DemoError
from edgeline.demo.line_operator import OperatorLine, StoryOperator
from edgeline.demo.models import MODEL_NAME, build_v1, make_datasets, model_facts
from edgeline.demo.newkind import V3Build
from edgeline.demo.processes import CameraProcess
from edgeline.demo.rollouts import deploy
from edgeline.demo.telemetry_view import drift_ratio, line_view

FLEET = "demo"


def setup(ctx: DemoContext) -> Outcome:
    s, ws = ctx.settings, ctx.ws
    ctx.detail("keys: a root key, a signing key it certifies, the devices' trust store")
    ctx.signer, ctx.trust = ws.init_secrets()
    ctx.detail("starting the broker")
    ctx.broker = broker = start_embedded_broker(ws.root, prefer=s.broker)
    kind = "mosquitto" if broker.protocol == "5" else "amqtt (in-process, MQTT 3.1.1)"
    ctx.cloud = DemoCloud(
        ws.root, port=broker.port, protocol=broker.protocol, fleet=FLEET, signer=ctx.signer, trust=ctx.trust, t0=ctx.t0
    )
    ctx.cloud.start()
    ctx.detail("starting the camera simulator")
    ctx.camera = camera = CameraProcess(ws.root, s.device_ids, fps=s.fps, seed=s.seed)
    camera.start()
    camera.wait_ready()
    for device_id in s.device_ids:
        ctx.detail(f"starting agent {device_id}")
        spec = DeviceSpec(
            device_id=device_id,
            camera_url=camera.url(device_id),
            workdir=ws.device(device_id),
            broker_port=broker.port,
            broker_protocol=broker.protocol,
            fleet=FLEET,
            trust_file=ws.trust_file,
            pseudonym_key=ws.pseudonym_key,
            window_s=s.window_s,
            window_frames=s.window_frames,
            min_frames=min(20, s.window_frames),
            trial_frames=s.trial_frames,
            api_port=free_port(),
        )
        dev = DeviceProcess(spec)
        dev.start()
        ctx.devices[device_id] = dev
    lines = [
        OperatorLine(d, p.spec.verdicts_path, camera.truth_dir / f"{d}.csv", p.spec.api_port or 0, s.feedback_share(d))
        for d, p in ctx.devices.items()
    ]
    ctx.operator = StoryOperator(lines, s.seed)
    ctx.operator.start()
    details = {
        "broker": {"kind": kind, "port": broker.port, "protocol": broker.protocol},
        "camera": {"port": camera.port, "fps": s.fps, "lines": s.device_ids},
        "devices": {d: {"pid": p.pid, "config": str(p.spec.config_path)} for d, p in ctx.devices.items()},
        "workdir": str(ws.root),
        "operator": {d: s.feedback_share(d) for d in ctx.devices},
    }
    shares = ", ".join(f"{d} {100 * s.feedback_share(d):.0f}%" for d in ctx.devices)
    return Outcome(
        True,
        f"{kind} on port {broker.port}; camera on port {camera.port}; {s.devices} agent processes; "
        f"a simulated operator checks parts ({shares})",
        details,
    )


def build(ctx: DemoContext) -> Outcome:
    s = ctx.settings
    counts = make_datasets(ctx.ws, s, ctx.detail)
    # v3 (stage 8) needs only the dataset: it builds in a child process, at a lower priority, while
    # the story goes on (it uses the cores the waiting stages leave idle)
    ctx.v3_build = V3Build(ctx.ws, s)
    ctx.v3_build.start()
    ctx.v1 = result = build_v1(ctx.ws, s, ctx.detail)
    try:
        mv = ctx.need_cloud().register(result.bundle_dir, "v1: trained on the normal line", stage="staging")
    except RegistryError as exc:
        raise DemoError(f"registering v1 failed: {exc}") from exc
    facts = model_facts(result.manifest)
    details = {**facts, "dataset": counts, "registered": {"name": mv.name, "version": mv.version, "stage": "staging"}}
    summary = (
        f"{sum(counts.values())} images → {facts['quantization']} ONNX, {facts['size_bytes'] / 1024:.0f} KiB, "
        f"held-out accuracy {facts['accuracy_holdout']:.1%}; registered {mv.name} v{mv.version}"
    )
    return Outcome(True, summary, details)


def deploy_v1(ctx: DemoContext) -> Outcome:
    return deploy(ctx, 1, list(ctx.devices))


def _windows(ctx: DemoContext, since: float | None = None) -> list[Any]:
    return [sw.window for sw in ctx.need_cloud().telemetry.windows(MODEL_NAME, since=since)]


def inspect(ctx: DemoContext) -> Outcome:
    before = {d: p.inspected() for d, p in ctx.devices.items()}
    start = time.time()
    ctx.sleep(ctx.settings.clean_s, "inspecting on v1, normal lighting")
    # every line must have reported at least one telemetry window by now
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        lines = {w.group for w in _windows(ctx)}
        if set(ctx.devices) <= lines:
            break
        ctx.detail(f"waiting for the first telemetry window of {', '.join(sorted(set(ctx.devices) - lines))}")
        time.sleep(0.3)
    inspected = {d: p.inspected() - before[d] for d, p in ctx.devices.items()}
    windows = _windows(ctx)
    per_line = {d: sum(1 for w in windows if w.group == d) for d in ctx.devices}
    ok = all(n > 0 for n in inspected.values()) and all(n > 0 for n in per_line.values())
    summary = (
        f"{sum(inspected.values()):,} frames inspected on the devices in {time.time() - start:.0f}s; "
        f"{len(windows)} telemetry windows arrived (aggregates only)"
    )
    return Outcome(ok, summary, {"inspected": inspected, "windows": per_line})


def drift(ctx: DemoContext) -> Outcome:
    s = ctx.settings
    line = s.drifted_device
    camera = ctx.need_camera()
    ctx.mark("drift_start")
    camera.set_lighting(line, s.drift_brightness, s.drift_contrast, s.drift_ramp_s)
    ctx.sleep(s.drift_ramp_s + 0.3, f"the lighting on {line} dims")
    state = camera.status()["lines"][line]
    ctx.mark("drift_full")
    ok = abs(state["brightness"] - s.drift_brightness) < 0.5 and abs(state["contrast"] - s.drift_contrast) < 0.005
    details = {"line": line, "brightness": s.drift_brightness, "contrast": s.drift_contrast, "ramp_s": s.drift_ramp_s}
    summary = (
        f"{line}: brightness {s.drift_brightness:+.0f} grey levels, contrast x{s.drift_contrast} "
        f"over {s.drift_ramp_s:.0f}s"
    )
    return Outcome(ok, summary, {**details, "camera": state})


def detect(ctx: DemoContext) -> Outcome:
    s = ctx.settings
    line = s.drifted_device
    since = ctx.t0 + ctx.marks["drift_start"]
    deadline = time.monotonic() + s.detect_timeout_s
    views = {}
    while True:
        ctx.check_devices()
        windows = _windows(ctx)
        views = {d: line_view(d, windows) for d in ctx.devices}
        target = views[line]
        if any(t0 >= since for t0, _ in target.episodes):
            break
        if time.monotonic() > deadline:
            break
        recent = [w for w in target.windows if w.start >= since]
        flagged = sum(1 for w in recent if drift_ratio(w) > 1)
        ctx.detail(f"{line}: {len(recent)} windows since the lighting changed, {flagged} drifted")
        time.sleep(0.3)
    detected_at = next((t0 for t0, _ in views[line].episodes if t0 >= since), None)
    others = [d for d, v in views.items() if d != line and v.alarm]
    ok = detected_at is not None and not others
    details: dict[str, Any] = {
        "line": line,
        "lines": {
            d: {
                "alarm": v.alarm,
                "windows": len(v.windows),
                "max_score": round(max((drift_ratio(w) for w in v.windows), default=0.0), 3),
            }
            for d, v in views.items()
        },
        "false_alarms": others,
    }
    if detected_at is not None:
        details["detected_after_s"] = round(detected_at - (ctx.t0 + ctx.marks["drift_full"]), 2)
        ctx.marks["drift_detected"] = round(detected_at - ctx.t0, 2)
        summary = (
            f"sustained drift on {line} {details['detected_after_s']:.1f}s after the lighting settled; "
            f"{'no alarm' if not others else 'ALSO alarms'} on {', '.join(others or [d for d in views if d != line])}"
        )
    else:
        summary = f"telemetry did not show sustained drift on {line} within {s.detect_timeout_s:.0f}s"
    return Outcome(ok, summary, details)
