"""The updater as an :class:`~edge_agent.plugins.AgentPlugin`: the I/O driver around the pure machine.

One worker thread owns the :class:`~edge_agent.updater.machine.Record`; MQTT handlers and the
inference thread only put commands (:mod:`.commands`) on its queue (or feed the trial). After every
transition the record is persisted atomically, the retained device state is updated and an event is
published (:mod:`.keeper`). A deployment goes offer -> download -> verify -> stage (:mod:`.delivery`)
-> load, self-test, trial -> commit or roll back (:mod:`.activation`). The committed model keeps
serving until the new one has loaded and passed its self-test; a failed trial re-activates it.
Nothing here raises into the inspection loop.

The plugin is built for a device by :mod:`edge_agent.assembly`, which imports this module (never the
other way round).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np

from edge_agent.errors import EdgelineError
from edge_agent.identity import DeviceIdentity
from edge_agent.model import LoadedModel
from edge_agent.plugins import AgentHandle, FrameResult
from edge_agent.updater import machine as m
from edge_agent.updater.activation import Activation, CanStopServing
from edge_agent.updater.commands import (
    Command,
    Desired,
    Downloaded,
    DownloadFailed,
    Judge,
    ResumeStep,
    Revocations,
    Stop,
)
from edge_agent.updater.context import InFlight, UpdaterContext
from edge_agent.updater.delivery import Delivery
from edge_agent.updater.download import ChunkDownload
from edge_agent.updater.events import EventPublisher
from edge_agent.updater.keeper import STATE_EVERY_S, RecordKeeper
from edge_agent.updater.link import UpdaterLink, load_trust, parse_revocations
from edge_agent.updater.refusals import RefusalGate
from edge_agent.updater.reporter import Reporter
from edge_agent.updater.shadow_slot import ShadowHost, ShadowSlot
from edge_agent.updater.slots import SlotDisk
from edgeline.core.fsutil import free_bytes
from edgeline.core.protocol.delivery import EventKind, Reason
from edgeline.core.protocol.delivery import UpdaterState as S
from edgeline.core.protocol.signing import TrustStore
from firmware_configs.shadow_section import ShadowSection
from firmware_configs.updater_section import UpdaterSection

log = logging.getLogger(__name__)

__all__ = ["STATE_EVERY_S", "CanStopServing", "UpdaterPlugin"]


class UpdaterPlugin:
    name = "updater"

    def __init__(
        self,
        config: UpdaterSection,
        identity: DeviceIdentity,
        link: UpdaterLink,
        events: EventPublisher,
        *,
        trust: TrustStore | None = None,
        clock: Callable[[], float] = time.time,
        free_disk: Callable[[Path], int] = free_bytes,
        threads: int = 1,
        shadow: ShadowSection | None = None,
    ) -> None:
        disk = SlotDisk(Path(config.state_dir))
        self.ctx = UpdaterContext(
            cfg=config,
            me=identity,
            link=link,
            disk=disk,
            trust=trust if trust is not None else load_trust(Path(config.trust_file), disk),
            limits=m.Limits(config.max_artifact_bytes, config.min_free_bytes),
            clock=clock,
            free_disk=free_disk,
            threads=threads,
        )
        self.events = events
        self._q: queue.Queue[Command] = queue.Queue()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.reporter = Reporter(identity.device_id, link, events, disk.state_dir, config.faults, self._stop)
        self.keeper = RecordKeeper(disk, self.reporter, clock, self._serving)
        self.flight = InFlight()
        self.activation = Activation(self.ctx, self.keeper, self.flight)
        self.delivery = Delivery(self.ctx, self.keeper, self.flight, self.activation, self._q.put)
        #: the challenger's slot (shadow deployments), beside the serving slots and apart from them
        self.shadow_slot = ShadowSlot(self.ctx, shadow)

    # -- what the agent, tests and benchmarks look at (the limits, the disk probe, the configuration
    # and the refusal gate may be replaced on a running plugin) -------------------------------------
    @property
    def cfg(self) -> UpdaterSection:
        return self.ctx.cfg

    @cfg.setter
    def cfg(self, config: UpdaterSection) -> None:
        self.ctx.cfg = config

    @property
    def limits(self) -> m.Limits:
        return self.ctx.limits

    @limits.setter
    def limits(self, limits: m.Limits) -> None:
        self.ctx.limits = limits

    @property
    def free_disk(self) -> Callable[[Path], int]:
        return self.ctx.free_disk

    @free_disk.setter
    def free_disk(self, probe: Callable[[Path], int]) -> None:
        self.ctx.free_disk = probe

    @property
    def clock(self) -> Callable[[], float]:
        return self.ctx.clock

    @property
    def threads(self) -> int:
        return self.ctx.threads

    @property
    def me(self) -> DeviceIdentity:
        return self.ctx.me

    @property
    def link(self) -> UpdaterLink:
        return self.ctx.link

    @property
    def disk(self) -> SlotDisk:
        return self.ctx.disk

    @property
    def trust(self) -> TrustStore:
        return self.ctx.trust

    @property
    def agent(self) -> AgentHandle | None:
        return self.ctx.agent

    @property
    def record(self) -> m.Record:
        return self.keeper.record

    @property
    def refusals(self) -> RefusalGate:
        return self.keeper.refusals

    @refusals.setter
    def refusals(self, gate: RefusalGate) -> None:
        self.keeper.refusals = gate

    @property
    def state(self) -> S:
        return self.keeper.record.state

    @property
    def download(self) -> ChunkDownload | None:
        """The current (or last) download, for progress and statistics."""
        return self.flight.download or self.flight.last_download

    def _serving(self) -> LoadedModel | None:
        agent = self.ctx.agent
        return agent.current_model if agent is not None else None

    # -- AgentPlugin ----------------------------------------------------------------------------
    def start(self, agent: AgentHandle) -> None:
        ctx, keeper = self.ctx, self.keeper
        ctx.agent = agent
        ctx.disk.prepare()
        try:
            rec = ctx.disk.load_record()
        except EdgelineError as exc:
            log.error("updater state unreadable, rebuilt from the committed slot link: %s", exc)
            rec = ctx.disk.adopt_current(ctx.trust)
        rec_before = rec
        keeper.resend_last(rec)  # before the recovery may replace the record's last transition
        rec_after = m.recover(rec, ctx.clock())
        keeper.record = rec_after.record
        if keeper.record is not rec_before:
            ctx.disk.save_record(keeper.record)
        ctx.disk.sync_current(keeper.record.active)
        self._serve_committed()
        if rec_after.rolled_back:
            ctx.disk.clean_downloads()
            keeper.emit(
                EventKind.ROLLED_BACK, rec_before.pending, Reason.CRASHED, "the agent restarted during the trial"
            )
        keeper.report()
        ctx.link.subscribe_desired(self._on_desired)
        ctx.link.subscribe_revocations(self._on_revocations)
        ctx.link.on_disconnect(self._on_link_down)
        self._worker = threading.Thread(target=self._run, name="edgeline-updater", daemon=True)
        self._worker.start()
        if hasattr(agent, "shadow"):  # an agent that can run a challenger
            self.shadow_slot.start(cast(ShadowHost, agent))
        if rec_after.resume != m.Resume.NOTHING:
            self._q.put(ResumeStep(rec_after.resume))

    def on_result(self, result: FrameResult) -> None:
        trial, pending = self.activation.trial, self.keeper.record.pending
        if trial is not None and pending is not None and result.model_sha256 == pending.sha256:
            trial.add(result.verdict.latency_ms, bool(np.isfinite(result.probabilities).all()))
            if trial.seen == trial.spec.frames:
                self._q.put(Judge())  # wake the worker: the trial has its frames

    def stop(self) -> None:
        self._stop.set()
        self._q.put(Stop())
        if self._worker is not None:
            self._worker.join(10)
        self.shadow_slot.stop()
        if self.flight.download is not None:
            self.flight.download.cancel()
        close = getattr(self.events, "close", None)
        if callable(close):
            close()

    # -- inputs from other threads ------------------------------------------------------------
    def _on_desired(self, topic: str, payload: bytes, retained: bool) -> None:
        self._q.put(Desired(payload, retained))

    def _on_link_down(self) -> None:
        dl = self.flight.download
        if dl is not None:
            dl.on_disconnect()

    def _on_revocations(self, topic: str, payload: bytes, retained: bool) -> None:
        self._q.put(Revocations(payload))

    # -- worker ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            # sleep until a command comes; poll only while a trial runs (it can time out) or while
            # refusals held back by the rate limit are not in the device state yet
            if self.activation.trial is not None:
                timeout: float | None = 0.1
            else:
                timeout = STATE_EVERY_S if self.keeper.counts_dirty else None
            try:
                cmd: Command | None = self._q.get(timeout=timeout)
            except queue.Empty:
                cmd = None
            try:
                if isinstance(cmd, Stop):
                    return
                if cmd is not None:
                    self._handle(cmd)
                if self.activation.judge():
                    self.delivery.after_trial()
                self.keeper.report_counts()
            except Exception:  # the updater must never take the agent down
                log.exception("updater step failed")

    def _handle(self, cmd: Command) -> None:
        match cmd:
            case Desired(payload, retained):
                self.delivery.offer(payload, retained)
            case Revocations(payload):
                self._revocations(payload)
            case ResumeStep(step):
                self.delivery.resume(step)
            case Downloaded(sequence) if self._is_current(sequence):
                self.delivery.verify()
            case DownloadFailed(sequence, reason, detail) if self._is_current(sequence):
                self.delivery.reject(reason, detail)
            case _:  # Judge (the trial is judged after every command), or a stale download's news
                pass

    def _is_current(self, sequence: int) -> bool:
        pending = self.keeper.record.pending
        return pending is not None and pending.sequence == sequence

    def _revocations(self, payload: bytes) -> None:
        trust = self.ctx.trust
        try:
            if trust.apply_revocations(parse_revocations(payload)):
                self.ctx.disk.save_revocations(payload)
                log.info("applied revocation list serial %d", trust.revocation_serial)
        except EdgelineError as exc:
            log.warning("revocation list refused: %s", exc)

    # -- startup --------------------------------------------------------------------------------
    def _serve_committed(self) -> None:
        """Make the committed slot the serving model (after a restart the agent may hold nothing,
        or the bundle it was configured with)."""
        agent, rec = self.ctx.agent, self.keeper.record
        assert agent is not None
        info, current = rec.active_info, agent.current_model
        if info is None or rec.active is None:
            return
        if current is not None and current.manifest.artifact.sha256 == info.sha256:
            return
        try:
            agent.activate(self.ctx.disk.load_slot(rec.active, self.ctx.trust, self.ctx.threads))
        except EdgelineError as exc:
            log.error("committed slot %s cannot serve: %s", rec.active, exc)
