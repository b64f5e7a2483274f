"""A minimal stand-in for the inspection loop, implementing ``AgentHandle``: it serves whatever model
the updater activates and feeds every frame's result to the plugins. Used where the real agent would
only add camera plumbing (updater tests, the delivery benchmark's 50 simulated devices)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_agent.model import LoadedModel
from edge_agent.plugins import AgentPlugin, FrameResult
from edge_agent.verdict import Verdict, decide


class SimAgent:
    def __init__(self, device_id: str, frames: list[np.ndarray]) -> None:
        self._device_id = device_id
        self.frames = frames
        self._model: LoadedModel | None = None
        self.plugins: list[AgentPlugin] = []
        self.activations: list[str] = []
        self.frames_done = 0
        self.errors = 0
        #: inference "fails" for this model on this device (a health check that fails on the line)
        self.fail_sha: str | None = None
        self._ids = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- AgentHandle -------------------------------------------------------------------------
    @property
    def device_id(self) -> str:
        return self._device_id

    @property
    def current_model(self) -> LoadedModel | None:
        return self._model

    def activate(self, model: LoadedModel) -> None:
        self._model = model
        self.activations.append(model.manifest.artifact.sha256)

    def deactivate(self) -> None:
        self._model = None
        self.activations.append("")

    def local_event(self, kind: str, payload: dict[str, object]) -> None:
        pass

    def counters(self) -> dict[str, object]:
        return {"frames": self.frames_done, "errors": self.errors}

    # -- loop -------------------------------------------------------------------------------
    def add(self, plugin: AgentPlugin) -> None:
        self.plugins.append(plugin)
        plugin.start(self)

    def step(self) -> bool:
        model = self._model
        if model is None:
            return False
        if model.manifest.artifact.sha256 == self.fail_sha:
            self.errors += 1
            return False
        frame = self.frames[self.frames_done % len(self.frames)]
        t0 = time.perf_counter()
        try:
            probs = model.predict_frame(frame)
        except Exception:
            self.errors += 1
            return False
        ms = (time.perf_counter() - t0) * 1000.0
        m = model.manifest
        verdict, label, conf, unc = decide(probs, m.labels, m.thresholds)
        v = Verdict(next(self._ids), verdict, label, conf, unc, m.name, m.version, ms, time.time())
        self.frames_done += 1
        result = FrameResult(v, probs, None, m.artifact.sha256)
        for p in self.plugins:
            p.on_result(result)
        return True

    def run(self, interval: float = 0.01, gate: Callable[[], bool] | None = None) -> None:
        """Feed frames every ``interval`` seconds (only while ``gate()`` says so, when given)."""

        def loop() -> None:
            while not self._stop.is_set():
                if gate is None or gate():
                    self.step()
                    self._stop.wait(interval)
                else:
                    self._stop.wait(max(interval, 0.1))

        self._thread = threading.Thread(target=loop, name=f"sim-{self._device_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for p in self.plugins:
            p.stop()

    def info(self) -> dict[str, Any]:
        return {"model": self._model.manifest.version if self._model else None}
