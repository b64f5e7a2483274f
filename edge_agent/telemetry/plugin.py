"""The telemetry plugin: frames in, private aggregate windows out, through a durable outbox.

On the inference thread, :meth:`TelemetryPlugin.on_result` only adds the frame to the current window
(a few counters and bin increments under a short lock). Everything else runs on the plugin's worker
thread, woken every ``tick_s`` seconds, when a window closes and when the link connects:

    closed window -> minimum frame count k (merge) -> optional Laplace noise -> drift scores
      -> wire window (pseudonymous, bounded) -> outbox (durable) -> local drift alarm
      -> pump: publish QoS 1 (PUBACK: sent) -> the ingest's acknowledgement deletes it (:mod:`.acks`)

The clock is injectable (windows, TTL, alarm), and ``background=False`` leaves the worker to the
caller's :meth:`tick`, so tests drive days of simulated time deterministically. A device's plugin
is built by :mod:`edge_agent.assembly` (its outbox, pump, secret and link).

The deployment events of the updater share the outbox: ``plugin.outbox.put(topic, payload,
kind="event", key=...)``; they are sent first and never dropped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from edge_agent.errors import EdgelineError, OutboxError
from edge_agent.outbox.acks import ack_router
from edge_agent.outbox.pump import OutboxPump
from edge_agent.outbox.store import Outbox
from edge_agent.plugins import AgentHandle, FrameResult
from edge_agent.telemetry.alarm import LocalDriftAlarm
from edge_agent.telemetry.drift import Calibrator
from edge_agent.telemetry.field import read_feedback
from edge_agent.telemetry.privacy import LaplaceNoise, MinFrames, pseudonym
from edge_agent.telemetry.windows import DriftContext, ModelKey, RawWindow, WindowAggregator, build_window, context_of
from edgeline.core.mqtt_link import MqttLink
from edgeline.core.protocol.partitions import TelemetryTopics
from edgeline.core.protocol.topics import Topics
from firmware_configs.telemetry_section import TelemetrySection

log = logging.getLogger(__name__)

STATE_PENDING = "telemetry.pending"
STATE_ALARM = "telemetry.alarm"
#: how far the feedback log has been counted into windows (written with the window that carries it)
STATE_FEEDBACK = "telemetry.feedback_cursor"
#: frames dropped for these reasons are counted as errors, not drops (the agent counts both)
ERROR_DROP_REASONS = frozenset({"error"})


def _total(value: object, skip: frozenset[str] = frozenset()) -> int:
    """A counter of the agent's ``counters()`` snapshot: a number, or a map of reason -> number."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, Mapping):
        return sum(_total(v) for k, v in value.items() if k not in skip)
    return 0


def error_and_drop_counts(snapshot: Mapping[str, object]) -> tuple[int, int]:
    """(frames that failed inspection, frames dropped before inspection) from ``Agent.counters()``."""
    return _total(snapshot.get("errors")), _total(snapshot.get("dropped"), ERROR_DROP_REASONS)


#: at a clean stop, how long the last windows' acknowledgements are waited for
STOP_CONFIRM_WAIT_S = 3.0


