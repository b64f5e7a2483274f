"""The tampered update: a genuine, signed v4 deployment (v3's manifest re-issued) whose body is altered
after signing so that it points at the v1 model (an attacker on the path trying to put a weaker model
back). The signature no longer matches the body: every device must refuse it and keep inspecting with
what it runs."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from cloud_registry.errors import RegistryError
from cloud_registry.publisher import reissue, with_chunk_hashes
from edgeline.core.errors import EdgelineError
from edgeline.core.fsutil import write_atomic
from edgeline.core.protocol.delivery import envelope_bytes
from edgeline.core.protocol.manifest import parse_manifest
from edgeline.core.protocol.signing import Envelope
from edgeline.demo.context import DemoContext, Outcome
from edgeline.demo.errors import DemoError
from edgeline.demo.models import MODEL_NAME

#: the version the fleet runs when the tampered update arrives (v3, stage 8), and the one it claims
CURRENT = 3
CLAIMED = CURRENT + 1
DESCRIPTION = f"v{CLAIMED} deployment, signed, then altered to point at the v1 model"


@dataclass(frozen=True)
class Tampered:
    envelope: Envelope
    sequence: int
    devices: tuple[str, ...]


def make_tampered(ctx: DemoContext, devices: tuple[str, ...]) -> Tampered:
    cloud = ctx.need_cloud()
    reg = cloud.registry
    try:
        current = reg.store.get_version(MODEL_NAME, CURRENT)
        v1 = reg.store.get_version(MODEL_NAME, 1)
        v1_artifact = with_chunk_hashes(reg.manifest(v1), reg.artifact(v1)).artifact
        seq = reg.store.next_sequence()
        genuine = reissue(
            with_chunk_hashes(reg.manifest(current), reg.artifact(current)), sequence=seq, devices=devices
        ).to_body()
        genuine["version"] = CLAIMED
        envelope = cloud.publisher.sign(parse_manifest(genuine))
    except (RegistryError, EdgelineError) as exc:
        raise DemoError(f"cannot prepare the v{CLAIMED} deployment: {exc}") from exc
    altered = {**envelope.body, "artifact": v1_artifact.model_dump(mode="json")}
    tampered = envelope.model_copy(update={"body": altered})
    out = ctx.ws.bundle(f"v{CLAIMED}-tampered")
    write_atomic(out / "manifest.json", json.dumps(tampered.model_dump(mode="json"), indent=1).encode())
    return Tampered(tampered, seq, devices)


def push(ctx: DemoContext, t: Tampered) -> None:
    cloud = ctx.need_cloud()
    payload = envelope_bytes(t.envelope)
    try:
        for d in t.devices:
            mid = cloud.link.publish(cloud.topics.device_desired(d), payload, qos=1, retain=True)
            if not cloud.link.wait_published(mid, 10):
                raise DemoError(f"the broker did not acknowledge the tampered update for {d}")
    except DemoError:
        raise
    except EdgelineError as exc:
        raise DemoError(f"cannot publish the tampered update: {exc}") from exc


def tampered_stage(ctx: DemoContext) -> Outcome:
    s = ctx.settings
    cloud = ctx.need_cloud()
    devices = tuple(ctx.devices)
    t = make_tampered(ctx, devices)
    before = {d: p.inspected() for d, p in ctx.devices.items()}
    ctx.mark("tampered")
    push(ctx, t)
    deadline = time.monotonic() + 30
    rejected: dict[str, str] = {}
    while time.monotonic() < deadline and len(rejected) < len(devices):
        ctx.check_devices()
        for e in cloud.events.of_sequences({t.sequence}):
            if e.event in ("rejected", "rolled_back", "committed", "activated"):
                rejected.setdefault(e.device, e.reason if e.event == "rejected" else f"ACCEPTED ({e.event})")
        ctx.detail(f"pushed to {len(devices)} devices; {len(rejected)} answered")
        time.sleep(0.2)
    ctx.sleep(s.tamper_watch_s, "inspection continues while the update is refused")
    after = {d: p.inspected() for d, p in ctx.devices.items()}
    running = {d: cloud.running(d)[0] for d in devices}
    reasons = sorted(set(rejected.values()))
    refused = len(rejected) == len(devices) and all(r and not r.startswith("ACCEPTED") for r in rejected.values())
    still_current = all(v == CURRENT for v in running.values())
    rising = all(after[d] > before[d] for d in devices)
    ctx.tampered = {
        "description": DESCRIPTION,
        "sequence": t.sequence,
        "version": CLAIMED,
        "kept": CURRENT,
        "rejected": refused,
        "reason": ", ".join(reasons) if reasons else "no answer",
        "reasons": rejected,
        "devices": list(devices),
        "running_after": running,
        "frames_during": sum(after[d] - before[d] for d in devices),
        "frames_by_device": {d: after[d] - before[d] for d in devices},
        "manifest": str(ctx.ws.bundle(f"v{CLAIMED}-tampered") / "manifest.json"),
    }
    ok = refused and still_current and rising
    summary = (
        f"refused by {sum(1 for r in rejected.values() if not r.startswith('ACCEPTED'))}/{len(devices)} devices "
        f"({ctx.tampered['reason']}); all still on v{CURRENT}; "
        f"{ctx.tampered['frames_during']:,} frames inspected meanwhile"
    )
    details: dict[str, Any] = dict(ctx.tampered)
    return Outcome(ok, summary, details)
