"""A sink delivers verdict records to the line. Each one runs behind its own bounded queue and thread,
so a sink that fails or hangs never stops or slows inference: a full queue drops its oldest record
(counted), a failing write is counted and logged, and the inspection loop only ever appends."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from edge_agent.errors import EdgeAgentError
from edge_agent.frame_queue import FrameQueue, Policy

log = logging.getLogger(__name__)

Record = dict[str, Any]


class SinkError(EdgeAgentError):
    """A sink could not deliver a record (disk full, broker down, HTTP error, command failed)."""


class Sink(Protocol):
    name: str

    def write(self, record: Record) -> None:
        """Deliver one record; raise on failure (any exception is counted as a sink error).
        A sink may also offer ``write_batch(records)``: all delivered, or all counted as failed."""

    def close(self) -> None: ...


def encode(record: Record) -> bytes:
    """Compact JSON; keys in the order the record was built (verdict records have a fixed order)."""
    return json.dumps(record, separators=(",", ":"), default=str).encode("utf-8")


def wanted(record: Record, include: str, events: bool) -> bool:
    """Filter: ``include`` is "all" or "defects" (defects and uncertain results); events on or off."""
    if record.get("type") == "event":
        return events
    if include == "defects":
        return record.get("verdict") == "defect" or bool(record.get("uncertain"))
    return True


class SinkWorker:
    """Runs one :class:`Sink` on its own thread behind a bounded drop-oldest queue."""

    #: log the first failure, then at most one line per this many seconds
    LOG_EVERY_S = 10.0
    #: records taken from the queue at once; sinks with ``write_batch`` get them in one call
    BATCH = 256

    def __init__(
        self, sink: Sink, *, queue_size: int = 1000, include: str = "all", events: bool = True, linger_s: float = 0.0
    ) -> None:
        self.sink = sink
        #: after a small batch, wait this long so the next one is bigger (fewer wake-ups and writes);
        #: 0 delivers each record at once (the line's MQTT topic, webhook and command hook)
        self.linger_s = linger_s
        self.name = sink.name
        self.include = include
        self.events = events
        self._queue: FrameQueue[Record] = FrameQueue(queue_size, Policy.DROP_OLDEST)
        self.offered = 0
        self._count_lock = threading.Lock()
        self.delivered = 0
        self.errors = 0
        self.last_error = ""
        self._last_log = 0.0
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, record: Record) -> None:
        """Never blocks. Records the sink does not want are skipped."""
        if wanted(record, self.include, self.events):
            with self._count_lock:  # events come from several threads
                self.offered += 1
            self._queue.put(record)

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    @property
    def pending(self) -> int:
        return len(self._queue)

    def stats(self) -> dict[str, Any]:
        return {
            "offered": self.offered,
            "delivered": self.delivered,
            "errors": self.errors,
            "dropped": self.dropped,
            "pending": self.pending,
            "last_error": self.last_error,
        }

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every offered record was written or failed (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while not self.idle():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def idle(self) -> bool:
        return self.offered == self.delivered + self.errors + self.dropped

    def close(self, timeout: float = 5.0) -> None:
        """Drain what is queued (up to ``timeout``), then close the sink. A hung sink is abandoned
        (its thread is a daemon) and its undelivered records are counted as dropped."""
        self._queue.close()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("sink %s did not finish within %.1fs; abandoning %d records", self.name, timeout, self.pending)
            return
        try:
            self.sink.close()
        except Exception as exc:
            log.warning("closing sink %s failed: %s", self.name, exc)

    def _run(self) -> None:
        write_batch = getattr(self.sink, "write_batch", None)
        while True:
            batch = self._queue.get_many(self.BATCH, timeout=0.5)
            if not batch:
                if self._queue.drained():
                    return
                continue
            if write_batch is not None:
                self._deliver(write_batch, batch, len(batch))
            else:
                for rec in batch:
                    self._deliver(self.sink.write, rec, 1)
            if self.linger_s > 0 and len(batch) < self.BATCH and not self._queue.closed:
                time.sleep(self.linger_s)

    def _deliver(self, fn: Callable[[Any], None], arg: Any, n: int) -> None:
        try:
            fn(arg)
            self.delivered += n
        except Exception as exc:
            self.errors += n
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            now = time.monotonic()
            if self.errors == n or now - self._last_log >= self.LOG_EVERY_S:
                self._last_log = now
                log.warning("sink %s failed (%d errors so far): %s", self.name, self.errors, self.last_error)
