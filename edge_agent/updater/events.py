"""Where updater events go. The updater only knows :class:`EventPublisher`; the agent plugs in the
durable telemetry outbox (so a deployment event is never lost across a power cut), tests plug in a
list, and :class:`LinkEventPublisher` is the simple fallback straight onto the MQTT link."""

from __future__ import annotations

import collections
import logging
import threading
from typing import Protocol

from edge_agent.errors import TransportError
from edge_agent.protocol.delivery import DeviceEvent

log = logging.getLogger(__name__)


class EventPublisher(Protocol):
    def publish_event(self, event: DeviceEvent) -> None:
        """Take the event for delivery. Must not block on the network and must not raise for an
        offline link: queue instead."""


class EventSink(Protocol):
    """What :class:`LinkEventPublisher` needs from the link (``CloudLink`` provides it)."""

    @property
    def connected(self) -> bool: ...

    def send_event(self, event: DeviceEvent) -> None: ...


class LinkEventPublisher:
    """Publishes at QoS 1 when connected, keeps a bounded in-memory queue while offline and flushes
    it on reconnect (call :meth:`flush`). Not durable across a restart; the retained device state
    still carries the last event, so the registry converges anyway."""

    def __init__(self, sink: EventSink, max_queued: int = 1000) -> None:
        self.sink = sink
        self._queue: collections.deque[DeviceEvent] = collections.deque(maxlen=max_queued)
        self._lock = threading.Lock()

    def publish_event(self, event: DeviceEvent) -> None:
        with self._lock:
            self._queue.append(event)
        self.flush()

    def flush(self) -> None:
        while True:
            with self._lock:
                if not self._queue or not self.sink.connected:
                    return
                event = self._queue[0]
            try:
                self.sink.send_event(event)
            except TransportError as exc:
                log.debug("event %s queued: %s", event.kind, exc)
                return
            with self._lock:
                if self._queue and self._queue[0] is event:
                    self._queue.popleft()

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._queue)


class ListEventPublisher:
    """Keeps events in memory (for tests and the benchmark's simulated agents)."""

    def __init__(self) -> None:
        self.events: list[DeviceEvent] = []
        self._lock = threading.Lock()

    def publish_event(self, event: DeviceEvent) -> None:
        with self._lock:
            self.events.append(event)

    def kinds(self) -> list[str]:
        with self._lock:
            return [e.kind.value for e in self.events]


class FanOutPublisher:
    def __init__(self, *publishers: EventPublisher) -> None:
        self.publishers = publishers

    def publish_event(self, event: DeviceEvent) -> None:
        for p in self.publishers:
            p.publish_event(event)
