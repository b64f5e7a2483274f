"""The operator's actions: deploy, pause, resume, abort, rollback. Each goes through the library calls
``edgeline deploy`` and ``edgeline rollout ...`` use (:class:`RolloutRunner`, :class:`Publisher`,
:func:`~cloud_registry.rollout_runner.request`) on the console's one link, and each is written to
the audit log in the registry store (who, what, when, and how it ended), refused ones too.

A rollout the console starts is driven by a runner thread of the console (as ``edgeline deploy``
drives its own until it ends); pause, resume and abort reach whichever runner is alive through the
store, or are carried out here when none is (as the CLI does)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloud_registry import rollout as ro
from cloud_registry.publisher import Publisher
from cloud_registry.registry import Registry
from cloud_registry.rollout_runner import CONTROLS, RUNNER_ALIVE_S, RolloutRunner, request, runner_alive
from cloud_registry.store import AuditRow
from converters.keys import SigningKey
from edgeline.console.live import LiveView
from edgeline.core.errors import EdgelineError

log = logging.getLogger(__name__)
#: how long an action waits for the console's own runner to take it before answering
OWN_RUNNER_WAIT_S = 10.0


@dataclass(frozen=True)
class DeployRequest:
    ref: str
    target: str
    canary: int = 0
    waves: str = "100%"
    max_failure_pct: float = 0.0
    allow_downgrade: bool = False


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str
    rollout_id: str = ""


class Operations:
    def __init__(
        self,
        registry: Registry,
        live: LiveView,
        signer: Callable[[], SigningKey],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.live = live
        self.signer = signer
        self.clock = clock
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    # -- audit ---------------------------------------------------------------------------------------
    def audit(self, who: str, action: str, target: str, outcome: str, detail: dict[str, Any] | None = None) -> bool:
        """Write one line of the audit log; False (and the line in the process log) when the store is
        unreachable. An action that needs the store fails then anyway; its refusal is what is lost."""
        try:
            self.registry.store.add_audit(AuditRow(self.clock(), who, action, target, outcome, detail or {}))
        except EdgelineError as exc:
            log.error("audit log write failed (%s): %s %s %s: %s", exc, who, action, target, outcome)
            return False
        return True

    def _runner(self) -> tuple[RolloutRunner, Any]:
        scoped = self.live.scoped()
        try:
            publisher = Publisher(self.live.link, self.live.topics, self.signer())
            return RolloutRunner(self.registry, publisher, scoped), scoped
        except BaseException:
            self.live.release(scoped)
            raise

    # -- deploy --------------------------------------------------------------------------------------
    def deploy(self, who: str, req: DeployRequest) -> Outcome:
        detail = req.__dict__.copy()
        try:
            if not self.live.link.connected:
                raise EdgelineError("the fleet broker is unreachable: nothing can be deployed now")
            runner, scoped = self._runner()
            try:
                scoped.settle(0.2, 1.0)
                r = runner.create(
                    req.ref,
                    req.target,
                    canary=req.canary,
                    waves=req.waves,
                    max_failure_pct=req.max_failure_pct,
                    allow_downgrade=req.allow_downgrade,
                )
            except BaseException:
                self.live.release(scoped)
                raise
        except EdgelineError as exc:
            self.audit(who, "deploy", f"{req.ref} -> {req.target}", f"refused: {exc}", detail)
            return Outcome(False, f"deploy refused: {exc}")
        rid = r.plan.id
        if not self.audit(who, "deploy", f"{req.ref} -> {req.target}", "started", detail | {"rollout": rid}):
            log.error("rollout %s started by %s but not in the audit log", rid, who)
        self._drive(runner, scoped, rid)
        return Outcome(True, f"rollout {rid} started: {r.plan.model.name} v{r.plan.model.version} to {req.target}", rid)

    def _drive(self, runner: RolloutRunner, scoped: Any, rollout_id: str) -> None:
        def body() -> None:
            try:
                runner.run(rollout_id, stop=self._stop)
            except EdgelineError:
                log.exception("rollout %s: the console's runner stopped", rollout_id)
            finally:
                self.live.release(scoped)

        t = threading.Thread(target=body, name=f"rollout-{rollout_id}", daemon=True)
        with self._lock:
            self._threads[rollout_id] = t
        t.start()

    # -- pause, resume, abort, rollback --------------------------------------------------------------------
    def control(self, who: str, rollout_id: str, control: str) -> Outcome:
        if control not in CONTROLS:
            return Outcome(False, f"unknown action {control!r}")
        try:
            out = self._control(rollout_id, control)
        except EdgelineError as exc:
            self.audit(who, control, rollout_id, f"refused: {exc}")
            return Outcome(False, f"{control} refused: {exc}", rollout_id)
        self.audit(who, control, rollout_id, out)
        return Outcome(True, f"rollout {rollout_id}: {out}", rollout_id)

    def _control(self, rollout_id: str, control: str) -> str:
        """What ``edgeline rollout pause|resume|abort`` and ``edgeline rollback ID`` do."""
        store = self.registry.store
        row = store.get_rollout(rollout_id)
        request(self.registry, rollout_id, control)
        # a runner thread of this console is alive even when a loaded machine delays its heartbeat:
        # only it may act (two writers of one rollout would overwrite each other's state)
        own = rollout_id in self._alive()
        if own or runner_alive(row):
            deadline = time.monotonic() + (OWN_RUNNER_WAIT_S if own else 2 * RUNNER_ALIVE_S)
            while time.monotonic() < deadline:
                if store.get_rollout(rollout_id).control is None:
                    return f"{control} taken by the running rollout runner"
                time.sleep(0.05)
            if own:
                return f"{control} requested: the console's runner takes it at its next step"
        taken = store.take_control(rollout_id)
        if taken is None:
            return f"{control} taken by the running rollout runner"
        runner, scoped = self._runner()
        try:
            r = runner.apply_control(runner.load(rollout_id), taken)
            store.save_rollout(rollout_id, r.status.value, r.to_dict())
        finally:
            self.live.release(scoped)
        if r.status == ro.RolloutStatus.ABORTED and not r.settled and rollout_id not in self._alive():
            # devices are being sent back: keep driving until they confirm (as 'rollout run' would)
            runner2, scoped2 = self._runner()
            self._drive(runner2, scoped2, rollout_id)
        return r.status.value + (f" ({r.reason})" if r.reason else "")

    def _alive(self) -> set[str]:
        with self._lock:
            return {rid for rid, t in self._threads.items() if t.is_alive()}

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            threads = list(self._threads.values())
        for t in threads:
            t.join(timeout)