class TelemetryPlugin:
    name = "telemetry"

    def __init__(
        self,
        config: TelemetrySection,
        *,
        outbox: Outbox,
        secret: bytes,
        topics: Topics,
        link: MqttLink | None = None,
        group: str | None = None,
        clock: Callable[[], float] = time.time,
        background: bool = True,
        noise: LaplaceNoise | None = None,
        pump: OutboxPump | None = None,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.topics = topics
        self.link = link
        self.group = group
        self.clock = clock
        self.background = background
        self._secret = secret
        pseudonym("probe", secret)  # fail early on a short secret
        self.calibrator = Calibrator(quantile=config.drift_quantile, floor=config.drift_floor)
        self.aggregator = WindowAggregator(config.window_s, config.window_frames, clock)
        self.min_frames = MinFrames(config.min_frames)
        if noise is None and config.epsilon is not None:
            noise = LaplaceNoise(config.epsilon, config.contribution_frames)
        self.noise = noise
        self.alarm = LocalDriftAlarm(self._local_event, config.alarm_need, config.alarm_of, config.alarm_clear)
        if pump is None and link is not None:
            pump = OutboxPump(outbox, link)
        self.pump = pump
        self.windows_sent = 0
        self.windows_suppressed = 0
        self._agent: AgentHandle | None = None
        self._device = ""
        self._pseudonym = ""
        self._contexts: dict[str, DriftContext] = {}
        self._closed: list[RawWindow] = []
        self._lock = threading.Lock()
        self._tick_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_counts = (0, 0)
        self._feedback_cursor = 0
        #: the shared device connection (``edge_agent.cloud_link.CloudLink``), started with the plugin
        self.cloud: Any = None
        if link is not None:
            link.on_connect(lambda _session_present: self._wake.set())

    # -- AgentPlugin -----------------------------------------------------------------------------------
    def start(self, agent: AgentHandle) -> None:
        self._agent = agent
        self._device = agent.device_id
        self._pseudonym = pseudonym(self._device, self._secret)
        if self.link is not None:
            ack_router(self.link, self.topics, self._device).add(self.outbox)
        self._restore()
        self._last_counts = self._counts()
        if self.cloud is not None:
            self.cloud.start()
        if self.background:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)
            self._thread.start()

    def on_result(self, result: FrameResult) -> None:
        v = result.verdict
        labels: tuple[str, ...] = ()
        ctx = self._contexts.get(result.model_sha256)
        if ctx is None:
            ctx = self._learn_context(result.model_sha256)
        if ctx is not None:
            labels = ctx.labels
        key = ModelKey(v.model, v.model_version, result.model_sha256)
        with self._lock:
            closed = self.aggregator.add(result, key, labels)
            if closed:
                self._closed.extend(closed)
        if closed:
            self._wake.set()

    def stop(self) -> None:
        """Close the current window (a too-small one is kept for the next run), and stop the worker
        after a last attempt to deliver."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        with self._lock:
            last = self.aggregator.flush()
            if last is not None:
                self._closed.append(last)
        self.tick()
        self._await_confirmations(STOP_CONFIRM_WAIT_S)

    def _await_confirmations(self, timeout_s: float) -> None:
        """At a clean stop, give the ingest's end-to-end acknowledgements of the last windows a
        moment (they come on the link, which is still up): confirmed, they are not sent again at the
        next start. Only when the ingest is known to confirm; unconfirmed ones stay and go again."""
        if self.pump is None or self.link is None or not self.outbox.peer_confirms:
            return
        deadline = time.monotonic() + timeout_s
        while len(self.outbox) and self.link.connected and time.monotonic() < deadline:
            time.sleep(0.02)

    # -- worker ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.tick_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.tick()
            except Exception:  # the worker must survive anything; the outbox keeps the data
                log.exception("telemetry tick failed")

    def tick(self) -> int:
        """Close a timed-out window, turn closed windows into outbox messages, expire old ones, and
        drain the outbox if connected. Returns the number of messages delivered."""
        with self._tick_lock:
            with self._lock:
                due = self.aggregator.poll()
                if due is not None:
                    self._closed.append(due)
                closed, self._closed = self._closed, []
            for i, raw in enumerate(closed):
                try:
                    self._finalize(raw)
                except OutboxError:
                    log.exception("outbox refused a window; its frames are kept for the next one")
                    with self._lock:
                        self._closed[:0] = closed[i + 1 :]
                    break
            try:
                for old in self.min_frames.expire(self.clock(), self.config.pending_max_age_s):
                    self.windows_suppressed += 1
                    m = old.model
                    log.info("suppressed a %d-frame window of %s v%d (below k)", old.frames, m.name, m.version)
                    self.outbox.set_state(STATE_PENDING, self._pending_state())
                self.outbox.expire()
            except OutboxError as exc:  # e.g. the disk is full: delivery below still frees space
                log.warning("outbox housekeeping failed: %s", exc)
            if self.pump is not None and self.link is not None and self.link.connected:
                return self.pump.drain()
            return 0

    def _finalize(self, raw: RawWindow) -> None:
        errors, drops = self._counts()
        raw.errors += max(0, errors - self._last_counts[0])
        raw.drops += max(0, drops - self._last_counts[1])
        self._last_counts = (errors, drops)
        shadow = getattr(self._agent, "shadow", None)  # the challenger beside the model, if one runs
        if shadow is not None and (counts := shadow.take_window()) is not None:
            raw.shadow = counts if raw.shadow is None else raw.shadow.merge(counts)
        ready = self.min_frames.offer(raw)
        if ready is None:
            self.outbox.set_state(STATE_PENDING, self._pending_state())
            return
        feedback_state = self._attach_feedback(ready)
        released = self.noise.apply(ready) if self.noise is not None else ready
        try:
            window = build_window(
                released,
                key=uuid.uuid4().hex,
                device=self._pseudonym,
                group=self.group,
                ctx=self._contexts.get(raw.model.sha256),
                calibrator=self.calibrator,
                outbox_dropped=self.outbox.dropped("telemetry"),
                noise_epsilon=self.noise.epsilon if self.noise is not None else None,
                noise_scale=self.noise.scale_for(ready) if self.noise is not None else 0.0,
            )
            payload = window.encode()
        except EdgelineError:
            log.exception("window of %s v%d could not be encoded; dropped", raw.model.name, raw.model.version)
            self.outbox.set_state(STATE_PENDING, self._pending_state())
            return
        self.alarm.observe(window)
        try:
            self.outbox.put(
                TelemetryTopics(self.topics, self.config.partitions).for_device(self._device, self._pseudonym),
                payload,
                kind="telemetry",
                key=window.key,
                state={
                    STATE_PENDING: self._pending_state(),
                    STATE_ALARM: json.dumps(self.alarm.to_state()).encode(),
                    **feedback_state,
                },
            )
        except OutboxError:
            # keep the frames: they go out merged into the next window of this model
            ready.field_metrics = ready.field_metrics.without_feedback()  # counted again with the next window
            held = self.min_frames.pending.get(ready.model.sha256)
            self.min_frames.pending[ready.model.sha256] = ready.merge(held) if held is not None else ready
            raise
        if feedback_state:  # the window (and the cursor) are in the outbox now
            self._feedback_cursor = int(feedback_state[STATE_FEEDBACK])
        self.windows_sent += 1

    # -- helpers -----------------------------------------------------------------------------------------
    def _attach_feedback(self, ready: RawWindow) -> dict[str, bytes]:
        """Add the feedback written since the last released window to ``ready`` (counts per model
        version); the new cursor goes into the outbox with the window, in one transaction."""
        service = getattr(self._agent, "feedback", None)
        if service is None:
            return {}
        try:
            counts, cursor = read_feedback(service.store, self._feedback_cursor)
        except Exception as exc:  # any store failure (SQLite's own errors too): counted with a later window
            log.warning("feedback not read for this window: %s: %s", type(exc).__name__, exc)
            return {}
        ready.field_metrics.add_feedback(counts)
        return {STATE_FEEDBACK: str(cursor).encode()}

    def _learn_context(self, sha: str) -> DriftContext | None:
        agent = self._agent
        model = agent.current_model if agent is not None else None
        if model is None or model.manifest.artifact.sha256 != sha:
            return None
        ctx = context_of(model.manifest)
        self._contexts[sha] = ctx
        return ctx

    def _counts(self) -> tuple[int, int]:
        if self._agent is None:
            return (0, 0)
        try:
            snap = self._agent.counters()
        except Exception:
            log.exception("agent counters unavailable")
            return self._last_counts
        return error_and_drop_counts(snap)

    def _local_event(self, kind: str, payload: dict[str, object]) -> None:
        if self._agent is not None:
            self._agent.local_event(kind, payload)

    def _pending_state(self) -> bytes:
        return json.dumps(self.min_frames.to_state()).encode()

    def _restore(self) -> None:
        cursor = self.outbox.get_state(STATE_FEEDBACK)
        if cursor is not None and cursor.strip().isdigit():
            self._feedback_cursor = int(cursor)
        for name, apply in ((STATE_PENDING, self.min_frames.restore), (STATE_ALARM, self.alarm.restore)):
            raw = self.outbox.get_state(name)
            if raw is None:
                continue
            try:
                data: Any = json.loads(raw)
                apply(data)
            except (ValueError, KeyError, TypeError, AttributeError, IndexError, OverflowError) as exc:
                log.warning("ignoring unreadable telemetry state %s: %s", name, exc)
