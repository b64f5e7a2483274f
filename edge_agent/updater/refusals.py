"""Which refused desired-state messages get a ``rejected`` event, pure (the clock is injected).

* Each DISTINCT payload is reported once: the key is the sha256 of the whole payload, so the retained
  copy that comes again at every reconnect is not reported again, while a second, different forgery
  is, whatever it shares with the first (its signature, its sequence, its first bytes).
* Memory is bounded: the digests seen are kept in a least-recently-seen list of ``capacity`` entries.
* Under a flood, events are rate-limited (a token bucket: ``burst`` at once, then ``per_s``); what the
  limit holds back is counted, and the count goes out with the next event that is sent and in the
  device state. Every refusal is counted by reason.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

DEFAULT_CAPACITY = 4096
DEFAULT_BURST = 30
DEFAULT_PER_S = 0.5


class Decision(StrEnum):
    REPORT = "report"  # send its rejected event now
    DUPLICATE = "duplicate"  # this very payload was refused before: nothing to send
    HELD = "held"  # distinct, but over the rate limit: counted, reported in the next event


def payload_key(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


@dataclass
class RefusalCounts:
    by_reason: Counter[str] = field(default_factory=Counter)  # distinct refused payloads
    duplicates: int = 0
    unreported: int = 0  # held back by the rate limit, in total
    held_since_report: int = 0  # held back since the last event that went out

    @property
    def refused(self) -> int:
        return sum(self.by_reason.values())

    def as_state(self) -> dict[str, float | int | str]:
        return {"refusals": self.refused, "refusals_unreported": self.unreported}


class RefusalGate:
    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        burst: int = DEFAULT_BURST,
        per_s: float = DEFAULT_PER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1 or burst < 1 or per_s <= 0:
            raise ValueError("capacity and burst must be >= 1 and per_s > 0")
        self.capacity = capacity
        self.burst = burst
        self.per_s = per_s
        self.clock = clock
        self.counts = RefusalCounts()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._tokens = float(burst)
        self._at = clock()

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, key: str, reason: str) -> Decision:
        if key in self._seen:
            self._seen.move_to_end(key)
            self.counts.duplicates += 1
            return Decision.DUPLICATE
        self._seen[key] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        self.counts.by_reason[reason] += 1
        if not self._take():
            self.counts.unreported += 1
            self.counts.held_since_report += 1
            return Decision.HELD
        return Decision.REPORT

    def take_held(self) -> int:
        """How many refusals the limit held back since the last report (and start counting afresh)."""
        held, self.counts.held_since_report = self.counts.held_since_report, 0
        return held

    def _take(self) -> bool:
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + max(0.0, now - self._at) * self.per_s)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
