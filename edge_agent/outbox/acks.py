"""The device's end of the end-to-end acknowledgement: one subscription to ``devices/<id>/acks`` per
MQTT link, applied to every outbox of the device (telemetry windows and deployment events), and one to
the ingest's retained ``ingest/capabilities`` (does the ingest acknowledge at all?). The ingest
publishes its capabilities at every connect; each one makes the device's sent but unconfirmed messages
due again, since a message that reached the broker before the ingest was subscribed again is gone.

The ingest publishes an :class:`~edgeline.core.protocol.telemetry.Ack` after it has stored a window or
an event (or found it stored already); the outbox holding that key deletes it. An acknowledgement
carries idempotency keys only. It arrives on paho's network thread; applying it is one short SQLite
transaction per outbox. A malformed acknowledgement is logged and ignored: the messages stay and go
again, which the ingest deduplicates.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from edge_agent.errors import EdgelineError, ProtocolError
from edgeline.core.mqtt_link import MessageHandler
from edgeline.core.protocol.telemetry import Ack, parse_ack, parse_capabilities
from edgeline.core.protocol.topics import Topics

log = logging.getLogger(__name__)

#: outbox keys of deployment events are ``ev-<event_id>``; window keys are the window's own key
EVENT_KEY_PREFIX = "ev-"


def event_key(event_id: str) -> str:
    """The outbox idempotency key of the deployment event ``event_id``."""
    return f"{EVENT_KEY_PREFIX}{event_id}"


class Settles(Protocol):
    """What the router needs from an outbox."""

    def confirm(self, keys: list[str]) -> int: ...

    def reject(self, keys: list[str]) -> int: ...

    def set_peer_confirms(self, confirms: bool) -> None: ...

    def rearm(self) -> int: ...


class Subscribes(Protocol):
    """What the router needs from the link (``MqttLink`` or ``CloudLink``)."""

    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None: ...


class AckRouter:
    """Applies the acknowledgements of one device to its outboxes. Build it with :func:`ack_router`."""

    def __init__(self, link: Subscribes, topics: Topics, device_id: str) -> None:
        self.topic = topics.device_acks(device_id)
        self.received = 0
        self.malformed = 0
        #: what the ingest's retained capabilities said (None: nothing heard yet)
        self.peer_confirms: bool | None = None
        self._outboxes: list[Settles] = []
        self._lock = threading.Lock()
        link.subscribe(self.topic, self._on_ack, 1)
        link.subscribe(topics.ingest_capabilities(), self._on_capabilities, 1)

    def add(self, outbox: Settles) -> None:
        with self._lock:
            if all(o is not outbox for o in self._outboxes):
                self._outboxes.append(outbox)
            known = self.peer_confirms
        if known is not None:
            self._set_peer(outbox, known)

    @staticmethod
    def _set_peer(outbox: Settles, confirms: bool) -> None:
        try:
            outbox.set_peer_confirms(confirms)
        except EdgelineError as exc:
            log.warning("could not record the ingest's capabilities: %s", exc)

    def apply(self, ack: Ack) -> int:
        """Delete what ``ack`` names from every outbox; returns how many messages went."""
        stored = [*ack.windows, *(event_key(e) for e in ack.events)]
        refused = [*ack.rejected_windows, *(event_key(e) for e in ack.rejected_events)]
        with self._lock:
            outboxes = list(self._outboxes)
        n = 0
        for ob in outboxes:
            try:
                n += ob.confirm(stored)
                if refused:
                    n += ob.reject(refused)
            except EdgelineError as exc:  # e.g. disk full: the messages go again and are confirmed again
                log.warning("acknowledgement not applied: %s", exc)
        return n

    def _on_capabilities(self, topic: str, payload: bytes, retained: bool) -> None:
        """The ingest's retained capabilities; an empty payload (cleared) means an ingest that does not
        acknowledge (after a downgrade): messages are then deleted after a few PUBACKs again."""
        if payload:
            try:
                confirms = parse_capabilities(payload).acks
            except ProtocolError as exc:
                self.malformed += 1
                log.warning("ignoring malformed ingest capabilities on %s: %s", topic, exc)
                return
        else:
            confirms = False
        with self._lock:
            self.peer_confirms = confirms
            outboxes = list(self._outboxes)
        for ob in outboxes:
            self._set_peer(ob, confirms)
            if confirms:
                # the ingest announces itself at every connect: what it may have missed while it was
                # away (sent to a broker that had nobody subscribed yet) goes again now
                try:
                    ob.rearm()
                except EdgelineError as exc:
                    log.warning("could not make unconfirmed messages due: %s", exc)

    def _on_ack(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            ack = parse_ack(payload)
        except ProtocolError as exc:
            self.malformed += 1
            log.warning("ignoring a malformed acknowledgement on %s: %s", topic, exc)
            return
        self.received += 1
        self.apply(ack)


_ROUTERS: dict[tuple[int, str], tuple[object, AckRouter]] = {}
_ROUTERS_LOCK = threading.Lock()


def ack_router(link: Subscribes, topics: Topics, device_id: str) -> AckRouter:
    """The one router of ``link`` for ``device_id`` (the telemetry plugin and the updater's event
    publisher share the device's MQTT link, and a topic filter has one handler per link)."""
    topic = topics.device_acks(device_id)
    with _ROUTERS_LOCK:
        held = _ROUTERS.get((id(link), topic))
        if held is not None and held[0] is link:
            return held[1]
        router = AckRouter(link, topics, device_id)
        _ROUTERS[(id(link), topic)] = (link, router)
        return router
