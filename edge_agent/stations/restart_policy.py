"""When to start a station's process again after it died: pure bookkeeping, the clock handed in.

A process that exits 0 finished (a video file or image folder read to its end) and is not started
again. Any other end (a non-zero exit, a signal) is a death: the station starts again after a delay
that doubles with each death in a row (``min_s``, 2x, 4x ... up to ``max_s``); a process that ran
``healthy_after_s`` before it died starts the count again, so a station that dies once a day is
back within ``min_s``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    min_s: float = 1.0
    max_s: float = 30.0
    healthy_after_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.max_s:
            raise ValueError("restart delays need 0 < min_s <= max_s")


@dataclass
class RestartState:
    """One station's deaths in a row and when it may start again."""

    policy: RestartPolicy
    deaths_in_row: int = 0
    restarts: int = 0

    def died(self, ran_s: float, now: float) -> float:
        """The process died after running ``ran_s``: the time it may start again."""
        if ran_s >= self.policy.healthy_after_s:
            self.deaths_in_row = 0
        self.deaths_in_row += 1
        delay = min(self.policy.max_s, self.policy.min_s * 2 ** (self.deaths_in_row - 1))
        self.restarts += 1
        return now + delay
