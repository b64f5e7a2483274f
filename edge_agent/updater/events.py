"""Where updater events go. The updater only knows :class:`EventPublisher`; the device's assembly
plugs in a durable outbox of its own (``events.db``, so a deployment event is never lost across a
power cut), tests plug in a list, and :class:`LinkEventPublisher` is the simple fallback straight
onto the MQTT link."""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Protocol

from edge_agent.errors import EdgelineError, TransportError
from edge_agent.outbox.acks import ack_router, event_key
from edge_agent.outbox.pump import OutboxPump
from edgeline.core.protocol.delivery import DeviceEvent
from edgeline.core.protocol.topics import Topics

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
        on_connect = getattr(sink, "on_connect", None)
        if callable(on_connect):
            on_connect(lambda _session_present: self.flush())

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


class OutboxEventPublisher:
    """Durable: every event is written to a SQLite outbox (kind ``event``: never dropped) before this
    returns, and a pump thread delivers it at QoS 1, deleting it only when the ingest acknowledges
    it (``devices/<id>/acks``, :mod:`edge_agent.outbox.acks`). Events
    taken while offline, or before a crash, go out after the next connect. An event the outbox cannot
    store (the disk is full) is held in memory and retried, and sent without being stored if the
    disk stays full: only a power cut while the disk is full can lose it."""

    def __init__(
        self, outbox: Any, link: Any, topics: Topics, device_id: str, *, pump: OutboxPump | None = None
    ) -> None:
        self.outbox = outbox
        self.link = link
        self.pump = pump if pump is not None else OutboxPump(outbox, link)
        self.topic = topics.device_events(device_id)
        ack_router(link, topics, device_id).add(outbox)
        self._lock = threading.Lock()
        self._held: list[DeviceEvent] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="updater-events", daemon=True)
        link.on_connect(lambda _session_present: self._wake.set())
        self._thread.start()

    def publish_event(self, event: DeviceEvent) -> None:
        try:
            self.outbox.put(self.topic, event.to_bytes(), kind="event", key=event_key(event.event_id))
        except EdgelineError as exc:  # e.g. the disk is full: never dropped, held and retried
            log.error("deployment event %s could not be stored (%s); held in memory", event.kind, exc)
            with self._lock:
                self._held.append(event)
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0 if self._held else 5.0)
            self._wake.clear()
            try:
                self._retry_held()
                self.pump.drain()
            except Exception:
                log.exception("event pump failed; will retry")

    def _retry_held(self) -> None:
        """Store the events the outbox refused; while it still cannot, send them straight to the
        broker (QoS 1, acknowledged) so that the fleet hears of them even if the disk stays full."""
        with self._lock:
            held = list(self._held)
        for event in held:
            payload = event.to_bytes()
            try:
                self.outbox.put(self.topic, payload, kind="event", key=event_key(event.event_id))
            except EdgelineError:
                try:
                    if not self.link.wait_published(self.link.publish(self.topic, payload, qos=1), 10.0):
                        return
                except EdgelineError:
                    return
                log.warning("deployment event %s sent without being stored (the outbox refused it)", event.kind)
            with self._lock:
                self._held.remove(event)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5.0)
