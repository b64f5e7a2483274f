"""The agent: camera source → bounded frame queue → inspection loop → sinks and plugins.

Threads per agent: the source reader, the inspection loop, one per sink, the status writer, and the
local API when enabled. Everything lives on the :class:`Agent` instance (no module state), so many
agents can run in one process (``edgeline agent simulate``).

Hot swap: the loop reads ``self._model`` ONCE per frame, and :meth:`Agent.activate` replaces it with a
single reference assignment. A new model is loaded and self-tested in the background
(:meth:`Agent.load_in_background`) before it is handed over, so no frame waits for a load, none is
dropped for the swap, and none is served by a half-loaded model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from enum import StrEnum
from pathlib import Path
from typing import Any

from edge_agent.counters import AgentCounters
from edge_agent.decision import with_decision
from edge_agent.errors import EdgelineError, SelfTestError
from edge_agent.frame_queue import FrameQueue
from edge_agent.inference import inspect_frame, load_and_check, model_info, verdict_record
from edge_agent.line.bus import ResultBus
from edge_agent.line.station import RingingQueue, TriggerStation
from edge_agent.model import LoadedModel
from edge_agent.plugins import AgentPlugin
from edge_agent.shadow.worker import ShadowWorker, start_challenger
from edge_agent.sinks import SinkWorker, build_sinks
from edge_agent.source_state import Backoff, SourceState
from edge_agent.sources import Capture, Frame, SourceReader, build_capture
from edge_agent.stations.liveness import Heartbeat
from edge_agent.status import StatusWriter
from edge_agent.status_document import status_document
from edgeline.core.protocol.signing import TrustStore
from firmware_configs.remote_config_section import DecisionSection
from firmware_configs.schema import DeviceConfig

__all__ = ["Agent", "AgentState", "load_and_check"]

log = logging.getLogger(__name__)

#: While frames arrive without a model, remind the line this often (seconds).
NO_MODEL_REMINDER_S = 60.0


class AgentState(StrEnum):
    CREATED = "CREATED"
    STARTING = "STARTING"
    NO_MODEL = "NO_MODEL"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"


class Agent:
    """One inspection agent. Implements :class:`edge_agent.plugins.AgentHandle`."""

    def __init__(
        self,
        config: DeviceConfig,
        *,
        plugins: Sequence[AgentPlugin] = (),
        capture: Capture | None = None,
        sinks: list[SinkWorker] | None = None,
        model: LoadedModel | None = None,
        trust: TrustStore | None = None,
        write_status: bool = True,
    ) -> None:
        self.config = config
        self.plugins = list(plugins)
        self._trust = trust
        #: the model as delivered, and as it serves (under ``[decision]``, the device's own thresholds)
        self._served: LoadedModel | None = model
        self._model: LoadedModel | None = None if model is None else with_decision(model, config.decision)
        self._swap_lock = threading.Lock()
        #: why the agent stopped to start again (a remote config that needs a restart); empty otherwise
        self.restart_requested = ""
        self.state = AgentState.CREATED
        self.counters_ = AgentCounters(config.inference.latency_window)
        self.sinks = build_sinks(config.sinks, config.device.id) if sinks is None else sinks
        #: the one publish path: the sinks, then the line interfaces (added at start)
        self.bus = ResultBus(self.sinks)
        src = config.source
        #: triggered inspection (``[source] mode = "trigger"``); None in free-run
        self.station: TriggerStation | None = None
        if src.mode == "trigger":
            self.station = TriggerStation(
                config.trigger, config.device.id, self.bus.publish, lambda: model_info(self._model)
            )
            self.queue: FrameQueue[Frame] = RingingQueue(src.queue_size, src.policy, self.station.bell)
        else:
            self.queue = FrameQueue(src.queue_size, src.policy)
        #: the line's interfaces (TCP line, Modbus, OPC UA), built at start
        self.line: Any = None
        self.reader = SourceReader(
            capture or build_capture(src),
            self.queue,
            loop=src.loop,
            max_fps=src.max_fps,
            backoff=Backoff(src.reconnect_min_s, src.reconnect_max_s),
            max_reconnects=src.max_reconnects,
            on_state=self._on_camera_state,
            name=f"source-{config.device.id}",
        )
        self.status_writer = (
            StatusWriter(Path(config.status.path), self.counters, config.status.interval_s) if write_status else None
        )
        self.api: Any = None
        self._api_outlet: SinkWorker | None = None
        #: the challenger of ``[shadow]`` (None when off or refused); never acted on
        self.shadow: ShadowWorker | None = None
        #: operator feedback (``[feedback]``: :mod:`edge_agent.feedback`), opened at start
        self.feedback: Any = None
        self._feedback_outlet: Any = None
        self.last_rejection = ""
        self._no_model_told = -1e18
        #: the loop's rounds, for the station supervisor's hang watch (edge_agent.stations.liveness)
        self.heartbeat = Heartbeat()
        self._loop_thread = threading.Thread(target=self._loop, name=f"inspect-{config.device.id}", daemon=True)
        self._done = threading.Event()
        self._stop_lock = threading.Lock()
        self._first_verdict_at: float | None = None
        #: free-run verdicts carry ``result_id = <device>-<boot>-f<frame_id>`` when ``[feedback]`` is on
        self._result_boot = f"{time.time_ns() // 1_000_000:x}"
        self.shadow_refused = ""
        self._started_at: float | None = None

    # -- AgentHandle ---------------------------------------------------------------------------------
    @property
    def device_id(self) -> str:
        return self.config.device.id

    @property
    def current_model(self) -> LoadedModel | None:
        return self._model

    def activate(self, model: LoadedModel) -> None:
        """Serve ``model`` from the next frame on (one reference assignment between two frames)."""
        with self._swap_lock:
            old = self._model
            self._served = model
            self._model = with_decision(model, self.config.decision)
        self.counters_.bump("models_activated")
        if self.state is AgentState.NO_MODEL:
            self.state = AgentState.RUNNING
        m = model.manifest
        log.info(
            "%s: serving %s v%d (was %s)",
            self.device_id,
            m.name,
            m.version,
            f"{old.manifest.name} v{old.manifest.version}" if old else "no model",
        )
        self.local_event("model_activated", {"model": model_info(model)})

    def deactivate(self) -> None:
        """Stop serving (fail closed): from the next frame on, frames are counted, not inspected."""
        with self._swap_lock:
            old, self._model, self._served = self._model, None, None
        if old is None:
            return
        if self.state is AgentState.RUNNING:
            self.state = AgentState.NO_MODEL
        log.warning("%s: stopped serving %s v%d", self.device_id, old.manifest.name, old.manifest.version)
        self.local_event("no_model", {"detail": f"{old.manifest.name} v{old.manifest.version} is no longer served"})

    # -- remote configuration (edge_agent.remote_config) ----------------------------------------------
    def set_decision(self, decision: DecisionSection) -> None:
        """Decide with these thresholds from the next frame on (the served model, re-decided)."""
        with self._swap_lock:
            self.config = self.config.model_copy(update={"decision": decision})
            if self._served is not None:
                self._model = with_decision(self._served, decision)

    def replace_sinks(self, sinks: list[SinkWorker]) -> None:
        """Publish to ``sinks`` from the next record on (one list assignment; the caller starts the
        new workers before and closes the ones left out after)."""
        self.sinks = sinks
        self.bus.sinks = sinks

    def request_restart(self, reason: str) -> None:
        """Stop, so that ``edgeline agent run`` starts the agent again (with the configuration on trial)."""
        self.restart_requested = reason
        threading.Thread(target=self.stop, name=f"restart-{self.device_id}", daemon=True).start()

    def local_event(self, kind: str, payload: dict[str, object]) -> None:
        rec: dict[str, object] = {"type": "event", "device": self.device_id, "kind": kind, "ts": time.time()}
        rec.update(payload)
        self.bus.publish(rec)

    def trigger(self, part_id: str = "", ts: float | None = None, origin: str = "") -> Any:
        """Ask for one triggered inspection (any interface, the local API included); returns the
        :class:`~edge_agent.line.matcher.Trigger`, or None in free-run mode."""
        return None if self.station is None else self.station.submit(part_id, ts, origin)

    def counters(self) -> dict[str, Any]:
        """The agent's status document (the status file, ``/status`` and ``/metrics`` read it)."""
        return status_document(self)

    # -- models ---------------------------------------------------------------------------------------
    def trust(self) -> TrustStore:
        if self._trust is None:
            self._trust = TrustStore.load(Path(self.config.trust_file))
        return self._trust

    def load_in_background(self, bundle_dir: str | Path, trust: TrustStore | None = None) -> Future[LoadedModel]:
        """Verify, load and self-test a bundle on a worker thread; activate it only if all passed.
        The returned future holds the model, or the error that refused it (the old model keeps serving)."""
        fut: Future[LoadedModel] = Future()

        def work() -> None:
            try:
                model = load_and_check(bundle_dir, trust or self.trust(), threads=self.config.inference.threads)
            except EdgelineError as exc:
                self._reject(str(bundle_dir), exc)
                fut.set_exception(exc)
                return
            except Exception as exc:  # never let a loader bug take the agent down
                log.exception("loading %s crashed", bundle_dir)
                self._reject(str(bundle_dir), exc)
                fut.set_exception(exc)
                return
            self.activate(model)
            fut.set_result(model)

        threading.Thread(target=work, name=f"load-{self.device_id}", daemon=True).start()
        return fut

    def _reject(self, where: str, exc: BaseException) -> None:
        self.counters_.bump("models_rejected")
        reason = "selftest_failed" if isinstance(exc, SelfTestError) else type(exc).__name__
        self.last_rejection = f"{where}: {exc}"
        log.error("%s: model %s refused (%s): %s", self.device_id, where, reason, exc)
        self.local_event("model_rejected", {"bundle": where, "reason": reason, "detail": str(exc)[:300]})

    def _load_initial(self) -> None:
        bundle = self.config.model.bundle
        if self._model is not None or not bundle:
            return
        if not Path(bundle, "manifest.json").is_file():
            log.warning("%s: no initial bundle at %s; waiting for a model", self.device_id, bundle)
            return
        try:
            model = load_and_check(
                bundle,
                self.trust(),
                threads=self.config.inference.threads,
                check_expiry=not self.config.model.allow_expired,
            )
        except EdgelineError as exc:
            self._reject(bundle, exc)
            return
        self.activate(model)

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every thread and return. Plugins' ``start`` runs before the first frame."""
        if self.state is not AgentState.CREATED:
            raise EdgelineError(f"agent {self.device_id} was already started")
        self._started_at = time.monotonic()
        self.state = AgentState.STARTING
        for s in self.sinks:
            s.start()
        if self.config.feedback.enabled:  # before the plugins (telemetry reads it) and the interfaces
            from edge_agent.feedback.service import attach

            self.feedback, self._feedback_outlet = attach(self)
        self._load_initial()
        for p in self.plugins:
            try:
                p.start(self)
            except Exception:
                self.counters_.plugin_error(getattr(p, "name", type(p).__name__))
                log.exception("plugin %s failed to start", getattr(p, "name", p))
        if self._model is None:
            self.state = AgentState.NO_MODEL
            self.local_event("no_model", {"detail": "no model yet; frames are counted, not inspected"})
        else:
            self.state = AgentState.RUNNING
        if self.config.shadow.enabled and self.shadow is None:  # refused: the agent runs without it
            try:
                worker = start_challenger(self.config.shadow, self.config.trust_file)
                if self.shadow is not None:  # a delivered challenger (the shadow slot) came first: it wins
                    worker.stop()
                else:
                    self.shadow = worker
                    self.local_event("shadow_started", {"challenger": worker.challenger})
            except EdgelineError as exc:
                self.shadow_refused = f"{type(exc).__name__}: {exc}"
                log.warning("%s: shadow challenger refused: %s", self.device_id, exc)
                self.local_event("shadow_refused", {"detail": self.shadow_refused})
        if self.config.line.any_enabled:
            from edge_agent.line.interfaces import LineInterfaces

            self.line = LineInterfaces(self)
            self.line.start()
            for w in self.line.workers:
                self.bus.add(w)
        if self.config.api.enabled:
            from edge_agent.http_api import PredictionApi

            self.api = PredictionApi(self, self.config.api)
            self.api.start()
            if self.station is not None:  # POST /trigger callers that wait get their result from the bus
                self._api_outlet = SinkWorker(self.api.waiters, queue_size=256, include="all", events=False)
                self._api_outlet.start()
                self.bus.add(self._api_outlet)
        if self.status_writer is not None:
            self.status_writer.start()
        self._loop_thread.start()
        self.reader.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reading, inspect what is queued, flush the sinks, stop plugins, write the final status."""
        if self.state in (AgentState.STARTING, AgentState.RUNNING, AgentState.NO_MODEL):
            self.state = AgentState.STOPPING
        self.reader.stop()
        if self._loop_thread.is_alive():
            self._loop_thread.join(timeout)
        self._finish()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the agent finished (the source ended or failed, or :meth:`stop` ran)."""
        return self._done.wait(timeout)

    def run(self) -> int:
        """Start and block until the source ends or :meth:`stop` is called. Returns an exit code."""
        self.start()
        self.wait()
        self._finish()
        return 1 if self.state is AgentState.FAILED else 0

    def _finish(self) -> None:
        with self._stop_lock:
            if self.state in (AgentState.STOPPED, AgentState.FAILED) and self._done.is_set():
                return
            self.reader.stop()  # joins the reader, so its last camera event reaches the sinks
            failed = self.reader.machine.state is SourceState.FAILED
            for p in self.plugins:
                try:
                    p.stop()
                except Exception:
                    self.counters_.plugin_error(getattr(p, "name", type(p).__name__))
                    log.exception("plugin %s failed to stop", getattr(p, "name", p))
            self.state = AgentState.FAILED if failed else AgentState.STOPPED
            self.local_event("agent_stopped", {"state": self.state.value})
            for s in self.sinks:
                s.close(timeout=5.0)
            if self.line is not None:
                self.line.stop()
            if self.shadow is not None:
                self.shadow.stop()
            if self._api_outlet is not None:
                self._api_outlet.close(timeout=2.0)
            if self.api is not None:
                self.api.stop()
            if self.feedback is not None:
                self._feedback_outlet.close(timeout=5.0)
                self.feedback.shutdown()
            if self.status_writer is not None:
                self.status_writer.stop()
            self._done.set()

    # -- the loop ------------------------------------------------------------------------------------
    def _on_camera_state(self, state: SourceState, error: str) -> None:
        self.local_event("camera_state", {"state": state.value, "error": error})

    def _loop(self) -> None:
        try:
            if self.station is not None:
                self.station.run(self.queue, self._inspect, self.heartbeat.beat)
                return
            while True:
                self.heartbeat.beat()
                frame = self.queue.get(timeout=0.5)
                if frame is None:
                    if self.queue.drained():
                        break
                    continue
                self._inspect(frame)
        finally:
            # The source ended or failed, or stop() closed the queue: finish on a separate thread
            # (stop() may be waiting for this one).
            threading.Thread(target=self._finish, name=f"finish-{self.device_id}", daemon=True).start()

    def _inspect(
        self, frame: Frame, complete: Callable[[dict[str, Any], Any], None] | None = None
    ) -> dict[str, Any] | None:
        """Inspect one frame and publish its record (``complete`` adds a triggered result's fields to
        it first). Returns the record, or None when the frame was not inspected."""
        model = self._model  # read ONCE: the whole frame is served by this model
        if model is None:
            self.counters_.drop("no_model")
            if frame.ts - self._no_model_told >= NO_MODEL_REMINDER_S:
                self._no_model_told = frame.ts
                self.local_event("no_model", {"frame_id": frame.frame_id})
            return None
        every = self.config.inference.stats_every
        try:
            result = inspect_frame(
                model, frame.image, frame.frame_id, ts=frame.ts, with_stats=every > 0 and frame.frame_id % every == 0
            )
        except EdgelineError as exc:
            self.counters_.drop("error")
            n = self.counters_.error(type(exc).__name__)
            if _worth_logging(n):
                log.warning("%s: frame %d not inspected (%d so far): %s", self.device_id, frame.frame_id, n, exc)
            return None
        if self._first_verdict_at is None:
            self._first_verdict_at = time.monotonic()
        self.counters_.record(result.verdict)
        if self.shadow is not None:
            self.shadow.offer(frame.image, frame.frame_id, result, backlog=len(self.queue))
        rec: dict[str, Any] = verdict_record(result, self.device_id, frame.ref)
        if complete is not None:
            complete(rec, model.manifest.labels)
        elif self.config.feedback.enabled:  # a free-run verdict feedback can name (no part id)
            rec["result_id"] = f"{self.device_id}-{self._result_boot}-f{frame.frame_id}"
        self.bus.publish(rec)
        for p in self.plugins:
            try:
                p.on_result(result)
            except Exception:
                n = self.counters_.plugin_error(getattr(p, "name", type(p).__name__))
                if _worth_logging(n):
                    log.exception("plugin %s failed on frame %d (%d so far)", getattr(p, "name", p), frame.frame_id, n)
        return rec


def _worth_logging(n: int) -> bool:
    """Log the 1st, 10th, 100th, 1000th... occurrence: a failure per frame must not flood the log."""
    return n == 1 or (n % 10 == 0 and str(n).rstrip("0") == "1")
