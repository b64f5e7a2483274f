"""Drive a rollout: feed device events and states to the pure engine, execute its actions (sign and
publish desired states), persist it after every change, and obey pause/resume/abort requests left in
the store by another process (``edgeline rollout pause ID``).

The runner can stop and start again at any time: the rollout lives in the store, the deployments
live (retained) on the broker, and on restart the retained device states tell it what happened
while it was away.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from cloud_registry import rollout as ro
from cloud_registry.errors import NotFound, RegistryError, RolloutError
from cloud_registry.fleet import FleetWatcher
from cloud_registry.publisher import Publisher, reissue, with_chunk_hashes
from cloud_registry.registry import Registry
from cloud_registry.store import RolloutRow
from edgeline.core.errors import EdgelineError, TransportError
from edgeline.core.protocol.delivery import DeviceEvent, DeviceState

log = logging.getLogger(__name__)

#: a runner that has not touched its rollout for this long is considered gone
RUNNER_ALIVE_S = 3.0
CONTROLS = ("pause", "resume", "abort", "rollback")


def observations(kind: str, device_id: str, msg: Any) -> list[ro.Observation]:
    """Translate a device event or state message into engine observations."""
    if kind == "event" and isinstance(msg, DeviceEvent):
        sha = msg.model.sha256 if msg.model else None
        return [ro.Observation(device_id, msg.kind.value, msg.sequence, sha, msg.reason)]
    if kind == "state" and isinstance(msg, DeviceState):
        out = []
        if msg.model is not None and msg.updater.value in ("COMMITTED", "IDLE", "ROLLED_BACK"):
            out.append(ro.Observation(device_id, "state", msg.sequence, msg.model.sha256))
        if msg.last_event is not None and msg.last_event.kind.value in ("rejected", "rolled_back"):
            out.append(
                ro.Observation(
                    device_id, msg.last_event.kind.value, msg.last_event.sequence, None, msg.last_event.reason
                )
            )
        return out
    return []


class RolloutRunner:
    def __init__(
        self, registry: Registry, publisher: Publisher, fleet: FleetWatcher, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = registry
        self.store = registry.store
        self.publisher = publisher
        self.fleet = fleet
        self.clock = clock
        self._obs: queue.Queue[ro.Observation] = queue.Queue()
        self._published: set[str] = set()
        self._connects = publisher.link.stats.connects
        #: rollout id -> the ``updated_at`` this runner last read or wrote (its saves compare-and-set on it)
        self._written: dict[str, float] = {}
        fleet.add_listener(self._on_fleet)

    def _on_fleet(self, kind: str, device_id: str, msg: Any) -> None:
        for o in observations(kind, device_id, msg):
            self._obs.put(o)

    # -- create -------------------------------------------------------------------------------
    def create(
        self,
        ref: str,
        target: str,
        *,
        canary: int = 0,
        waves: str = "100%",
        max_failure_pct: float = 0.0,
        allow_downgrade: bool = False,
        rollout_id: str | None = None,
    ) -> ro.Rollout:
        mv = self.registry.resolve(ref)
        try:
            devices = self.fleet.view.resolve_target(target)
        except ValueError as exc:
            raise RolloutError(str(exc)) from exc
        if not devices:
            raise RolloutError(f"no device matches {target} (devices announce their groups when they connect)")
        try:
            waves_plan = ro.plan_waves(devices, canary=canary, waves=waves)
        except ValueError as exc:
            raise RolloutError(str(exc)) from exc
        previous: dict[str, ro.ModelRef | None] = {}
        for d in devices:
            st = self.fleet.view.state(d)
            previous[d] = ro.ModelRef.of(st.model) if st and st.model else None
        plan = ro.Plan(
            id=rollout_id or time.strftime("r%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4],
            model=ro.ModelRef(mv.name, mv.version, mv.sha256),
            target=target,
            waves=waves_plan,
            canary=canary,
            max_failure_pct=max_failure_pct,
            allow_downgrade=allow_downgrade,
        )
        r, actions = ro.start(plan, previous)
        now = self.clock()
        self.store.put_rollout(RolloutRow(plan.id, r.status.value, r.to_dict(), now, now, None, now))
        self._ensure_artifact(mv.name, mv.version)
        r = self._execute(r, actions)
        r = self._save(r)
        log.info(
            "rollout %s of %s v%d to %d devices in %d waves",
            plan.id,
            mv.name,
            mv.version,
            len(devices),
            len(waves_plan),
        )
        return r

    # -- execute actions ------------------------------------------------------------------------
    def _ensure_artifact(self, name: str, version: int) -> None:
        mv = self.store.get_version(name, version)
        if mv.sha256 in self._published:
            return
        data = self.registry.artifact(mv)
        self.publisher.publish_artifact(with_chunk_hashes(self.registry.manifest(mv), data), data)
        self._published.add(mv.sha256)

    def _manifest(self, name: str, version: int) -> Any:
        mv = self.store.get_version(name, version)
        return with_chunk_hashes(self.registry.manifest(mv), self.registry.artifact(mv))

    def _execute(self, r: ro.Rollout, actions: list[ro.Action]) -> ro.Rollout:
        dispatches = [a.device_id for a in actions if isinstance(a, ro.Dispatch)]
        if dispatches:  # a whole wave: signed one by one, published in one batch
            base = self._manifest(r.plan.model.name, r.plan.model.version)
            batch = []
            for d in dispatches:
                seq = self.store.next_sequence()
                batch.append((d, reissue(base, sequence=seq, devices=(d,), allow_downgrade=r.plan.allow_downgrade)))
            self.publisher.publish_desired_many(batch)
            for d, man in batch:
                r = ro.dispatched(r, d, man.sequence)
        for a in actions:
            if isinstance(a, ro.SendBack):
                r = self._send_back(r, a)
        return r

    def _send_back(self, r: ro.Rollout, a: ro.SendBack) -> ro.Rollout:
        prev = a.previous
        if prev is not None:
            try:
                self._ensure_artifact(prev.name, prev.version)
                base = self._manifest(prev.name, prev.version)
            except NotFound:
                log.warning("previous model %s v%d of %s is not in the registry", prev.name, prev.version, a.device_id)
                prev = None
        if prev is None:
            self.publisher.clear_desired(a.device_id)
            return ro.sent_back(r, a.device_id, 0, cleared=True)
        seq = self.store.next_sequence()
        self.publisher.publish_desired(
            a.device_id, reissue(base, sequence=seq, devices=(a.device_id,), allow_downgrade=True)
        )
        return ro.sent_back(r, a.device_id, seq, cleared=False)

    # -- control and observation ----------------------------------------------------------------
    def load(self, rollout_id: str) -> ro.Rollout:
        """The rollout as stored (to read; :meth:`run` drives it)."""
        return ro.Rollout.from_dict(self.store.get_rollout(rollout_id).doc)

    def _take(self, rollout_id: str) -> ro.Rollout:
        """The stored rollout, to drive: this runner's next save compares against this read."""
        row = self.store.get_rollout(rollout_id)
        self._written[rollout_id] = row.updated_at
        return ro.Rollout.from_dict(row.doc)

    def _save(self, r: ro.Rollout, *, alive: bool = True) -> ro.Rollout:
        """Persist; ``runner_seen`` tells other processes whether a runner is driving this rollout.

        A compare-and-set on the row this runner last read or wrote: when another process wrote the
        rollout meanwhile (``edgeline rollout abort`` acting itself while this runner looked dead),
        its state wins, and the runner goes on from it instead of overwriting it."""
        rid = r.plan.id
        seen = self.clock() if alive else 0.0
        written = self.store.save_rollout(
            rid, r.status.value, r.to_dict(), runner_seen=seen, expect_updated_at=self._written.get(rid)
        )
        if written is not None:
            self._written[rid] = written
            return r
        theirs = self._take(rid)
        log.warning(
            "rollout %s was changed by another process (now %s): following that, not saving this runner's %s",
            rid,
            theirs.status.value,
            r.status.value,
        )
        return theirs

    def release(self, r: ro.Rollout) -> ro.Rollout:
        """Say this process stops driving ``r`` (so controls from other processes act at once)."""
        return self._save(r, alive=False)

    def apply_control(self, r: ro.Rollout, control: str) -> ro.Rollout:
        try:
            if control == "pause":
                r, actions = ro.pause(r)
            elif control == "resume":
                r, actions = ro.resume(r)
            elif control in ("abort", "rollback"):
                r, actions = ro.abort(r, f"{control} requested")
            else:
                raise RolloutError(f"unknown control {control!r}")
        except ValueError as exc:
            log.warning("rollout %s: %s ignored: %s", r.plan.id, control, exc)
            return r
        return self._execute(r, actions)

    def step(self, r: ro.Rollout, wait_s: float = 0.2) -> ro.Rollout:
        """One round: a pending control request, then every observation that arrived, then save."""
        before = r
        if self.publisher.link.stats.connects != self._connects:
            self._republish(r)
        control = self.store.take_control(r.plan.id)
        if control:
            try:
                r = self.apply_control(r, control)
            except EdgelineError:
                self.store.request_control(r.plan.id, control)  # not lost: taken again at the next round
                raise
        # a round ends at its deadline even while observations keep coming: a 1,000-device wave
        # reports thousands of them, and a round that drained them all lasted 6 s on Mosquitto, so
        # the rollout was not saved, ``runner_seen`` went stale (another process then took a
        # control request as if no runner were driving) and a control waited that long
        deadline = time.monotonic() + wait_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                obs = self._obs.get(timeout=left)
            except queue.Empty:
                break
            r, actions = ro.observe(r, obs)
            r = self._execute(r, actions)
        if r != before or self.clock() - self.store.get_rollout(r.plan.id).runner_seen > 1.0:
            r = self._save(r)
        return r

    def _outage(
        self, r: ro.Rollout, exc: BaseException, stop: threading.Event | None, deadline: float | None
    ) -> ro.Rollout:
        """The broker went away under a round (its publishes failed): the round's state was not kept
        and its control request is queued again. Wait for the link, then replay what the devices'
        retained states say, so the round's decisions are taken again (each is idempotent)."""
        log.warning("rollout %s: the broker is unreachable (%s); waiting for it", r.plan.id, exc)
        while not self.publisher.link.wait_connected(0.5):
            if (stop is not None and stop.is_set()) or (deadline is not None and time.monotonic() > deadline):
                return r
        self.fleet.settle(0.2, 2.0)
        for d in r.devices:
            for o in observations("state", d, self.fleet.view.state(d)):
                self._obs.put(o)
        return r

    def _republish(self, r: ro.Rollout) -> None:
        """The broker connection came back. A broker that crashed forgets what it acknowledged since
        its last save (Mosquitto saves periodically): publish again what unfinished devices still
        need, the artifact and their desired state under the same sequence (a device that has it
        already ignores it)."""
        connects = self.publisher.link.stats.connects
        waiting = [
            (d, t)
            for d, t in r.devices.items()
            if t.status in (ro.DeviceStatus.SENT, ro.DeviceStatus.UPDATING) and t.sequence > 0
        ]
        if waiting and r.status == ro.RolloutStatus.RUNNING:
            log.info("rollout %s: broker reconnected, publishing again for %d devices", r.plan.id, len(waiting))
            model = r.plan.model
            self._published.discard(model.sha256)
            self._ensure_artifact(model.name, model.version)
            base = self._manifest(model.name, model.version)
            for d, t in waiting:
                man = reissue(base, sequence=t.sequence, devices=(d,), allow_downgrade=r.plan.allow_downgrade)
                self.publisher.publish_desired(d, man)
        self._connects = connects

    def run(
        self,
        rollout_id: str,
        *,
        on_update: Callable[[ro.Rollout], None] | None = None,
        stop: threading.Event | None = None,
        timeout_s: float | None = None,
    ) -> ro.Rollout:
        """Drive until the rollout is settled (completed, or aborted with every rollback confirmed),
        ``stop`` is set, or ``timeout_s`` passes. Safe to call again later to continue."""
        r = self._take(rollout_id)
        # a dispatch that never reached the broker (the broker went away under an earlier run or
        # under ``create``): publish it now, or its device would be waited for forever
        lost: list[ro.Action] = [
            ro.Dispatch(d) for d, t in r.devices.items() if t.status == ro.DeviceStatus.SENT and t.sequence == 0
        ]
        if lost and r.status == ro.RolloutStatus.RUNNING:
            self._ensure_artifact(r.plan.model.name, r.plan.model.version)
            r = self._execute(r, lost)
            r = self._save(r)
        self.fleet.settle(0.2, 2.0)
        for d in r.devices:  # what the retained states say happened while no runner was watching
            for o in observations("state", d, self.fleet.view.state(d)):
                self._obs.put(o)
        r, actions = ro.evaluate(r)  # the retained states may already have settled things
        r = self._execute(r, actions)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not r.settled:
            if stop is not None and stop.is_set():
                break
            if deadline is not None and time.monotonic() > deadline:
                break
            try:
                r = self.step(r)
            except EdgelineError as exc:
                if self.publisher.link.connected and not isinstance(exc, TransportError):
                    raise
                r = self._outage(r, exc, stop, deadline)
            if on_update is not None:
                on_update(r)
        return self._save(r, alive=False)


def runner_alive(row: RolloutRow, now: float | None = None) -> bool:
    return (time.time() if now is None else now) - row.runner_seen < RUNNER_ALIVE_S


def request(registry: Registry, rollout_id: str, control: str) -> None:
    if control not in CONTROLS:
        raise RolloutError(f"unknown control {control!r}: use {', '.join(CONTROLS)}")
    try:
        registry.store.request_control(rollout_id, control)
    except NotFound as exc:
        raise RolloutError(str(exc)) from exc
    except RegistryError:
        raise
