"""The camera-source state machine, as pure logic: no OpenCV, no clock, no threads.

::

    IDLE --start--> CONNECTING --opened--> STREAMING --lost (live)--> RECONNECTING --retry--> CONNECTING
                        |                      |--end (file, loop)---------------------------> CONNECTING
                        |                      '--end (file)--> ENDED
                        |--open failed (live)--> RECONNECTING (or FAILED after max_reconnects)
                        '--open failed (file)--> FAILED
    any state --stop--> STOPPED

Reconnect delays grow exponentially from ``min_s`` to ``max_s`` and reset after a successful open.
The reader (``edge_agent.sources``) performs the I/O and feeds the events in.
"""

from __future__ import annotations

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
    max_s: float = 30.0
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """Delay before reconnect attempt number ``attempt`` (1-based)."""
        if attempt < 1:
            return 0.0
        return float(min(self.max_s, self.min_s * self.factor ** (attempt - 1)))


@dataclass
class SourceStateMachine:
    live: bool
    loop: bool = False
    backoff: Backoff = field(default_factory=Backoff)
    #: give up after this many failed attempts in a row (0 = never)
    max_reconnects: int = 0
    state: SourceState = SourceState.IDLE
    attempts: int = 0
    reconnects: int = 0
    last_error: str = ""
    history: list[SourceState] = field(default_factory=list)

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
        """How long to wait in RECONNECTING before :meth:`retry`."""
        return self.backoff.delay(self.attempts)

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
        return self._go(SourceState.RECONNECTING)

    @property
    def done(self) -> bool:
        return self.state in TERMINAL
