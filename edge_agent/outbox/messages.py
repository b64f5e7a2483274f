"""What an outbox holds: the kinds of message (droppable or not, and in which order they go), the
rows handed to the pump, and the figures it reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DropPolicy = Literal["oldest-telemetry-first", "refuse-new-telemetry"]
#: kind -> (droppable, priority). Lower priority numbers are sent first.
KINDS: dict[str, tuple[bool, int]] = {"event": (False, 0), "telemetry": (True, 1)}
#: the kinds the cap, the TTL and a full disk may drop
DROPPABLE: tuple[str, ...] = tuple(k for k, (d, _) in KINDS.items() if d)
ROW_OVERHEAD = 64
MAX_KEY_CHARS = 128


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    key: str
    kind: str
    topic: str
    payload: bytes
    created: float
    attempts: int


@dataclass(frozen=True)
class OutboxStats:
    messages: int
    bytes: int
    by_kind: dict[str, int]
    counters: dict[str, int]

    @property
    def dropped(self) -> int:
        return sum(v for k, v in self.counters.items() if k.startswith("dropped."))
