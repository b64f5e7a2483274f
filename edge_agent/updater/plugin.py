"""The updater as an :class:`~edge_agent.plugins.AgentPlugin`: the I/O driver around the pure machine.

One worker thread owns the :class:`~edge_agent.updater.machine.Record`; MQTT handlers and the
inference thread only put commands on its queue (or feed the trial). After every transition the
record is persisted atomically, the retained device state is updated and an event is published.
The committed model keeps serving until the new one has loaded and passed its self-test; a failed
trial re-activates it. Nothing here raises into the inspection loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edge_agent.bundle import sha256_file
from edge_agent.errors import EdgelineError, ProtocolError, SelfTestError, UpdateRejected
from edge_agent.model import LoadedModel
from edge_agent.plugins import AgentHandle, FrameResult
from edge_agent.updater import machine as m
from edge_agent.updater.checks import verify_offer
from edge_agent.updater.download import ChunkDownload
from edge_agent.updater.events import EventPublisher
from edge_agent.updater.link import UpdaterLink, load_trust, parse_revocations
from edge_agent.updater.offer import Refusal, triage
from edge_agent.updater.refusals import Decision, RefusalGate
from edge_agent.updater.reporter import Reporter
from edge_agent.updater.slots import SlotDisk
from edge_agent.updater.trial import Trial, TrialSpec, error_count
from edgeline.core.fsutil import free_bytes
from edgeline.core.protocol.delivery import EventKind, Reason
from edgeline.core.protocol.delivery import UpdaterState as S
from edgeline.core.protocol.manifest import Manifest
from edgeline.core.protocol.signing import Envelope, TrustStore, parse_envelope
from firmware_configs.updater_section import UpdaterSection

log = logging.getLogger(__name__)


@runtime_checkable
class CanStopServing(Protocol):
    """An agent that can stop serving (a first install that failed its trial has nothing to go back to)."""

    def deactivate(self) -> None: ...


#: the device state is republished at most this often for refusals alone (a flood of them)
STATE_EVERY_S = 1.0


class UpdaterPlugin:
    name = "updater"

    def __init__(
        self,
        config: UpdaterSection,
        identity: m.Identity,
        link: UpdaterLink,
        events: EventPublisher,
        *,
        trust: TrustStore | None = None,
        clock: Callable[[], float] = time.time,
        free_disk: Callable[[Path], int] = free_bytes,
        threads: int = 1,
    ) -> None:
        self.cfg = config
        self.me = identity
        self.link = link
        self.events = events
        self.clock = clock
        self.free_disk = free_disk
        self.threads = threads
        self.disk = SlotDisk(Path(config.state_dir))
        self.trust = trust if trust is not None else load_trust(Path(config.trust_file), self.disk)
        self.limits = m.Limits(config.max_artifact_bytes, config.min_free_bytes)
        self.record = m.Record()
        self.agent: AgentHandle | None = None
        self._q: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._envelope: Envelope | None = None
        self._manifest: Manifest | None = None
        self._download: ChunkDownload | None = None
        self._last_download: ChunkDownload | None = None
        self._trial: Trial | None = None
        self._previous: LoadedModel | None = None
        self._deferred: tuple[bytes, bool] | None = None
        self.refusals = RefusalGate()
        self._counts_dirty = False
        self._counts_at = 0.0
        self._timings: dict[str, float] = {}
        self._mark = time.monotonic()
        self.reporter = Reporter(identity.device_id, link, events, self.disk.state_dir, config.faults, self._stop)

    # -- AgentPlugin ----------------------------------------------------------------------------
    def start(self, agent: AgentHandle) -> None:
        self.agent = agent
        self.disk.prepare()
        try:
            rec = self.disk.load_record()
        except EdgelineError as exc:
            log.error("updater state unreadable, rebuilt from the committed slot link: %s", exc)
            rec = self.disk.adopt_current(self.trust)
        rec_before = rec
        self._resend_last(rec)  # before the recovery may replace the record's last transition
        rec_after = m.recover(rec, self.clock())
        self.record = rec_after.record
        if self.record is not rec_before:
            self.disk.save_record(self.record)
        self.disk.sync_current(self.record.active)
        self._serve_committed()
        if rec_after.rolled_back:
            self.disk.clean_downloads()
            self._emit(
                EventKind.ROLLED_BACK, rec_before.pending, Reason.CRASHED, "the agent restarted during the trial"
            )
        self._report()
        self.link.subscribe_desired(self._on_desired)
        self.link.subscribe_revocations(self._on_revocations)
        self.link.on_disconnect(self._on_link_down)
        self._worker = threading.Thread(target=self._run, name="edgeline-updater", daemon=True)
        self._worker.start()
        if rec_after.resume != m.Resume.NOTHING:
            self._q.put(("resume", rec_after.resume))

    def on_result(self, result: FrameResult) -> None:
        trial, pending = self._trial, self.record.pending
        if trial is not None and pending is not None and result.model_sha256 == pending.sha256:
            trial.add(result.verdict.latency_ms, bool(np.isfinite(result.probabilities).all()))
            if trial.seen == trial.spec.frames:
                self._q.put(("judge",))  # wake the worker: the trial has its frames

    def stop(self) -> None:
        self._stop.set()
        self._q.put(("stop",))
        if self._worker is not None:
            self._worker.join(10)
        if self._download is not None:
            self._download.cancel()
        close = getattr(self.events, "close", None)
        if callable(close):
            close()

    # -- inputs from other threads ------------------------------------------------------------
    def _on_desired(self, topic: str, payload: bytes, retained: bool) -> None:
        self._q.put(("desired", payload, retained))

    def _on_link_down(self) -> None:
        dl = self._download
        if dl is not None:
            dl.on_disconnect()

    def _on_revocations(self, topic: str, payload: bytes, retained: bool) -> None:
        self._q.put(("revocations", payload))

    @property
    def state(self) -> S:
        return self.record.state

    @property
    def download(self) -> ChunkDownload | None:
        """The current (or last) download, for progress and statistics."""
        return self._download or self._last_download

    # -- worker ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            # sleep until a command comes; poll only while a trial runs (it can time out) or while
            # refusals held back by the rate limit are not in the device state yet
            timeout = 0.1 if self._trial is not None else (STATE_EVERY_S if self._counts_dirty else None)
            try:
                cmd = self._q.get(timeout=timeout)
            except queue.Empty:
                cmd = None
            try:
                if cmd is not None:
                    if cmd[0] == "stop":
                        return
                    self._handle(cmd)
                self._judge_trial()
                self._report_counts()
            except Exception:  # the updater must never take the agent down
                log.exception("updater step failed")

    def _handle(self, cmd: tuple[Any, ...]) -> None:
        kind = cmd[0]
        if kind == "desired":
            self._offer(cmd[1], cmd[2])
        elif kind == "revocations":
            self._revocations(cmd[1])
        elif kind == "resume":
            self._resume(cmd[1])
        elif kind == "downloaded" and self._is_current(cmd[1]):
            self._verify()
        elif kind == "download_failed" and self._is_current(cmd[1]):
            self._reject(cmd[2], cmd[3])

    def _is_current(self, sequence: int) -> bool:
        return self.record.pending is not None and self.record.pending.sequence == sequence

    # -- offer ----------------------------------------------------------------------------------
    def _offer(self, payload: bytes, retained: bool) -> None:
        now = self.clock()
        got = triage(payload, retained, self.record, self.trust, self.me, now)
        if isinstance(got, Refusal):
            self._refuse_once(got)
            return
        if got is None:
            return
        if self.record.state == S.TRIAL:
            self._deferred = (payload, retained)  # taken up when the trial ends
            return
        env, manifest = got.envelope, got.manifest
        if self.record.state in m.IN_FLIGHT:
            self._reject(Reason.SUPERSEDED, f"deployment {manifest.sequence} replaced it")
        rec = m.accept_sequence(self.record, manifest)
        try:
            outcome = m.check_policy(
                rec, manifest, now=now, limits=self.limits, free_bytes=self.free_disk(self.disk.state_dir)
            )
        except UpdateRejected as r:
            self._commit_record(m.refused_offer(rec, manifest.sequence, r.reason, r.detail, now), must_persist=False)
            self._emit(EventKind.REJECTED, m.pending_of(manifest), r.reason, r.detail, sequence=manifest.sequence)
            return
        if outcome == m.OfferOutcome.ALREADY_ACTIVE:
            self._commit_record(m.already_active(rec, manifest, now))
            self._emit(EventKind.COMMITTED, m.pending_of(manifest), detail="already active", sequence=manifest.sequence)
            return
        self._envelope, self._manifest = env, manifest
        self._timings, self._mark = {}, time.monotonic()
        begun = m.begin(rec, manifest, now, env.model_dump(mode="json"))
        # subscribe to the chunks first, persist the record while the broker already sends them: the
        # persist (two fsyncs) used to hold back the download's first packet. Chunks may land in the
        # part file before the record is durable; that is harmless: after a power cut the part file is
        # re-scanned against the signed hashes when the offer comes again, and one that no offer wants
        # is removed here at the next one. No later transition and no event goes out before the record
        # is durable (they run on this worker, after it).
        assert begun.pending is not None
        self.disk.clean_downloads(keep=begun.pending.sha256)
        dl = self._open_download(begun.pending)
        try:
            self._transition(begun, EventKind.DOWNLOADING)
        except BaseException:
            if dl is not None:  # not recorded: nothing may download for it
                dl.cancel()
                self._download = None
            raise
        if dl is None:  # the part file could not be opened: rejected now that the offer is recorded
            self._start_download()
        elif dl.stats.resumed_with:
            self._emit_resumed(begun.pending, dl)

    def _refuse_once(self, r: Refusal) -> None:
        """A rejected event for each distinct refused payload, within the rate limit (see refusals.py);
        one held back by the limit is counted, and the count goes out with the next event sent."""
        decision = self.refusals.admit(r.key, r.reason)
        if decision is not Decision.REPORT:
            self._counts_dirty = decision is Decision.HELD or self._counts_dirty
            if decision is Decision.HELD and self.refusals.counts.unreported % 100 == 1:
                log.warning("refusals over the rate limit: %d not reported so far", self.refusals.counts.unreported)
            return
        detail = r.detail
        if held := self.refusals.take_held():
            detail = f"{detail} ({held} more refusals since the last report were not sent: rate limit)"
        log.warning("update rejected: %s: %s", r.reason, detail)
        self._commit_record(
            m.refused_offer(self.record, r.sequence, r.reason, detail, self.clock()), must_persist=False
        )
        self._emit(EventKind.REJECTED, None, r.reason, detail, sequence=r.sequence)

    # -- download / verify / stage / load -------------------------------------------------------
    def _resume(self, step: m.Resume) -> None:
        p = self.record.pending
        assert p is not None
        try:
            self._envelope = parse_envelope(p.envelope)
            self._manifest = verify_offer(self._envelope, self.trust, self.clock())
        except (EdgelineError, OSError) as exc:
            reason = exc.reason if isinstance(exc, UpdateRejected) else Reason.IO_ERROR
            self._reject(reason, f"cannot resume: {exc}")
            return
        self._mark = time.monotonic()
        if step == m.Resume.DOWNLOAD:
            self._start_download()
        elif step == m.Resume.STAGE:
            self._verify()
        else:
            self._load()

    def _open_download(self, p: m.Pending) -> ChunkDownload | None:
        """Create, scan and start the download of ``p`` (subscribe to what is missing); None when the
        part file cannot be opened (left to :meth:`_start_download`, which rejects the update)."""
        man = self._manifest
        assert man is not None
        try:
            dl = self._new_download(p, man)
            dl.scan()
        except (ProtocolError, OSError):
            return None
        self._download = self._last_download = dl
        dl.start()
        return dl

    def _emit_resumed(self, p: m.Pending, dl: ChunkDownload) -> None:
        progress = {"have": dl.stats.resumed_with, "total": dl.total}
        self._emit(EventKind.DOWNLOADING, p, detail="resumed", progress=progress)

    def _new_download(self, p: m.Pending, man: Manifest) -> ChunkDownload:
        part = self.disk.part_path(p.sha256)
        if not part.exists() and (local := self.disk.find_local(p.sha256, self.record.slots)) is not None:
            self.disk.copy_into_part(local, part)
        seq = p.sequence
        return ChunkDownload(
            part=part,
            artifact=man.artifact,
            topics=self.link.topics,
            sub=self.link,
            window=self.cfg.chunk_window,
            on_done=lambda: self._q.put(("downloaded", seq)),
            on_fail=lambda reason, detail: self._q.put(("download_failed", seq, reason, detail)),
            pause_after=self.cfg.faults.pause_after_chunks,
            pause_s=self.cfg.faults.pause_s,
            on_pause=lambda have: self.reporter.marker(f"chunks:{have}"),
        )

    def _start_download(self) -> None:
        p, man = self.record.pending, self._manifest
        assert p is not None and man is not None
        try:
            dl = self._new_download(p, man)
            have = dl.scan()
        except (ProtocolError, OSError) as exc:
            self._reject(Reason.BAD_MANIFEST if isinstance(exc, ProtocolError) else Reason.IO_ERROR, str(exc))
            return
        self._download = self._last_download = dl
        if have:
            self._emit_resumed(p, dl)
        dl.start()

    def _verify(self) -> None:
        p = self.record.pending
        assert p is not None and self._envelope is not None
        self._lap("download")
        part = self.disk.part_path(p.sha256)
        resumed = self.record.state == S.VERIFIED
        if not resumed or part.exists():
            size = part.stat().st_size if part.exists() else -1
            if size != p.size and not resumed:
                self._reject(Reason.LENGTH_MISMATCH, f"artifact is {size} bytes, manifest says {p.size}")
                return
            # every chunk matched its signed hash as it landed: that pins every byte, so the whole-file
            # hash is left to staging (which checks it before anything is loaded); otherwise hash it now
            dl = self._download
            by_chunks = dl is not None and dl.art.sha256 == p.sha256 and dl.complete and not resumed
            if size != p.size or (not by_chunks and sha256_file(part) != p.sha256):
                if resumed:  # the verified file did not survive the restart intact: fetch what is missing
                    self._transition(m.reverify_failed(self.record, self.clock()), EventKind.DOWNLOADING)
                    self._start_download()
                else:
                    self._reject(Reason.HASH_MISMATCH, "artifact sha256 does not match the signed manifest")
                return
            self._lap("verify")
        if not resumed:
            self._transition(m.verified(self.record, self.clock()), EventKind.VERIFIED)
        try:
            self.disk.stage(p.slot, part, p.filename, p.sha256, self._envelope)
        except (EdgelineError, OSError) as exc:
            self._reject(Reason.IO_ERROR, f"staging failed: {exc}")
            return
        self._lap("stage")
        self._transition(m.staged(self.record, self.clock()), EventKind.STAGED)
        self._load()

    def _load(self) -> None:
        p, man = self.record.pending, self._manifest
        assert p is not None and man is not None and self.agent is not None
        try:
            model = LoadedModel.load(man, self.disk.model_path(p.slot, p.filename), threads=self.threads)
        except EdgelineError as exc:
            self._reject(Reason.MODEL_LOAD, str(exc))
            return
        self._lap("load")
        try:
            model.self_test()
        except SelfTestError as exc:
            self._reject(Reason.NAN if "NaN" in str(exc) else Reason.SELFTEST, str(exc))
            return
        self._lap("selftest")
        self._previous = self.agent.current_model
        errors = error_count(self.agent.counters())
        self.agent.activate(model)
        spec = TrialSpec(
            self.cfg.trial_frames, self.cfg.trial_timeout_s, self.cfg.trial_latency_budget_ms, self.cfg.trial_max_errors
        )
        self._trial = Trial(spec, time.monotonic(), errors)
        self._transition(m.activated(self.record, self.clock()), EventKind.ACTIVATED)

    # -- trial ----------------------------------------------------------------------------------
    def _judge_trial(self) -> None:
        trial = self._trial
        if trial is None or self.record.state != S.TRIAL or self.agent is None:
            return
        verdict = trial.judge(time.monotonic(), error_count(self.agent.counters()))
        if verdict is None:
            return
        self._trial = None
        self._lap("trial")
        p = self.record.pending
        assert p is not None
        if verdict.passed:
            self.disk.point_current(p.slot)
            self._transition(
                m.committed(self.record, self.clock()), EventKind.COMMITTED, pending=p, detail=verdict.detail
            )
        else:
            if self._previous is not None:
                self.agent.activate(self._previous)
            else:  # a first install: there is no previous model to go back to; fail closed
                self._stop_serving(p)
            log.warning("trial of %s v%d failed: %s", p.name, p.version, verdict.detail)
            rec = m.rolled_back(self.record, verdict.reason, verdict.detail, self.clock())
            self._transition(rec, EventKind.ROLLED_BACK, pending=p, reason=verdict.reason, detail=verdict.detail)
        self._previous = None
        self._download = None
        self.disk.clean_downloads()
        if self._deferred is not None:
            payload, retained = self._deferred
            self._deferred = None
            self._offer(payload, retained)

    def _stop_serving(self, p: m.Pending) -> None:
        agent = self.agent
        if isinstance(agent, CanStopServing):
            agent.deactivate()
        else:
            log.error("%s v%d failed its trial; this agent has no deactivate() and keeps serving it", p.name, p.version)

    # -- helpers --------------------------------------------------------------------------------
    def _reject(self, reason: str, detail: str) -> None:
        p = self.record.pending
        if p is None:
            return
        if self._download is not None:
            self._download.cancel()
            self._download = None
        log.warning("update %s v%d rejected: %s: %s", p.name, p.version, reason, detail)
        self.disk.part_path(p.sha256).unlink(missing_ok=True)
        self._transition(
            m.rejected(self.record, reason, detail, self.clock()),
            EventKind.REJECTED,
            pending=p,
            reason=reason,
            detail=detail,
        )

    def _transition(
        self, rec: m.Record, kind: EventKind, *, pending: m.Pending | None = None, reason: str = "", detail: str = ""
    ) -> None:
        self._commit_record(rec)
        timings = dict(self._timings) if kind in (EventKind.COMMITTED, EventKind.ROLLED_BACK) else {}
        self._emit(kind, pending or rec.pending, reason, detail, timings=timings)
        self.reporter.fault(rec.state)

    def _commit_record(self, rec: m.Record, *, must_persist: bool = True) -> None:
        try:
            self.disk.save_record(rec)
        except OSError as exc:
            if must_persist:
                raise
            # a refusal changes no slot and no state (e.g. refused BECAUSE the disk is full): it is
            # reported now and persisted with the next change; lost at a restart, it is decided again
            log.error("updater record not saved (%s); the refusal is reported anyway", exc.strerror)
        self.record = rec
        self._report()

    def _emit(self, kind: EventKind, p: m.Pending | None, reason: str = "", detail: str = "", **kw: Any) -> None:
        self.reporter.emit(kind, self.record, p, reason, detail, **kw)

    def _report_counts(self) -> None:
        """The refusal counts into the device state, at most every STATE_EVERY_S under a flood."""
        if self._counts_dirty and time.monotonic() - self._counts_at >= STATE_EVERY_S:
            self._report()

    def _report(self) -> None:
        self._counts_dirty, self._counts_at = False, time.monotonic()
        model = self.agent.current_model if self.agent is not None else None
        self.reporter.report(self.record, model, self.refusals.counts.as_state())

    def _lap(self, phase: str) -> None:
        now = time.monotonic()
        self._timings[phase] = round(now - self._mark, 6)
        self._mark = now

    def _revocations(self, payload: bytes) -> None:
        try:
            if self.trust.apply_revocations(parse_revocations(payload)):
                self.disk.save_revocations(payload)
                log.info("applied revocation list serial %d", self.trust.revocation_serial)
        except EdgelineError as exc:
            log.warning("revocation list refused: %s", exc)

    # -- startup --------------------------------------------------------------------------------
    def _resend_last(self, rec: m.Record) -> None:
        """A power cut may fall between persisting a transition and storing its event: send the event
        of the record's last transition again, under the same idempotency key (a copy that did go out
        is deduplicated by the outbox or by the receiver)."""
        last = rec.last
        if last is None:
            return
        p = rec.pending if rec.pending is not None and rec.pending.sequence == last.sequence else None
        info = rec.active_info
        if p is None and info is not None and info.sequence == last.sequence and rec.active is not None:
            p = m.Pending(info.sequence, info.name, info.version, info.sha256, 0, rec.active)
        self.reporter.emit(last.kind, rec, p, last.reason, "sent again after a restart", sequence=last.sequence)

    def _serve_committed(self) -> None:
        """Make the committed slot the serving model (after a restart the agent may hold nothing,
        or the bundle it was configured with)."""
        assert self.agent is not None
        info, current = self.record.active_info, self.agent.current_model
        if info is None or self.record.active is None:
            return
        if current is not None and current.manifest.artifact.sha256 == info.sha256:
            return
        try:
            self.agent.activate(self.disk.load_slot(self.record.active, self.trust, self.threads))
        except EdgelineError as exc:
            log.error("committed slot %s cannot serve: %s", self.record.active, exc)


def build_plugin(config: Any) -> UpdaterPlugin | None:
    """Factory used by ``edgeline agent run`` (see ``edge_agent.cli.agent.DEFAULT_PLUGINS``)."""
    from edge_agent.updater.factory import build

    return build(config)
