"""The shadow slot: a challenger delivered over the protocol and run beside the serving model.

A shadow deployment is a signed manifest of role ``shadow`` on ``devices/<id>/shadow`` (retained;
an empty message stops the challenger). The slot checks it like any deployment (trust chain,
target, expiry, size, its OWN replay floor: the serving slots' sequence is not touched), downloads
the artifact in chunks into a directory of its own, verifies the whole-file hash, stages it with its
envelope, and starts the challenger in its own process (:class:`~edge_agent.shadow.worker.ShadowWorker`,
which verifies, loads and self-tests the bundle again there). The serving slots A/B, their record and
their link are never written; the challenger's verdicts go only to the comparison's counts.

    <state_dir>/shadow/shadow.json        the slot's record (sequence, model, state)
    <state_dir>/shadow/download/<sha>.part
    <state_dir>/shadow/slot/              the challenger's bundle (model file + manifest.json)

One thread of its own (the challenger's process takes a second or two to start; champion updates
never wait for it). What it does is reported in the retained device state's ``shadow`` block.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edge_agent.bundle import MANIFEST_FILE, sha256_file
from edge_agent.errors import BundleError, EdgelineError, ProtocolError, UpdateRejected
from edge_agent.shadow.worker import ShadowWorker
from edge_agent.updater import machine as m
from edge_agent.updater.checks import verify_offer
from edge_agent.updater.context import UpdaterContext
from edge_agent.updater.download import ChunkDownload
from edgeline.core.fsutil import fsync_dir, write_atomic
from edgeline.core.protocol.delivery import Reason, ShadowSlotState, envelope_bytes, parse_desired
from edgeline.core.protocol.manifest import Manifest
from edgeline.core.protocol.model_ref import ModelRef
from edgeline.core.protocol.signing import Envelope
from firmware_configs.shadow_section import ShadowSection

log = logging.getLogger(__name__)


class ShadowHost(Protocol):
    """The agent, as far as the slot is concerned: where the running challenger is hung."""

    shadow: ShadowWorker | None

    def local_event(self, kind: str, payload: dict[str, object]) -> None: ...


@dataclass(frozen=True)
class _Offer:
    payload: bytes
    retained: bool


@dataclass(frozen=True)
class _Fetched:
    sequence: int


@dataclass(frozen=True)
class _Failed:
    sequence: int
    reason: str
    detail: str


_Cmd = _Offer | _Fetched | _Failed | None


class ShadowSlot:
    def __init__(self, ctx: UpdaterContext, section: ShadowSection | None = None) -> None:
        self.ctx = ctx
        self.section = section or ShadowSection()
        self.root = ctx.disk.state_dir / "shadow"
        self.state = ShadowSlotState(state="stopped")
        self._manifest: Manifest | None = None
        self._envelope: Envelope | None = None
        self._download: ChunkDownload | None = None
        self._q: queue.Queue[_Cmd] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._host: ShadowHost | None = None

    @property
    def record_path(self) -> Path:
        return self.root / "shadow.json"

    @property
    def slot_dir(self) -> Path:
        return self.root / "slot"

    def part_path(self, sha256: str) -> Path:
        return self.root / "download" / f"{sha256}.part"

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, host: ShadowHost) -> None:
        """Restore the slot (a challenger that was running starts again), then listen for shadow
        deployments."""
        self._host = host
        self.root.mkdir(parents=True, exist_ok=True)
        self.state = self._load_record()
        self._thread = threading.Thread(target=self._run, name="edgeline-shadow-slot", daemon=True)
        self._thread.start()
        if self.state.state == "running":
            self._q.put(_Fetched(-1))  # restart the staged challenger on the slot's thread
        if self.state.state != "stopped" or self.record_path.exists():
            self._report()
        self.ctx.link.subscribe(self.ctx.link.topics.device_shadow(self.ctx.me.device_id), self._on_message, 1)

    def stop(self) -> None:
        self._q.put(None)
        if self._thread is not None:
            self._thread.join(10)
        if self._download is not None:
            self._download.cancel()

    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        self._q.put(_Offer(payload, retained))

    def _run(self) -> None:
        while True:
            cmd = self._q.get()
            if cmd is None:
                return
            try:
                match cmd:
                    case _Offer(payload, retained):
                        self._offer(payload, retained)
                    case _Fetched(seq) if seq == -1:
                        self._start_staged()
                    case _Fetched(seq) if seq == self.state.sequence and self.state.state == "downloading":
                        self._stage_and_start()
                    case _Failed(seq, reason, detail) if seq == self.state.sequence:
                        self._refuse(reason, detail, seq)
                    case _:
                        pass  # news of a deployment this slot no longer wants
            except Exception:  # the slot must never take the agent down
                log.exception("shadow slot step failed")

    # -- offers ------------------------------------------------------------------------------------
    def _offer(self, payload: bytes, retained: bool) -> None:
        ctx = self.ctx
        try:
            env = parse_desired(payload)
        except ProtocolError as exc:
            self._refuse(Reason.BAD_MANIFEST, str(exc), 0, keep_running=True)
            return
        if env is None:
            self._stop_challenger("stopped")
            return
        now = ctx.clock()
        try:
            manifest = verify_offer(env, ctx.trust, now)
            if manifest.role != "shadow":
                raise UpdateRejected(Reason.WRONG_TARGET, "a serving deployment on the shadow topic")
            m.check_target(manifest, ctx.me)
            same = manifest.sequence == self.state.sequence and self._is(manifest)
            if same or (retained and manifest.sequence <= self.state.sequence):
                return  # the deployment the slot has (again, e.g. at a reconnect), or a stale retained one
            if manifest.sequence <= self.state.sequence:
                raise UpdateRejected(
                    Reason.REPLAY, f"shadow sequence {manifest.sequence} <= accepted {self.state.sequence}"
                )
            if manifest.is_expired(now):
                raise UpdateRejected(Reason.EXPIRED, "the shadow deployment has expired")
            if manifest.artifact.size > ctx.limits.max_artifact_bytes:
                raise UpdateRejected(
                    Reason.OVERSIZE, f"artifact of {manifest.artifact.size} bytes > {ctx.limits.max_artifact_bytes}"
                )
        except UpdateRejected as r:
            seq = env.body.get("sequence", 0)
            self._refuse(r.reason, r.detail, seq if isinstance(seq, int) and seq >= 0 else 0, keep_running=True)
            return
        if self._download is not None:
            self._download.cancel()
            self._download = None
        self._manifest, self._envelope = manifest, env
        self._set(ShadowSlotState(state="downloading", model=_ref(manifest), sequence=manifest.sequence))
        seq = manifest.sequence
        try:
            shutil.rmtree(self.root / "download", ignore_errors=True)
            dl = ChunkDownload(
                part=self.part_path(manifest.artifact.sha256),
                artifact=manifest.artifact,
                topics=ctx.link.topics,
                sub=ctx.link,
                window=ctx.cfg.chunk_window,
                on_done=lambda: self._q.put(_Fetched(seq)),
                on_fail=lambda reason, detail: self._q.put(_Failed(seq, reason, detail)),
            )
            dl.scan()
        except (ProtocolError, OSError) as exc:
            self._refuse(Reason.IO_ERROR if isinstance(exc, OSError) else Reason.BAD_MANIFEST, str(exc), seq)
            return
        self._download = dl
        dl.start()

    def _is(self, manifest: Manifest) -> bool:
        return self.state.model is not None and self.state.model.sha256 == manifest.artifact.sha256

    # -- staging and the challenger ----------------------------------------------------------------
    def _stage_and_start(self) -> None:
        man, env = self._manifest, self._envelope
        assert man is not None and env is not None
        self._download = None
        part = self.part_path(man.artifact.sha256)
        if not part.exists() or part.stat().st_size != man.artifact.size or sha256_file(part) != man.artifact.sha256:
            self._refuse(
                Reason.HASH_MISMATCH, "the challenger's artifact does not match its signed manifest", man.sequence
            )
            return
        self._stop_challenger(None)  # the slot's directory changes only while nothing runs from it
        try:
            self._stage(part, man, env)
        except (OSError, EdgelineError) as exc:
            self._refuse(Reason.IO_ERROR, f"staging the challenger failed: {exc}", man.sequence)
            return
        self._start_staged()

    def _stage(self, part: Path, man: Manifest, env: Envelope) -> None:
        d = self.slot_dir
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        fd = os.open(part, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(part, d / man.artifact.filename)
        write_atomic(d / MANIFEST_FILE, envelope_bytes(env))  # last: a half-staged slot is no bundle
        fsync_dir(d)

    def _start_staged(self) -> None:
        host = self._host
        assert host is not None
        s = self.section
        worker = ShadowWorker(
            str(self.slot_dir),
            s.trust_file or self.ctx.cfg.trust_file,
            share=s.share,
            nice=s.nice,
            threads=s.threads,
            max_duty=s.max_duty,
            max_fps=s.max_fps,
            idle=s.idle_class,
            yield_when_behind=s.yield_when_behind,
        )
        try:
            worker.start()
        except BundleError as exc:
            reason = Reason.SELFTEST if "self-test" in str(exc).lower() else Reason.MODEL_LOAD
            self._refuse(reason, str(exc), self.state.sequence)
            return
        old, host.shadow = host.shadow, worker  # the inspection loop reads it once per frame
        if old is not None:
            old.stop()
        self._set(self.state.model_copy(update={"state": "running", "reason": "", "detail": "", "refused_sequence": 0}))
        host.local_event("shadow_started", {"challenger": worker.challenger, "sequence": self.state.sequence})
        log.info("shadow: challenger %s running beside the serving model", worker.challenger)

    def _stop_challenger(self, final: str | None) -> None:
        host = self._host
        if self._download is not None:
            self._download.cancel()
            self._download = None
        if host is not None and host.shadow is not None:
            old, host.shadow = host.shadow, None
            old.stop()
            host.local_event("shadow_stopped", {"challenger": old.challenger})
        if final is not None and self.state.state != "stopped":
            shutil.rmtree(self.slot_dir, ignore_errors=True)
            self._set(self.state.model_copy(update={"state": "stopped", "reason": "", "detail": ""}))

    def _refuse(self, reason: str, detail: str, sequence: int, *, keep_running: bool = False) -> None:
        """Shadow deployment ``sequence`` refused. ``keep_running``: an offer refused before it was
        accepted leaves a running challenger as it is; one refused after (download, hash, load)
        leaves none."""
        log.warning("shadow deployment %d refused: %s: %s", sequence, reason, detail)
        if self._host is not None:
            self._host.local_event(
                "shadow_refused", {"sequence": sequence, "reason": str(reason), "detail": detail[:300]}
            )
        why = {"reason": str(reason)[:64], "detail": detail[:500], "refused_sequence": sequence}
        if keep_running and self.state.state == "running":
            self._set(self.state.model_copy(update=why))
            return
        if self._download is not None:
            self._download.cancel()
            self._download = None
        self._set(self.state.model_copy(update={"state": "refused", **why}))

    # -- record and report -------------------------------------------------------------------------
    def _set(self, state: ShadowSlotState) -> None:
        self.state = state
        write_atomic(self.record_path, json.dumps(state.model_dump(mode="json")).encode())
        self._report()

    def _report(self) -> None:
        try:
            self.ctx.link.update_state(shadow=self.state)
        except EdgelineError as exc:  # the retained state is sent again with the next change
            log.warning("shadow: state not published: %s", exc)

    def _load_record(self) -> ShadowSlotState:
        try:
            data: Any = json.loads(self.record_path.read_bytes())
            return ShadowSlotState.model_validate(data)
        except FileNotFoundError:
            return ShadowSlotState(state="stopped")
        except (OSError, ValueError) as exc:
            log.warning("shadow: unreadable %s, the slot starts empty: %s", self.record_path, exc)
            return ShadowSlotState(state="stopped")


def _ref(manifest: Manifest) -> ModelRef:
    return ModelRef(name=manifest.name, version=manifest.version, sha256=manifest.artifact.sha256)
