"""Triggered inspection around the pure :class:`~edge_agent.line.matcher.TriggerMatcher`: triggers
from any interface (thread-safe :meth:`TriggerStation.submit`), frames from the source's queue, one
loop that matches them, inspects the matched frame with the agent's one inspection code, and publishes
exactly one result per trigger (inspected, late, missed, refused or error) on the result bus."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from edge_agent.frame_queue import FrameQueue, Policy
from edge_agent.line.matcher import Match, Miss, Outcome, ResultState, Trigger, TriggerMatcher
from edge_agent.line.result import Record, empty_verdict, line_fields
from edge_agent.sources import Frame
from firmware_configs.line_section import TriggerSection

log = logging.getLogger(__name__)

#: inspect ``frame``; ``complete`` adds the line's fields to the record before it is published.
#: Returns the published record, or None when the frame was not inspected (no model, refused frame).
Inspect = Callable[[Frame, Callable[[Record, Any], None]], "Record | None"]


class RingingQueue(FrameQueue[Frame]):
    """The frame queue of a triggered source: every put also rings the station's bell, so the loop
    wakes for a frame or a trigger alike."""

    def __init__(self, maxsize: int, policy: Policy | str, bell: threading.Event) -> None:
        super().__init__(maxsize, policy)
        self._bell = bell

    def put(self, item: Frame, timeout: float | None = None) -> bool:
        ok = super().put(item, timeout)
        self._bell.set()
        return ok

    def close(self) -> None:
        super().close()
        self._bell.set()


class TriggerStation:
    def __init__(
        self,
        section: TriggerSection,
        device_id: str,
        publish: Callable[[Record], None],
        model_info: Callable[[], dict[str, Any] | None],
    ) -> None:
        self.section = section
        self.device_id = device_id
        self._publish = publish
        self._model_info = model_info
        self.bell = threading.Event()
        self.matcher: TriggerMatcher[Frame] = TriggerMatcher(
            section.window_ms / 1000.0, max_pending=section.max_pending, buffer_frames=section.buffer_frames
        )
        self._lock = threading.Lock()
        self._inbox: list[Trigger] = []
        self._next_trigger = 1
        self._seq = 0
        # the start time in milliseconds: two runs a second apart (a restart loop) never share result ids,
        # which the feedback store keeps across restarts
        self._boot = f"{time.time_ns() // 1_000_000:x}"
        self.received: Counter[str] = Counter()
        #: every state present from the start, so a reader on another thread never sees the dict grow
        self.states: Counter[str] = Counter({s.value: 0 for s in ResultState})
        self.frames_skipped = 0

    # -- any thread ------------------------------------------------------------------------------------
    def submit(self, part_id: str = "", ts: float | None = None, origin: str = "") -> Trigger:
        """Queue a trigger (never blocks); returns it with its trigger id and part id."""
        with self._lock:
            n = self._next_trigger
            self._next_trigger += 1
            t = Trigger(n, part_id or f"{self.section.part_id_prefix}{n}", time.time(), ts, origin)
            self._inbox.append(t)
            self.received[origin or "other"] += 1
        self.bell.set()
        return t

    def stats(self) -> dict[str, Any]:
        with self._lock:
            received = dict(self.received)
        return {
            "mode": "trigger",
            "triggers": received,
            "results": {k: v for k, v in self.states.items() if v},
            "pending": self.matcher.pending,
            "frames_skipped": self.frames_skipped,
            "missed": self.states["missed"],
            "late": self.states["late"],
        }

    # -- the loop --------------------------------------------------------------------------------------
    def run(self, queue: FrameQueue[Frame], inspect: Inspect, beat: Callable[[], None] | None = None) -> None:
        """Until the queue is closed and drained: match, inspect, publish. ``beat`` is called once a
        round (at least every 0.5 s, with or without frames and triggers)."""
        while True:
            if beat is not None:
                beat()
            deadline = self.matcher.next_deadline()
            wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.time() + 0.0005))
            self.bell.wait(wait)
            self.bell.clear()
            frames = queue.get_many(1 << 16, timeout=0) if len(queue) else []
            with self._lock:
                triggers, self._inbox = self._inbox, []
            now = time.time()
            outcomes: list[Outcome[Frame]] = []
            for f in frames:
                outcomes += self.matcher.frame(f, now)
            for t in triggers:
                outcomes += self.matcher.trigger(t, now)
            outcomes += self.matcher.expire(time.time())
            used = {id(o.frame) for o in outcomes if isinstance(o, Match)}
            self.frames_skipped += sum(1 for f in frames if id(f) not in used)
            for o in outcomes:
                self._serve(o, inspect)
            if queue.drained():
                for o in self.matcher.flush(time.time()):
                    self._serve(o, inspect)
                return

    def _serve(self, o: Outcome[Frame], inspect: Inspect) -> None:
        if isinstance(o, Miss):
            self._publish_empty(o.trigger, o.state, o.detail)
            return
        t, frame = o.trigger, o.frame
        matched_at = time.time()

        def complete(rec: Record, labels: Any) -> None:
            label = rec.get("label")
            index = list(labels).index(label) if label in labels else -1
            total = (time.time() - t.received) * 1000.0
            state = ResultState.LATE if total > self.section.budget_ms else ResultState.OK
            rec.update(
                line_fields(
                    t,
                    result_id=self._next_result_id(),
                    seq=self._seq,
                    state=state,
                    detail="" if state is ResultState.OK else f"{total:.1f} ms > budget {self.section.budget_ms:g} ms",
                    class_index=index,
                    frame_ts=frame.ts,
                    wait_ms=max(0.0, (matched_at - t.received) * 1000.0),
                    inspect_ms=rec.get("latency_ms"),
                    total_ms=total,
                )
            )
            self.states[state.value] += 1

        if inspect(frame, complete) is None:
            self._publish_empty(t, ResultState.ERROR, "the frame was not inspected (no model, or refused)", frame)

    def _next_result_id(self) -> str:
        self._seq += 1
        return f"{self.device_id}-{self._boot}-{self._seq}"

    def _publish_empty(self, t: Trigger, state: ResultState, detail: str, frame: Frame | None = None) -> None:
        rec = empty_verdict(self.device_id, self._model_info(), time.time())
        rec.update(
            line_fields(
                t,
                result_id=self._next_result_id(),
                seq=self._seq,
                state=state,
                detail=detail,
                frame_ts=None if frame is None else frame.ts,
                total_ms=(time.time() - t.received) * 1000.0,
            )
        )
        self.states[state.value] += 1
        n = self.states[state.value]
        if n == 1 or n % 100 == 0:  # the 1st, then every 100th: a camera gone must not flood the log
            log.warning(
                "%s: trigger %s (part %s) %s (%d so far): %s",
                self.device_id,
                t.trigger_id,
                t.part_id,
                state.value,
                n,
                detail,
            )
        self._publish(rec)
