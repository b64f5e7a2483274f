"""Shadow deployments: a challenger delivered to devices beside the model they serve.

``deploy`` re-issues the registered manifest per device with role ``shadow`` and a fresh sequence,
and publishes the artifact and the signed shadow deployments (retained) on the devices' shadow
topics; the devices' serving slots, their desired topics and any rollout are not touched. ``stop``
clears the shadow topics. ``wait`` reads the devices' retained states until each says its shadow
slot runs the challenger, refused it (with the reason), or stopped, within a timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from cloud_registry.errors import RegistryError, RolloutError
from cloud_registry.fleet import FleetWatcher
from cloud_registry.publisher import Publisher, reissue, with_chunk_hashes
from cloud_registry.registry import Registry
from cloud_registry.store.base import ModelVersion
from edgeline.core.errors import EdgelineError
from edgeline.core.protocol.delivery import ShadowSlotState
from edgeline.core.protocol.manifest import Manifest, parse_manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShadowPlan:
    model: ModelVersion
    #: device id -> the sequence of its shadow deployment
    sequences: dict[str, int]


@dataclass(frozen=True)
class Outcome:
    device: str
    #: ``running``, ``refused``, ``stopped`` or ``waiting`` (no answer within the timeout)
    status: str
    reason: str = ""
    detail: str = ""


def as_shadow(manifest: Manifest) -> Manifest:
    """The same deployment, for the shadow slot only (the serving slots refuse it)."""
    body = manifest.to_body()
    body["role"] = "shadow"
    try:
        return parse_manifest(body)
    except EdgelineError as exc:
        raise RegistryError(f"cannot make a shadow deployment of {manifest.name} v{manifest.version}: {exc}") from exc


def targets(fleet: FleetWatcher, target: str) -> list[str]:
    try:
        devices = fleet.view.resolve_target(target)
    except ValueError as exc:
        raise RolloutError(str(exc)) from exc
    if not devices:
        raise RolloutError(f"no device matches {target} (devices announce their groups when they connect)")
    return devices


def deploy(reg: Registry, publisher: Publisher, fleet: FleetWatcher, ref: str, target: str) -> ShadowPlan:
    """Publish REF as a shadow deployment to every device of TARGET."""
    mv = reg.resolve(ref)
    devices = targets(fleet, target)
    data = reg.artifact(mv)
    base = with_chunk_hashes(reg.manifest(mv), data)
    batch = [(d, as_shadow(reissue(base, sequence=reg.store.next_sequence(), devices=(d,)))) for d in devices]
    publisher.publish_shadow(base, data, batch)
    log.info("shadow deployment of %s v%d to %d devices", mv.name, mv.version, len(devices))
    return ShadowPlan(mv, {d: man.sequence for d, man in batch})


def stop(publisher: Publisher, fleet: FleetWatcher, target: str) -> list[str]:
    """Clear the shadow deployment of every device of TARGET (their challengers stop)."""
    devices = targets(fleet, target)
    publisher.clear_shadow(devices)
    return devices


def judge(state: ShadowSlotState | None, sequence: int | None, sha256: str | None) -> Outcome | None:
    """What a device's shadow slot says about deployment ``sequence`` (None: ``stop`` was asked),
    or None while undecided."""
    if state is None:
        return None
    if sequence is None:
        return Outcome("", "stopped") if state.state == "stopped" else None
    if state.refused_sequence == sequence or (state.state == "refused" and state.sequence == sequence):
        return Outcome("", "refused", state.reason, state.detail)
    if state.state == "running" and state.sequence == sequence and state.model and state.model.sha256 == sha256:
        return Outcome("", "running")
    return None


def wait(
    fleet: FleetWatcher,
    plan: dict[str, int | None],
    sha256: str | None,
    timeout_s: float,
    *,
    on_update: Callable[[dict[str, Outcome]], None] | None = None,
) -> dict[str, Outcome]:
    """Until every device of ``plan`` (device -> sequence, None for a stop) has answered, or the
    timeout; devices that did not answer are ``waiting``."""
    deadline = time.monotonic() + timeout_s
    done: dict[str, Outcome] = {}
    while True:
        for d, seq in plan.items():
            if d in done:
                continue
            st = fleet.view.state(d)
            got = judge(st.shadow if st is not None else None, seq, sha256)
            if got is not None:
                done[d] = Outcome(d, got.status, got.reason, got.detail)
                if on_update is not None:
                    on_update(done)
        if len(done) == len(plan) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    return {d: done.get(d, Outcome(d, "waiting")) for d in plan}
