"""A rollout as a demo stage: wait for the fleet, canary first, then everyone; and its record."""

from __future__ import annotations

import time
from typing import Any

from cloud_registry import rollout as ro
from cloud_registry.errors import RegistryError
from edgeline.demo.context import DemoContext, Outcome
from edgeline.demo.errors import DemoError
from edgeline.demo.models import MODEL_NAME


def wait_online(ctx: DemoContext, timeout: float = 60.0) -> None:
    cloud = ctx.need_cloud()
    ids = list(ctx.devices)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ctx.check_devices()
        online = cloud.online(ids)
        if len(online) == len(ids):
            return
        ctx.detail(f"waiting for the devices to announce themselves: {len(online)}/{len(ids)} online")
        time.sleep(0.2)
    missing = sorted(set(ids) - set(cloud.online(ids)))
    raise DemoError(f"devices {', '.join(missing)} did not come online within {timeout:.0f}s")


def _describe(r: ro.Rollout) -> str:
    done = r.count(ro.DeviceStatus.COMMITTED)
    moving = [d for d, t in r.devices.items() if t.status in (ro.DeviceStatus.SENT, ro.DeviceStatus.UPDATING)]
    wave = "canary" if r.plan.canary and r.wave == 0 else f"wave {r.wave + 1}/{len(r.plan.waves)}"
    return f"{wave}: {done}/{len(r.devices)} committed" + (f", updating {', '.join(moving)}" if moving else "")


def deploy(ctx: DemoContext, version: int, order: list[str]) -> Outcome:
    """Roll ``version`` out to ``order``: the first device as the canary, then the rest."""
    cloud = ctx.need_cloud()
    s = ctx.settings
    wait_online(ctx)
    started = time.time()
    try:
        r = cloud.rollout(
            f"{MODEL_NAME}@{version}",
            order,
            canary=1,
            timeout_s=s.rollout_timeout_s,
            on_update=lambda r: ctx.detail(_describe(r)),
        )
    except RegistryError as exc:
        raise DemoError(f"rollout of v{version} failed to start: {exc}") from exc
    running = {d: cloud.running(d)[0] for d in order}
    record: dict[str, Any] = {
        "id": r.plan.id,
        "model": MODEL_NAME,
        "version": version,
        "waves": [list(w) for w in r.plan.waves],
        "state": r.status.value,
        "reason": r.reason,
        "devices": {
            d: {"status": t.status.value, "reason": t.reason, "running": running[d]} for d, t in r.devices.items()
        },
        "sequences": sorted({t.sequence for t in r.devices.values() if t.sequence}),
        "started": round(started - ctx.t0, 2),
        "seconds": round(time.time() - started, 2),
    }
    ctx.rollouts.append(record)
    ok = r.status == ro.RolloutStatus.COMPLETED and all(v == version for v in running.values())
    if ok:
        cloud.registry.promote(MODEL_NAME, version, "production")
    waves = " → ".join("+".join(w) for w in r.plan.waves)
    summary = (
        f"v{version} canary {order[0]}, then the rest ({waves}): {r.status.value}, "
        f"{sum(v == version for v in running.values())}/{len(order)} devices run v{version}"
    )
    return Outcome(ok, summary, record)
