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
        self._cond = threading.Condition()
        self._closed = False
        self.put_count = 0
        self.dropped = 0

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Enqueue ``item``. Returns False when the queue is closed, or (``block`` policy) when
        ``timeout`` passed without room; never blocks with ``drop_oldest``."""
        with self._cond:
            if self._closed:
                return False
            if len(self._items) >= self.maxsize:
                if self.policy is Policy.DROP_OLDEST:
                    self._items.popleft()
                    self.dropped += 1
                else:
                    room = self._cond.wait_for(lambda: self._closed or len(self._items) < self.maxsize, timeout)
                    if not room or self._closed:
                        return False
            self._items.append(item)
            self.put_count += 1
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """Dequeue the oldest item; ``None`` on timeout, or when closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or bool(self._items), timeout):
                return None
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def drained(self) -> bool:
        """Closed and nothing left to take."""
        with self._cond:
            return self._closed and not self._items

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
