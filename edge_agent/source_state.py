"""The camera-source state machine, as pure logic: no OpenCV, no clock, no threads.

::

    IDLE --start--> CONNECTING --opened--> STREAMING --lost (live)--> RECONNECTING --retry--> CONNECTING
                        |                      |--end (file, loop)---------------------------> CONNECTING
                        |                      '--end (file)--> ENDED
                        |--open failed (live)--> RECONNECTING (or FAILED after max_reconnects)
                        '--open failed (file)--> FAILED
    any state --stop--> STOPPED

Reconnect delays grow exponentially from ``min_s`` to the cap ``max_s``, are jittered (so cameras of a
line that failed together do not all retry in step) and reset after a successful open. A stream that
stays open but sends no new frame is noticed by :class:`StallWatchdog` and handled as a loss.
The reader (``edge_agent.sources``) performs the I/O and feeds the events and the times in.
"""

from __future__ import annotations

import random
import statistics
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from edge_agent.errors import SourceError


class SourceState(StrEnum):
    IDLE = "IDLE"
    CONNECTING = "CONNECTING"
    STREAMING = "STREAMING"
    RECONNECTING = "RECONNECTING"
    ENDED = "ENDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"


ALLOWED: dict[SourceState, frozenset[SourceState]] = {
    SourceState.IDLE: frozenset({SourceState.CONNECTING, SourceState.STOPPED}),
    SourceState.CONNECTING: frozenset(
        {SourceState.STREAMING, SourceState.RECONNECTING, SourceState.FAILED, SourceState.STOPPED}
    ),
    SourceState.STREAMING: frozenset(
        {SourceState.RECONNECTING, SourceState.CONNECTING, SourceState.ENDED, SourceState.STOPPED}
    ),
    SourceState.RECONNECTING: frozenset({SourceState.CONNECTING, SourceState.FAILED, SourceState.STOPPED}),
    SourceState.ENDED: frozenset({SourceState.STOPPED}),
    SourceState.FAILED: frozenset({SourceState.STOPPED}),
    SourceState.STOPPED: frozenset(),
}

TERMINAL = frozenset({SourceState.ENDED, SourceState.FAILED, SourceState.STOPPED})


@dataclass(frozen=True)
class Backoff:
    min_s: float = 0.5
    max_s: float = 2.0
    factor: float = 2.0
    #: the delay actually waited is ``delay * (1 - jitter * u)``, u uniform in [0, 1)
    jitter: float = 0.5

    def delay(self, attempt: int) -> float:
        """The (un-jittered) delay before reconnect attempt number ``attempt`` (1-based): exponential,
        capped at ``max_s``."""
        if attempt < 1:
            return 0.0
        exponent = min(attempt - 1, 64)  # no float overflow after days of retries
        return float(min(self.max_s, self.min_s * self.factor**exponent))

    def jittered(self, attempt: int, u: float) -> float:
        """:meth:`delay` scaled down by the jitter; ``u`` in [0, 1). Never above the cap."""
        return self.delay(attempt) * (1.0 - self.jitter * min(max(u, 0.0), 1.0))


