"""Triggered inspection as pure logic: triggers and frames in, matches and misses out. No I/O, no
clock of its own (every call takes ``now``), so it is tested with hand-made timestamps.

A trigger without a timestamp takes the NEXT frame: the first one captured at or after the moment the
trigger arrived. A trigger with a timestamp takes the buffered frame CLOSEST to that timestamp within
``window_s``; it is decided as soon as no later frame could be closer (a frame at or after the
timestamp is in, or the best one is nearer than ``now`` is to the timestamp). A trigger that no frame
serves by its deadline is a :class:`Miss`; so is one beyond ``max_pending`` waiting triggers. Nothing
is dropped silently: every trigger comes out exactly once, as a :class:`Match` or a :class:`Miss`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, Protocol, TypeVar


class Stamped(Protocol):
    """A frame as the matcher sees it: its capture time (wall clock, seconds)."""

    @property
    def ts(self) -> float: ...


F = TypeVar("F", bound=Stamped)


class ResultState(StrEnum):
    """The state every triggered result carries."""

    #: inspected, published within the budget
    OK = "ok"
    #: inspected, published after the budget
    LATE = "late"
    #: no frame within the window
    MISSED = "missed"
    #: more triggers waiting than allowed
    REFUSED = "refused"
    #: a frame was found but could not be inspected (no model, a frame the model refused)
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Trigger:
    #: assigned by the station, unique per agent run
    trigger_id: int
    part_id: str
    #: when the agent received it (wall clock)
    received: float
    #: the trigger's own timestamp (wall clock), if it carries one
    ts: float | None = None
    #: the interface it came from: modbus, opcua, tcp, api, test
    origin: str = ""


@dataclass(frozen=True, slots=True)
class Match(Generic[F]):
    trigger: Trigger
    frame: F


@dataclass(frozen=True, slots=True)
class Miss:
    trigger: Trigger
    state: ResultState
    detail: str


Outcome = Match[F] | Miss


class TriggerMatcher(Generic[F]):
    """Pairs triggers with frames. Not thread-safe: one loop owns it."""

    def __init__(self, window_s: float, *, max_pending: int = 64, buffer_frames: int = 32) -> None:
        if window_s <= 0 or max_pending < 1 or buffer_frames < 1:
            raise ValueError("window_s must be > 0, max_pending and buffer_frames >= 1")
        self.window_s = window_s
        self.max_pending = max_pending
        self._frames: deque[F] = deque(maxlen=buffer_frames)
        self._pending: list[Trigger] = []

    @property
    def pending(self) -> int:
        return len(self._pending)

    def deadline(self, t: Trigger) -> float:
        """After this moment the trigger can no longer be served."""
        return (t.received if t.ts is None else t.ts) + self.window_s

    def next_deadline(self) -> float | None:
        return min((self.deadline(t) for t in self._pending), default=None)

    def trigger(self, t: Trigger, now: float) -> list[Outcome[F]]:
        if len(self._pending) >= self.max_pending:
            return [Miss(t, ResultState.REFUSED, f"{len(self._pending)} triggers already waiting")]
        self._pending.append(t)
        return self._settle(now)

    def frame(self, f: F, now: float) -> list[Outcome[F]]:
        self._frames.append(f)
        return self._settle(now)

    def expire(self, now: float) -> list[Outcome[F]]:
        return self._settle(now)

    def flush(self, now: float) -> list[Outcome[F]]:
        """The source ended: decide every waiting trigger with what is buffered."""
        out: list[Outcome[F]] = []
        for t in self._pending:
            best = self._closest(t) if t.ts is not None else None
            out.append(Match(t, best) if best is not None else Miss(t, ResultState.MISSED, "the source ended"))
        self._pending = []
        return out

    # -- the rules --------------------------------------------------------------------------------------
    def _settle(self, now: float) -> list[Outcome[F]]:
        out: list[Outcome[F]] = []
        keep: list[Trigger] = []
        for t in self._pending:
            o = self._decide(t, now)
            if o is None:
                keep.append(t)
            else:
                out.append(o)
        self._pending = keep
        self._trim(now)
        return out

    def _decide(self, t: Trigger, now: float) -> Outcome[F] | None:
        if t.ts is None:
            nxt = next((f for f in self._frames if f.ts >= t.received), None)
            if nxt is not None and nxt.ts <= self.deadline(t):
                return Match(t, nxt)
            if nxt is not None or now > self.deadline(t):
                return Miss(t, ResultState.MISSED, f"no frame within {self.window_s * 1000:.0f} ms of the trigger")
            return None
        best = self._closest(t)
        if best is not None:
            later_in = any(f.ts >= t.ts for f in self._frames)
            if later_in or abs(best.ts - t.ts) <= now - t.ts or now > self.deadline(t):
                return Match(t, best)
            return None
        if now > self.deadline(t) or any(f.ts > self.deadline(t) for f in self._frames):
            return Miss(t, ResultState.MISSED, f"no frame within {self.window_s * 1000:.0f} ms of the trigger's time")
        return None

    def _closest(self, t: Trigger) -> F | None:
        assert t.ts is not None
        ts = t.ts
        within = [f for f in self._frames if abs(f.ts - ts) <= self.window_s]
        return min(within, key=lambda f: abs(f.ts - ts)) if within else None

    def _trim(self, now: float) -> None:
        """Forget frames no waiting or future trigger can take (older than the window, and than every
        waiting trigger's earliest acceptable frame)."""
        horizon = now - self.window_s
        for t in self._pending:
            horizon = min(horizon, (t.received if t.ts is None else t.ts) - self.window_s)
        while self._frames and self._frames[0].ts < horizon:
            self._frames.popleft()
