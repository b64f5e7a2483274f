"""Chunked artifact download over retained MQTT messages, resumable without re-fetching.

Every chunk is a retained message on its own topic (``artifacts/<sha>/chunks/<n>``). The device
subscribes only to chunks it is missing, by their exact topics (the manifest gives the count; no
wildcard, whose retained messages RabbitMQ never delivers), at most ``window`` at a time (flow
control), in one SUBSCRIBE packet per batch; when half a batch has landed, the landed ones are unsubscribed (one
UNSUBSCRIBE) and the window refilled. Chunks are written in place into a sparse ``.part`` file;
after a restart the part file is re-scanned against the signed chunk hashes, so what is on disk is
never asked for again and no separate bitmap has to be kept consistent with it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from edge_agent.errors import ProtocolError
from edgeline.core.protocol.delivery import Reason
from edgeline.core.protocol.manifest import Artifact
from edgeline.core.protocol.topics import Topics

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes, bool], None]


class Subscriber(Protocol):
    def subscribe_many(self, topic_filters: list[str], handler: MessageHandler, qos: int = 1) -> None: ...
    def unsubscribe_many(self, topic_filters: list[str]) -> None: ...


@dataclass
class DownloadStats:
    resumed_with: int = 0
    received: list[int] = field(default_factory=list)
    bytes_received: int = 0
    started: float = 0.0
    finished: float = 0.0


class ChunkDownload:
    def __init__(
        self,
        *,
        part: Path,
        artifact: Artifact,
        topics: Topics,
        sub: Subscriber,
        window: int,
        on_done: Callable[[], None],
        on_fail: Callable[[str, str], None],
        pause_after: int | None = None,
        pause_s: float = 0.0,
        on_pause: Callable[[int], None] | None = None,
    ) -> None:
        if not artifact.chunk_sha256:
            raise ProtocolError("the manifest carries no chunk hashes; every chunk must be verifiable")
        self.part = part
        self.art = artifact
        self.topics = topics
        self.sub = sub
        self.window = window
        self.on_done = on_done
        self.on_fail = on_fail
        self.pause_after = pause_after
        self.pause_s = pause_s
        self.on_pause = on_pause
        self.stats = DownloadStats()
        self._lock = threading.Lock()
        self._have: set[int] = set()
        self._inflight: set[int] = set()  # subscribed, not yet received
        self._landed: set[int] = set()  # received, still subscribed (unsubscribed in batches)
        self._fd: int | None = None
        self._state = "new"  # new -> running -> (paused) -> done | failed | cancelled
        self._paused_once = False

    @property
    def total(self) -> int:
        return self.art.chunk_count

    @property
    def have(self) -> int:
        with self._lock:
            return len(self._have)

    def _expected_len(self, index: int) -> int:
        return min(self.art.chunk_size, self.art.size - index * self.art.chunk_size)

    def scan(self) -> int:
        """Open (or create) the part file and find the chunks it already holds."""
        self.part.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.part.exists()
        fd = os.open(self.part, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(fd).st_size != self.art.size:
            os.ftruncate(fd, self.art.size)
        have = set()
        for i, expected in enumerate(() if fresh else self.art.chunk_sha256):
            data = os.pread(fd, self._expected_len(i), i * self.art.chunk_size)
            if hashlib.sha256(data).hexdigest() == expected:
                have.add(i)
        with self._lock:
            self._fd = fd
            self._have = have
            self.stats.resumed_with = len(have)
        return len(have)

    def start(self) -> None:
        if self._fd is None:
            self.scan()
        self.stats.started = time.monotonic()
        with self._lock:
            self._state = "running"
            done = len(self._have) == self.total
        if done:
            self._finish()
        else:
            self._fill()

    def on_disconnect(self) -> None:
        """The link dropped. Nothing to do: the link subscribes the same exact chunk topics again on
        the next connection, and what already landed is no longer among them."""

    def cancel(self) -> None:
        with self._lock:
            if self._state in ("done", "failed", "cancelled"):
                return
            self._state = "cancelled"
        self._unsubscribe_all()
        self._close()

    def _topics(self, indices: set[int] | list[int]) -> list[str]:
        return [self.topics.artifact_chunk(self.art.sha256, i) for i in sorted(indices)]

    def _unsubscribe_all(self) -> None:
        with self._lock:
            held = self._inflight | self._landed
            self._inflight, self._landed = set(), set()
        self.sub.unsubscribe_many(self._topics(held))

    def _close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _fill(self) -> None:
        """Unsubscribe what landed and subscribe the next missing chunks, one packet each."""
        to_sub: list[int] = []
        with self._lock:
            if self._state != "running":
                return
            landed, self._landed = self._landed, set()
            for i in range(self.total):
                if len(self._inflight) + len(to_sub) >= self.window:
                    break
                if i not in self._have and i not in self._inflight:
                    to_sub.append(i)
            self._inflight.update(to_sub)
        self.sub.unsubscribe_many(self._topics(landed))
        self.sub.subscribe_many(self._topics(to_sub), self._on_chunk, 1)

    def _on_chunk(self, topic: str, payload: bytes, retained: bool) -> None:
        """On the MQTT thread, in place: check the chunk against its signed hash and write it. Both
        release the interpreter lock (sha256 runs at about 2 GB/s here, the write lands in the page
        cache), so this costs the broker's next packet ~0.1 ms; handing every chunk to another thread
        cost more in thread switches than the work itself, and queued chunks behind the record's
        fsyncs (see docs/decisions.md, "Chunks are checked where they land")."""
        if not payload:
            return  # a cleared retained chunk: the registry retired it; wait for a republish
        try:
            sha, index = self.topics.chunk_index_from(topic)
        except ProtocolError:
            return
        if sha != self.art.sha256 or index >= self.total:
            return
        with self._lock:
            if self._state != "running" or index in self._have:
                return  # paused (fault injection): what arrives now is fetched after the pause
        expected = self._expected_len(index)
        if len(payload) != expected:
            self._fail(Reason.LENGTH_MISMATCH, f"chunk {index} is {len(payload)} bytes, expected {expected}")
            return
        if hashlib.sha256(payload).hexdigest() != self.art.chunk_sha256[index]:
            self._fail(Reason.HASH_MISMATCH, f"chunk {index} does not match its signed sha256")
            return
        error: OSError | None = None
        with self._lock:  # the descriptor cannot be closed (cancel) while this writes through it
            if self._state != "running" or index in self._have or self._fd is None:
                return
            try:
                os.pwrite(self._fd, payload, index * self.art.chunk_size)
            except OSError as exc:
                error = exc
            else:
                self._have.add(index)
                self._inflight.discard(index)
                self._landed.add(index)
                self.stats.received.append(index)
                self.stats.bytes_received += len(payload)
                # refill when half the window landed and there is more to ask for (one UNSUBSCRIBE for
                # the landed ones, one SUBSCRIBE for the next); what lands after that goes at the end
                refill = len(self._inflight) <= self.window // 2 and len(self._have) + len(self._inflight) < self.total
                complete = len(self._have) == self.total
                pause = self._pause_due()
                if pause:
                    self._paused_once = True
                    self._state = "paused"
        if error is not None:
            reason = Reason.DISK_FULL if error.errno in (errno.ENOSPC, errno.EDQUOT) else Reason.IO_ERROR
            self._fail(reason, f"cannot write chunk {index}: {error.strerror}")
        elif complete:
            self._finish()
        elif pause:
            log.warning("fault injection: download paused after %d chunks for %.1f s", self.have, self.pause_s)
            self._unsubscribe_all()
            if self.on_pause is not None:
                self.on_pause(self.have)
            timer = threading.Timer(self.pause_s, self._unpause)
            timer.daemon = True
            timer.start()
        elif refill:
            self._fill()

    def _pause_due(self) -> bool:
        return (
            self.pause_after is not None
            and not self._paused_once
            and self.pause_after <= len(self._have) < self.total
            and self._state == "running"
        )

    @property
    def complete(self) -> bool:
        """Every chunk is on disk and matched its signed sha256 (the signed chunk hashes pin every byte)."""
        with self._lock:
            return self._state == "done" and len(self._have) == self.total

    def _unpause(self) -> None:
        with self._lock:
            if self._state != "paused":
                return
            self._state = "running"
        self._fill()

    def _finish(self) -> None:
        with self._lock:
            if self._state == "done":
                return
            self._state = "done"
        self._unsubscribe_all()
        self._close()  # made durable when it is staged (the slot's fsync), not here
        self.stats.finished = time.monotonic()
        self.on_done()

    def _fail(self, reason: str, detail: str) -> None:
        with self._lock:
            if self._state in ("done", "failed", "cancelled"):
                return
            self._state = "failed"
        self._unsubscribe_all()
        self._close()
        self.on_fail(reason, detail)