@dataclass
class StallWatchdog:
    """Notices a stream that stays open but delivers no new frame.

    The deadline is ``intervals`` frame intervals, bounded to [``min_s``, ``max_s``]. The frame
    interval is the median of the recent gaps between frames, or the interval the stream declares
    until gaps are known, or ``max_s`` when it declares nothing. Before the first frame of a
    connection the deadline is ``max_s``. ``intervals = 0`` turns it off."""

    intervals: float = 10.0
    min_s: float = 2.0
    max_s: float = 3.0
    _gaps: deque[float] = field(default_factory=lambda: deque(maxlen=32))
    _last: float | None = None
    _nominal: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.intervals > 0

    def start(self, nominal_interval_s: float = 0.0) -> None:
        """A new connection: forget the previous gaps."""
        self._gaps.clear()
        self._last = None
        self._nominal = nominal_interval_s if nominal_interval_s > 0 else 0.0

    def frame(self, at: float) -> None:
        """A new frame arrived at monotonic time ``at``."""
        if self._last is not None and at > self._last:
            self._gaps.append(at - self._last)
        self._last = at

    @property
    def interval_s(self) -> float:
        if self._gaps:
            return float(statistics.median(self._gaps))
        return self._nominal

    @property
    def timeout_s(self) -> float:
        if not self.enabled:
            return float("inf")
        if self._last is None:  # the first frame of a connection may wait for a key frame: the ceiling
            return self.max_s
        interval = self.interval_s
        if interval <= 0:
            return self.max_s
        return min(self.max_s, max(self.min_s, self.intervals * interval))

    def stalled(self, waited_s: float) -> bool:
        """True when waiting ``waited_s`` for the next frame is past the deadline."""
        return self.enabled and waited_s > self.timeout_s


@dataclass
class SourceStateMachine:
    live: bool
    loop: bool = False
    backoff: Backoff = field(default_factory=Backoff)
    #: give up after this many failed attempts in a row (0 = never)
    max_reconnects: int = 0
    #: the jitter's random source (seed it for a reproducible test)
    rng: random.Random = field(default_factory=random.Random)
    state: SourceState = SourceState.IDLE
    attempts: int = 0
    reconnects: int = 0
    #: losses noticed by the stall watchdog (a subset of ``reconnects``)
    stalls: int = 0
    last_error: str = ""
    history: list[SourceState] = field(default_factory=list)
    _delay: float = 0.0

    def _go(self, new: SourceState) -> SourceState:
        if new not in ALLOWED[self.state]:
            raise SourceError(f"source cannot go from {self.state.value} to {new.value}")
        self.state = new
        self.history.append(new)
        if len(self.history) > 64:
            del self.history[:-64]
        return new

    @property
    def delay(self) -> float:
        """How long to wait in RECONNECTING before :meth:`retry` (drawn once per attempt)."""
        return self._delay

    # -- events ----------------------------------------------------------------------------------
    def start(self) -> SourceState:
        return self._go(SourceState.CONNECTING)

    def opened(self) -> SourceState:
        self.attempts = 0
        self.last_error = ""
        return self._go(SourceState.STREAMING)

    def open_failed(self, error: str) -> SourceState:
        self.last_error = error
        if not self.live:
            return self._go(SourceState.FAILED)
        return self._schedule_retry()

    def lost(self, error: str = "no frame") -> SourceState:
        """A read returned no frame. Live: the camera is lost. File: end of the recording."""
        if not self.live:
            return self._go(SourceState.CONNECTING if self.loop else SourceState.ENDED)
        self.last_error = error
        self.reconnects += 1
        return self._schedule_retry()

    def stalled(self, error: str) -> SourceState:
        """The stall watchdog fired: the stream is open but no new frame came in time. A loss."""
        self.stalls += 1
        return self.lost(error)

    def retry(self) -> SourceState:
        return self._go(SourceState.CONNECTING)

    def stop(self) -> SourceState:
        if self.state is SourceState.STOPPED:
            return self.state
        return self._go(SourceState.STOPPED)

    def fail(self, error: str) -> SourceState:
        """The reader itself broke (a bug or an OpenCV surprise): FAILED from any live state."""
        self.last_error = error
        if not self.done:
            self.state = SourceState.FAILED
            self.history.append(SourceState.FAILED)
        return self.state

    def _schedule_retry(self) -> SourceState:
        self.attempts += 1
        if self.max_reconnects and self.attempts > self.max_reconnects:
            return self._go(SourceState.FAILED)
        self._delay = self.backoff.jittered(self.attempts, self.rng.random())
        return self._go(SourceState.RECONNECTING)

    @property
    def done(self) -> bool:
        return self.state in TERMINAL
