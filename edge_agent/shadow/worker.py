"""The challenger beside the champion: offered frames under the ``spare_cpu`` policy (only when it is
idle, within a CPU budget), inspected in the challenger's own process at a lower priority
(:mod:`edge_agent.shadow.child`) with the same ``inspect_frame`` as the champion, compared, and
forgotten. Its verdicts go nowhere but the counts of :class:`~edge_agent.shadow.compare.ShadowComparison`:
not to the sinks, the line, the plugins or the API. Frames go to the child through shared memory on
this device and nowhere else."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import threading
import time
from collections.abc import Callable
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import BundleError, EdgelineError
from edge_agent.plugins import FrameResult
from edge_agent.shadow.child import child_main
from edge_agent.shadow.compare import ShadowComparison
from edge_agent.shadow.window import ShadowCounts
from edge_agent.telemetry.windows import DriftContext, ModelKey, context_of
from firmware_configs.shadow_section import ShadowSection

log = logging.getLogger(__name__)

#: depth of the frame-rate cap's bucket, in frames
RATE_BURST = 2.0


class ShadowWorker:
    """The parent's side: a thread that hands offered frames to the challenger's process and counts
    the comparison. Waiting for the child releases the interpreter lock."""

    def __init__(
        self,
        bundle: str,
        trust_file: str,
        *,
        share: float = 1.0,
        nice: int = 10,
        threads: int = 1,
        max_duty: float = 0.5,
        burst_s: float = 0.05,
        max_fps: float = 60.0,
        idle: bool = True,
        yield_when_behind: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bundle = bundle
        self.trust_file = trust_file
        self.share = share
        self.nice = nice
        self.threads = threads
        #: the challenger's CPU at most this share of wall time (a token bucket of ``burst_s``)
        self.max_duty = max_duty
        self.burst_s = burst_s
        #: at most this many frames a second go to the challenger (each handover costs the champion's
        #: process a copy and two messages, whatever the challenger's own cost)
        self.max_fps = max_fps
        #: the challenger's process in the SCHED_IDLE class (Linux)
        self.idle = idle
        #: skip a frame while others wait in the champion's queue: the line is behind, no CPU is spare
        self.yield_when_behind = yield_when_behind
        self.clock = clock
        #: the frame-rate cap as a token bucket (RATE_BURST frames deep): a frame that comes a little
        #: early (camera jitter) still goes, and the long-run rate stays at most max_fps
        self._frames_due = 1.0
        self._rate_at = clock()
        #: frames skipped because the last handover was less than 1/max_fps ago
        self.rate_skips = 0
        #: frames skipped because the champion had frames queued behind this one
        self.behind_skips = 0
        self._tokens = burst_s
        self._refilled = clock()
        self.challenger: dict[str, object] | None = None
        self.comparison = ShadowComparison()
        self.offered = 0
        self.sampled_out = 0
        #: frames the challenger was still busy for (the spare-CPU policy's skips)
        self.busy_skips = 0
        #: frames skipped because the budget was spent
        self.budget_skips = 0
        self.errors = 0
        #: the challenger's drift reference (from its manifest), for the telemetry windows
        self.context: DriftContext | None = None
        self._skips_taken = 0
        self._errors_taken = 0
        self._credit = 0.0
        self._slot: tuple[np.ndarray, int, FrameResult] | None = None
        self._cond = threading.Condition()
        self._busy = False
        self._stop = False
        self._shm: shared_memory.SharedMemory | None = None
        self._conn: Connection | None = None
        self._proc: BaseProcess | None = None
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)

    def start(self, timeout_s: float = 120.0) -> None:
        """Spawn the challenger's process and wait until it has loaded the bundle. Raises
        :class:`~edge_agent.errors.BundleError` with its reason when it refused it."""
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=child_main,
            args=(child, self.bundle, self.trust_file, self.threads, self.nice, self.idle),
            name="edgeline-shadow",
            daemon=True,
        )
        self._proc.start()
        child.close()
        self._conn = parent
        if not parent.poll(timeout_s):
            self.stop()
            raise BundleError(f"the challenger {self.bundle} did not load within {timeout_s:.0f} s")
        try:
            kind, detail = parent.recv()
        except EOFError as exc:
            self.stop()
            raise BundleError(f"the challenger's process ended while loading {self.bundle}") from exc
        if kind != "ready":
            self.stop()
            raise BundleError(str(detail), reason="shadow_refused")
        self.challenger = detail
        self.context = _context(self.bundle)
        self._thread.start()

    def offer(self, image: np.ndarray, frame_id: int, champion: FrameResult, backlog: int = 0) -> None:
        """From the inspection loop; never blocks. The frame is taken only when its sample comes up,
        while no other frame waits for the champion (``backlog``: frames queued behind this one), at
        most ``max_fps`` a second, while the challenger is idle and within its budget."""
        self.offered += 1
        self._credit += self.share
        if self._credit < 1.0:
            self.sampled_out += 1
            return
        self._credit -= 1.0
        if backlog > 0 and self.yield_when_behind:
            self.behind_skips += 1
            return
        now = self.clock()
        self._frames_due = min(RATE_BURST, self._frames_due + (now - self._rate_at) * self.max_fps)
        self._rate_at = now
        if self._frames_due < 1.0:
            self.rate_skips += 1
            return
        with self._cond:
            if self._busy or self._slot is not None:
                self.busy_skips += 1
                return
            self._tokens = min(self.burst_s, self._tokens + (now - self._refilled) * self.max_duty)
            self._refilled = now
            if self._tokens <= 0.0:
                self.budget_skips += 1
                return
            self._slot = (image, frame_id, champion)
            self._frames_due -= 1.0
            self._cond.notify()

    def _frame_memory(self, nbytes: int) -> shared_memory.SharedMemory:
        if self._shm is None or self._shm.size < nbytes:
            if self._shm is not None:
                self._shm.close()
                self._shm.unlink()
            self._shm = shared_memory.SharedMemory(create=True, size=nbytes)
        return self._shm

    def _run(self) -> None:
        assert self._conn is not None
        while True:
            with self._cond:
                while self._slot is None and not self._stop:
                    self._cond.wait()
                if self._stop or self._slot is None:
                    return
                image, frame_id, champion = self._slot
                self._slot = None
                self._busy = True
            try:
                img = np.ascontiguousarray(image)
                shm = self._frame_memory(img.nbytes)
                np.ndarray(img.shape, dtype=img.dtype, buffer=shm.buf)[...] = img
                self._conn.send(("frame", shm.name, img.shape, img.dtype.str, frame_id))
                answer = self._conn.recv()
            except (EOFError, OSError) as exc:
                log.warning("shadow: the challenger's process is gone (%s); shadow stopped", exc)
                with self._cond:
                    self._stop = True
                    self._busy = False
                return
            cpu = float(answer[-1])
            if answer[0] == "error":
                self.errors += 1
                if self.errors == 1 or self.errors % 100 == 0:
                    log.warning(
                        "shadow: frame %d refused by the challenger (%d so far): %s", frame_id, self.errors, answer[1]
                    )
            else:
                _, verdict, label, confidence, logit, latency_ms, _cpu = answer
                c = champion.verdict
                self.comparison.add((c.verdict, c.label), (verdict, label), confidence, logit, latency_ms)
            with self._cond:
                self._tokens -= cpu
                self._busy = False

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._conn is not None:
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(None)
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            self._proc.join(timeout)
            if self._proc.is_alive():
                self._proc.kill()
            self._proc = None
        if self._shm is not None:
            self._shm.close()
            self._shm.unlink()
            self._shm = None

    def take_window(self) -> ShadowCounts | None:
        """The comparison since the last telemetry window closed (None before the challenger is
        ready): compared frames with their counts, and the frames skipped and refused meanwhile."""
        c = self.challenger
        if c is None:
            return None
        counts = self.comparison.take_window()
        skips = self.sampled_out + self.busy_skips + self.budget_skips + self.rate_skips + self.behind_skips
        errors = self.errors
        counts.skipped, self._skips_taken = skips - self._skips_taken, skips
        counts.errors, self._errors_taken = errors - self._errors_taken, errors
        counts.challenger = ModelKey(str(c["name"]), int(str(c["version"])), str(c["sha256"]))
        counts.ctx = self.context
        return counts

    def stats(self) -> dict[str, Any]:
        return {
            "policy": "spare_cpu",
            "challenger": self.challenger,
            "share": self.share,
            "offered": self.offered,
            "sampled_out": self.sampled_out,
            "busy_skips": self.busy_skips,
            "max_duty": self.max_duty,
            "budget_skips": self.budget_skips,
            "max_fps": self.max_fps,
            "idle_class": self.idle,
            "rate_skips": self.rate_skips,
            "yield_when_behind": self.yield_when_behind,
            "behind_skips": self.behind_skips,
            "errors": self.errors,
            **self.comparison.snapshot(),
        }


def start_challenger(section: ShadowSection, trust_file: str) -> ShadowWorker:
    """Start ``[shadow] bundle`` in its own process (verified, loaded and self-tested there like any
    model). Raises :class:`~edge_agent.errors.BundleError` when it is refused."""
    assert section.bundle is not None
    worker = ShadowWorker(
        section.bundle,
        section.trust_file or trust_file,
        share=section.share,
        nice=section.nice,
        threads=section.threads,
        max_duty=section.max_duty,
        max_fps=section.max_fps,
        idle=section.idle_class,
        yield_when_behind=section.yield_when_behind,
    )
    worker.start()
    return worker


def _context(bundle: str) -> DriftContext | None:
    """The challenger's drift reference, read from its manifest (the child verified the bundle)."""
    from edge_agent.bundle import read_envelope
    from edgeline.core.protocol.manifest import parse_manifest
    from edgeline.core.protocol.signing import parse_envelope

    try:
        return context_of(parse_manifest(parse_envelope(read_envelope(Path(bundle))).body))
    except (EdgelineError, OSError) as exc:
        log.warning("shadow: no drift reference for the challenger (%s)", exc)
        return None
