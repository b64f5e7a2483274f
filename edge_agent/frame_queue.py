"""A bounded queue between a camera source and the inspection loop, with a NAMED backpressure policy.

* ``drop_oldest`` (live cameras): a full queue drops its oldest item to make room, so the loop always
  sees recent frames and a slow frame never piles up latency. Every drop is counted.
* ``block`` (video files, image folders): a full queue makes the producer wait, so every recorded
  frame is inspected and nothing is dropped.

Closing the queue wakes everyone: producers stop, and the consumer drains what is left and then gets
``None``.
"""

from __future__ import annotations

import threading
from collections import deque
from enum import StrEnum
from typing import Generic, TypeVar

T = TypeVar("T")


class Policy(StrEnum):
    DROP_OLDEST = "drop_oldest"
    BLOCK = "block"


class FrameQueue(Generic[T]):
    def __init__(self, maxsize: int, policy: Policy | str) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self.policy = Policy(policy)
        self._items: deque[T] = deque()
        lock = threading.Lock()
        self._not_empty = threading.Condition(lock)
        self._not_full = threading.Condition(lock)
        self._closed = False
        self._low_water = maxsize // 2
        self.put_count = 0
        self.dropped = 0

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Enqueue ``item``. Returns False when the queue is closed, or (``block`` policy) when
        ``timeout`` passed without room; never blocks with ``drop_oldest``."""
        with self._not_full:
            if self._closed:
                return False
            if len(self._items) >= self.maxsize:
                if self.policy is Policy.DROP_OLDEST:
                    self._items.popleft()
                    self.dropped += 1
                else:
                    room = self._not_full.wait_for(lambda: self._closed or len(self._items) < self.maxsize, timeout)
                    if not room or self._closed:
                        return False
            self._items.append(item)
            self.put_count += 1
            self._not_empty.notify()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """Dequeue the oldest item; ``None`` on timeout, or when closed and empty."""
        with self._not_empty:
            if not self._items and not self._not_empty.wait_for(lambda: self._closed or bool(self._items), timeout):
                return None
            if not self._items:
                return None
            item = self._items.popleft()
            # Wake a blocked producer only at the low-water mark: it then refills in one burst
            # instead of one wake-up (and context switch) per frame.
            if len(self._items) <= self._low_water:
                self._not_full.notify()
            return item

    def get_many(self, max_items: int, timeout: float | None = None) -> list[T]:
        """Wait for at least one item (up to ``timeout``), then take up to ``max_items``. An empty list
        means timeout, or closed and empty."""
        with self._not_empty:
            if not self._items and not self._not_empty.wait_for(lambda: self._closed or bool(self._items), timeout):
                return []
            out = [self._items.popleft() for _ in range(min(max_items, len(self._items)))]
            if out:
                self._not_full.notify_all()
            return out

    def close(self) -> None:
        with self._not_empty:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def drained(self) -> bool:
        """Closed and nothing left to take."""
        with self._not_empty:
            return self._closed and not self._items

    def __len__(self) -> int:
        return len(self._items)
