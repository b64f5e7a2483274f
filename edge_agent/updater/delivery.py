"""A deployment from offer to staged slot: accept or refuse the offer, download the artifact in
chunks (resuming what is on disk), verify it against the signed manifest, stage it into the spare
slot, and hand it to :mod:`.activation`. Any failure rejects the deployment and keeps the serving
model."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from edge_agent.bundle import sha256_file
from edge_agent.errors import EdgelineError, ProtocolError, UpdateRejected
from edge_agent.updater import machine as m
from edge_agent.updater.activation import Activation
from edge_agent.updater.checks import verify_offer
from edge_agent.updater.commands import Command, Downloaded, DownloadFailed
from edge_agent.updater.context import InFlight, UpdaterContext
from edge_agent.updater.download import ChunkDownload
from edge_agent.updater.keeper import RecordKeeper
from edge_agent.updater.offer import Refusal, triage
from edgeline.core.protocol.delivery import EventKind, Reason
from edgeline.core.protocol.delivery import UpdaterState as S
from edgeline.core.protocol.manifest import Manifest
from edgeline.core.protocol.signing import parse_envelope

log = logging.getLogger(__name__)


class Delivery:
    def __init__(
        self,
        ctx: UpdaterContext,
        keeper: RecordKeeper,
        flight: InFlight,
        activation: Activation,
        enqueue: Callable[[Command], None],
    ) -> None:
        self.ctx = ctx
        self.keeper = keeper
        self.flight = flight
        self.activation = activation
        self.enqueue = enqueue

    # -- offer ----------------------------------------------------------------------------------
    def offer(self, payload: bytes, retained: bool) -> None:
        ctx, keeper = self.ctx, self.keeper
        now = ctx.clock()
        got = triage(payload, retained, keeper.record, ctx.trust, ctx.me, now)
        if isinstance(got, Refusal):
            keeper.refuse_once(got)
            return
        if got is None:
            return
        if keeper.record.state == S.TRIAL:
            self.flight.deferred = (payload, retained)  # taken up when the trial ends
            return
        env, manifest = got.envelope, got.manifest
        if keeper.record.state in m.IN_FLIGHT:
            self.reject(Reason.SUPERSEDED, f"deployment {manifest.sequence} replaced it")
        rec = m.accept_sequence(keeper.record, manifest)
        try:
            outcome = m.check_policy(
                rec, manifest, now=now, limits=ctx.limits, free_bytes=ctx.free_disk(ctx.disk.state_dir)
            )
        except UpdateRejected as r:
            keeper.commit(m.refused_offer(rec, manifest.sequence, r.reason, r.detail, now), must_persist=False)
            keeper.emit(EventKind.REJECTED, m.pending_of(manifest), r.reason, r.detail, sequence=manifest.sequence)
            return
        if outcome == m.OfferOutcome.ALREADY_ACTIVE:
            keeper.commit(m.already_active(rec, manifest, now))
            seq = manifest.sequence
            keeper.emit(EventKind.COMMITTED, m.pending_of(manifest), detail="already active", sequence=seq)
            return
        self.flight.envelope, self.flight.manifest = env, manifest
        self.flight.restart_timings()
        begun = m.begin(rec, manifest, now, env.model_dump(mode="json"))
        # subscribe to the chunks first, persist the record while the broker already sends them: the
        # persist (two fsyncs) used to hold back the download's first packet. Chunks may land in the
        # part file before the record is durable; that is harmless: after a power cut the part file is
        # re-scanned against the signed hashes when the offer comes again, and one that no offer wants
        # is removed here at the next one. No later transition and no event goes out before the record
        # is durable (they run on this worker, after it).
        assert begun.pending is not None
        ctx.disk.clean_downloads(keep=begun.pending.sha256)
        dl = self._open_download(begun.pending)
        try:
            keeper.transition(begun, EventKind.DOWNLOADING)
        except BaseException:
            if dl is not None:  # not recorded: nothing may download for it
                dl.cancel()
                self.flight.download = None
            raise
        if dl is None:  # the part file could not be opened: rejected now that the offer is recorded
            self._start_download()
        elif dl.stats.resumed_with:
            self._emit_resumed(begun.pending, dl)

    def after_trial(self) -> None:
        """Take up the offer that came during the trial, if any."""
        if self.flight.deferred is not None:
            payload, retained = self.flight.deferred
            self.flight.deferred = None
            self.offer(payload, retained)

    # -- download / verify / stage --------------------------------------------------------------
    def resume(self, step: m.Resume) -> None:
        p = self.keeper.record.pending
        assert p is not None
        flight = self.flight
        try:
            flight.envelope = parse_envelope(p.envelope)
            flight.manifest = verify_offer(flight.envelope, self.ctx.trust, self.ctx.clock())
        except (EdgelineError, OSError) as exc:
            reason = exc.reason if isinstance(exc, UpdateRejected) else Reason.IO_ERROR
            self.reject(reason, f"cannot resume: {exc}")
            return
        flight.mark = time.monotonic()
        if step == m.Resume.DOWNLOAD:
            self._start_download()
        elif step == m.Resume.STAGE:
            self.verify()
        else:
            self._load()

    def _open_download(self, p: m.Pending) -> ChunkDownload | None:
        """Create, scan and start the download of ``p`` (subscribe to what is missing); None when the
        part file cannot be opened (left to :meth:`_start_download`, which rejects the update)."""
        man = self.flight.manifest
        assert man is not None
        try:
            dl = self._new_download(p, man)
            dl.scan()
        except (ProtocolError, OSError):
            return None
        self.flight.download = self.flight.last_download = dl
        dl.start()
        return dl

    def _emit_resumed(self, p: m.Pending, dl: ChunkDownload) -> None:
        progress = {"have": dl.stats.resumed_with, "total": dl.total}
        self.keeper.emit(EventKind.DOWNLOADING, p, detail="resumed", progress=progress)

    def _new_download(self, p: m.Pending, man: Manifest) -> ChunkDownload:
        ctx = self.ctx
        part = ctx.disk.part_path(p.sha256)
        if not part.exists() and (local := ctx.disk.find_local(p.sha256, self.keeper.record.slots)) is not None:
            ctx.disk.copy_into_part(local, part)
        seq = p.sequence
        return ChunkDownload(
            part=part,
            artifact=man.artifact,
            topics=ctx.link.topics,
            sub=ctx.link,
            window=ctx.cfg.chunk_window,
            on_done=lambda: self.enqueue(Downloaded(seq)),
            on_fail=lambda reason, detail: self.enqueue(DownloadFailed(seq, reason, detail)),
            pause_after=ctx.cfg.faults.pause_after_chunks,
            pause_s=ctx.cfg.faults.pause_s,
            on_pause=lambda have: self.keeper.reporter.marker(f"chunks:{have}"),
        )

    def _start_download(self) -> None:
        p, man = self.keeper.record.pending, self.flight.manifest
        assert p is not None and man is not None
        try:
            dl = self._new_download(p, man)
            have = dl.scan()
        except (ProtocolError, OSError) as exc:
            self.reject(Reason.BAD_MANIFEST if isinstance(exc, ProtocolError) else Reason.IO_ERROR, str(exc))
            return
        self.flight.download = self.flight.last_download = dl
        if have:
            self._emit_resumed(p, dl)
        dl.start()

    def verify(self) -> None:
        keeper, flight, disk = self.keeper, self.flight, self.ctx.disk
        p = keeper.record.pending
        assert p is not None and flight.envelope is not None
        flight.lap("download")
        part = disk.part_path(p.sha256)
        resumed = keeper.record.state == S.VERIFIED
        if not resumed or part.exists():
            size = part.stat().st_size if part.exists() else -1
            if size != p.size and not resumed:
                self.reject(Reason.LENGTH_MISMATCH, f"artifact is {size} bytes, manifest says {p.size}")
                return
            # every chunk matched its signed hash as it landed: that pins every byte, so the whole-file
            # hash is left to staging (which checks it before anything is loaded); otherwise hash it now
            dl = flight.download
            by_chunks = dl is not None and dl.art.sha256 == p.sha256 and dl.complete and not resumed
            if size != p.size or (not by_chunks and sha256_file(part) != p.sha256):
                if resumed:  # the verified file did not survive the restart intact: fetch what is missing
                    keeper.transition(m.reverify_failed(keeper.record, self.ctx.clock()), EventKind.DOWNLOADING)
                    self._start_download()
                else:
                    self.reject(Reason.HASH_MISMATCH, "artifact sha256 does not match the signed manifest")
                return
            flight.lap("verify")
        if not resumed:
            keeper.transition(m.verified(keeper.record, self.ctx.clock()), EventKind.VERIFIED)
        try:
            disk.stage(p.slot, part, p.filename, p.sha256, flight.envelope)
        except (EdgelineError, OSError) as exc:
            self.reject(Reason.IO_ERROR, f"staging failed: {exc}")
            return
        flight.lap("stage")
        keeper.transition(m.staged(keeper.record, self.ctx.clock()), EventKind.STAGED)
        self._load()

    def _load(self) -> None:
        refused = self.activation.load()
        if refused is not None:
            self.reject(*refused)

    def reject(self, reason: str, detail: str) -> None:
        p = self.keeper.record.pending
        if p is None:
            return
        if self.flight.download is not None:
            self.flight.download.cancel()
            self.flight.download = None
        log.warning("update %s v%d rejected: %s: %s", p.name, p.version, reason, detail)
        self.ctx.disk.part_path(p.sha256).unlink(missing_ok=True)
        self.keeper.transition(
            m.rejected(self.keeper.record, reason, detail, self.ctx.clock()),
            EventKind.REJECTED,
            pending=p,
            reason=reason,
            detail=detail,
        )
