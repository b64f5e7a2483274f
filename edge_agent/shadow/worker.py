"""The challenger's thread: offered frames under the ``spare_cpu`` policy (idle only, within a CPU
budget, at a lower priority), inspected with the same
``inspect_frame`` as the champion, compared, and forgotten. Its verdicts go nowhere but the counts of
:class:`~edge_agent.shadow.compare.ShadowComparison`: not to the sinks, the line, the plugins or the
API."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.errors import EdgelineError
from edge_agent.inference import inspect_frame, load_and_check, model_info
from edge_agent.model import LoadedModel
from edge_agent.plugins import FrameResult
from edge_agent.shadow.compare import ShadowComparison
from edgeline.core.protocol.signing import TrustStore
from firmware_configs.shadow_section import ShadowSection

log = logging.getLogger(__name__)


class ShadowWorker:
    def __init__(
        self, model: LoadedModel, *, share: float = 1.0, nice: int = 10, max_duty: float = 0.04, burst_s: float = 0.05
    ) -> None:
        self.model = model
        self.share = share
        self.nice = nice
        #: the challenger's CPU budget: at most this share of wall time (a token bucket of ``burst_s``)
        #: - its Python work holds the interpreter lock the champion needs, so a lower priority alone
        #: does not keep the champion's pace
        self.max_duty = max_duty
        self.burst_s = burst_s
        self._tokens = burst_s
        self._refilled = time.monotonic()
        #: frames skipped because the budget was spent
        self.budget_skips = 0
        self.comparison = ShadowComparison()
        self.offered = 0
        self.sampled_out = 0
        #: frames the challenger was still busy for (the spare-CPU policy's skips)
        self.busy_skips = 0
        self.errors = 0
        self._credit = 0.0
        self._slot: tuple[np.ndarray, int, FrameResult] | None = None
        self._cond = threading.Condition()
        self._busy = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, image: np.ndarray, frame_id: int, champion: FrameResult) -> None:
        """From the inspection loop; never blocks. The frame is taken only when its sample comes up and
        the challenger is idle."""
        self.offered += 1
        self._credit += self.share
        if self._credit < 1.0:
            self.sampled_out += 1
            return
        self._credit -= 1.0
        with self._cond:
            if self._busy or self._slot is not None:
                self.busy_skips += 1
                return
            now = time.monotonic()
            self._tokens = min(self.burst_s, self._tokens + (now - self._refilled) * self.max_duty)
            self._refilled = now
            if self._tokens <= 0.0:
                self.budget_skips += 1
                return
            self._slot = (image, frame_id, champion)
            self._cond.notify()

    def _run(self) -> None:
        if self.nice and hasattr(os, "setpriority"):
            try:  # Linux: a thread's own priority (its native id is a task id)
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except OSError as exc:
                log.warning("shadow: cannot lower the challenger's priority: %s", exc)
        while True:
            with self._cond:
                while self._slot is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                image, frame_id, champion = self._slot  # type: ignore[misc]
                self._slot = None
                self._busy = True
            cpu0 = time.thread_time()
            try:
                mine = inspect_frame(self.model, image, frame_id)
            except EdgelineError as exc:
                self.errors += 1
                if self.errors == 1 or self.errors % 100 == 0:
                    log.warning(
                        "shadow: frame %d not inspected by the challenger (%d so far): %s", frame_id, self.errors, exc
                    )
            else:
                c, m = champion.verdict, mine.verdict
                self.comparison.add(
                    (c.verdict, c.label), (m.verdict, m.label), m.confidence, mine.anomaly_logit, m.latency_ms
                )
            finally:
                with self._cond:
                    self._tokens -= time.thread_time() - cpu0
                    self._busy = False

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        return {
            "policy": "spare_cpu",
            "challenger": model_info(self.model),
            "share": self.share,
            "offered": self.offered,
            "sampled_out": self.sampled_out,
            "busy_skips": self.busy_skips,
            "max_duty": self.max_duty,
            "budget_skips": self.budget_skips,
            "errors": self.errors,
            **self.comparison.snapshot(),
        }


def start_challenger(section: ShadowSection, default_trust: Callable[[], TrustStore]) -> ShadowWorker:
    """Verify, load and self-test ``[shadow] bundle`` like any model, and start its thread. Raises the
    bundle's :class:`~edgeline.core.errors.EdgelineError` when it is refused."""
    assert section.bundle is not None
    trust = TrustStore.load(Path(section.trust_file)) if section.trust_file else default_trust()
    model = load_and_check(section.bundle, trust, threads=section.threads, check_expiry=False)
    worker = ShadowWorker(model, share=section.share, nice=section.nice, max_duty=section.max_duty)
    worker.start()
    return worker
