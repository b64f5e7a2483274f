"""Telemetry ingest: validate, deduplicate and store the windows and deployment events devices
publish, and tell each device what is stored.

:class:`Ingestor` is the pure part: one MQTT message in, one outcome out ("stored", "duplicate" or
"rejected: <reason>"). It refuses retained messages, payloads over :data:`MAX_WINDOW_BYTES`, anything
that is not a telemetry topic of this fleet, and anything the strict window schema refuses (unknown
fields, wrong histogram lengths, labels that are not labels). The MQTT topic names the device, but
only the window's pseudonym is stored. Deployment events (``devices/<id>/events``) are validated
with their own schema and stored once per ``event_id``.

:class:`IngestService` runs it as a long-lived service: a persistent MQTT session (the broker queues
messages while the service is down), MQTT 5 shared subscriptions so several workers split the load
(``$share/<group>/...``), and the store write happens inside the message handler. After the write it
publishes the end-to-end acknowledgement (``devices/<id>/acks``, QoS 1: idempotency keys only): the
device deletes a window or an event from its outbox only then, never on the broker's PUBACK, because
a broker saving its database periodically can acknowledge a message and crash without it. A stored
message that comes again is acknowledged again; one the schema refuses is acknowledged as rejected
when its key can be read, so the device stops sending it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from cloud_registry.errors import BackendError, IngestRejected
from cloud_registry.telemetry.store import TelemetryStore
from edge_agent.errors import EdgelineError, ProtocolError
from edgeline.core.mqtt_link import LinkSettings, MessageHandler, MqttLink
from edgeline.core.protocol.canonical import parse_json
from edgeline.core.protocol.delivery import MAX_EVENT_BYTES, DeviceEvent, parse_event
from edgeline.core.protocol.telemetry import MAX_WINDOW_BYTES, Ack, IngestCapabilities, TelemetryWindow, parse_window
from edgeline.core.protocol.topics import Topics

log = logging.getLogger(__name__)

WindowListener = Callable[[TelemetryWindow], object]
_KEY = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Outcome:
    """What became of one message: ``result`` ("stored", "duplicate", "rejected: <reason>"), the
    device of its topic and its idempotency key (window ``key`` or ``event_id``) when readable."""

    result: str
    device_id: str | None = None
    key: str | None = None

    @property
    def stored(self) -> bool:
        return self.result in ("stored", "duplicate")


def _readable_key(payload: bytes, field_name: str, max_bytes: int) -> str | None:
    """The idempotency key of a message the schema refused, if it has a well-formed one."""
    try:
        body = parse_json(payload, max_bytes=max_bytes)
    except ProtocolError:
        return None
    value = body.get(field_name) if isinstance(body, dict) else None
    return value if isinstance(value, str) and _KEY.match(value) else None


def _device_of(topics: Topics, topic: str) -> str | None:
    try:
        return topics.device_id_from(topic)
    except ProtocolError:
        return None


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    events_received: int = 0
    events_stored: int = 0
    events_duplicates: int = 0
    events_rejected: Counter[str] = field(default_factory=Counter)
    acks_sent: int = 0
    acks_unsent: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": dict(self.rejected),
            "events": {
                "received": self.events_received,
                "stored": self.events_stored,
                "duplicates": self.events_duplicates,
                "rejected": dict(self.events_rejected),
            },
            "acks": {"sent": self.acks_sent, "unsent": self.acks_unsent},
        }


class Ingestor:
    def __init__(
        self,
        store: TelemetryStore,
        topics: Topics,
        *,
        max_bytes: int = MAX_WINDOW_BYTES,
        listeners: list[WindowListener] | None = None,
    ) -> None:
        self.store = store
        self.topics = topics
        self.max_bytes = max_bytes
        self.listeners = list(listeners or [])
        self.stats = IngestStats()
        self._lock = threading.Lock()

    def validate(self, topic: str, payload: bytes, retained: bool = False) -> TelemetryWindow:
        """The window in ``payload``, or :class:`IngestRejected` saying why not."""
        if retained:
            raise IngestRejected("retained: telemetry is never retained")
        if len(payload) > self.max_bytes:
            raise IngestRejected(f"oversize: {len(payload)} bytes, limit {self.max_bytes}")
        try:
            device = self.topics.device_id_from(topic)
            if topic != self.topics.device_telemetry(device):
                raise ProtocolError(f"{topic!r} is not a telemetry topic")
            return parse_window(payload, max_bytes=self.max_bytes)
        except ProtocolError as exc:
            raise IngestRejected(f"schema: {exc}") from exc

    def handle(self, topic: str, payload: bytes, retained: bool = False) -> str:
        """Validate and store one window. Never raises for bad input: returns the outcome."""
        return self.receive(topic, payload, retained).result

    def receive(self, topic: str, payload: bytes, retained: bool = False) -> Outcome:
        """:meth:`handle` with the device and key the acknowledgement needs."""
        with self._lock:
            self.stats.received += 1
        device = _device_of(self.topics, topic)
        try:
            window = self.validate(topic, payload, retained)
        except IngestRejected as exc:
            reason = str(exc).split(":", 1)[0]
            with self._lock:
                self.stats.rejected[reason] += 1
            self.store.bump(f"rejected.{reason}")
            log.warning("telemetry rejected on %s: %s", topic, str(exc)[:300])
            key = _readable_key(payload, "key", self.max_bytes) if reason == "schema" else None
            return Outcome(f"rejected: {reason}", device, key)
        new = self.store.add(window, raw=payload)
        with self._lock:
            if new:
                self.stats.stored += 1
            else:
                self.stats.duplicates += 1
        if not new:
            return Outcome("duplicate", device, window.key)
        for listener in self.listeners:
            try:
                listener(window)
            except Exception:  # an alert sink must never stop ingest
                log.exception("telemetry listener failed")
        return Outcome("stored", device, window.key)

    def validate_event(self, topic: str, payload: bytes, retained: bool = False) -> DeviceEvent:
        """The deployment event in ``payload``, or :class:`IngestRejected` saying why not."""
        if retained:
            raise IngestRejected("retained: events are never retained")
        if len(payload) > MAX_EVENT_BYTES:
            raise IngestRejected(f"oversize: {len(payload)} bytes, limit {MAX_EVENT_BYTES}")
        try:
            device = self.topics.device_id_from(topic)
            if topic != self.topics.device_events(device):
                raise ProtocolError(f"{topic!r} is not an events topic")
            event = parse_event(payload)
        except ProtocolError as exc:
            raise IngestRejected(f"schema: {exc}") from exc
        if event.device_id != device:
            raise IngestRejected(f"schema: event of {event.device_id!r} on the topic of {device!r}")
        return event

    def receive_event(self, topic: str, payload: bytes, retained: bool = False) -> Outcome:
        """Validate and store one deployment event. Never raises for bad input."""
        with self._lock:
            self.stats.events_received += 1
        device = _device_of(self.topics, topic)
        try:
            event = self.validate_event(topic, payload, retained)
        except IngestRejected as exc:
            reason = str(exc).split(":", 1)[0]
            with self._lock:
                self.stats.events_rejected[reason] += 1
            self.store.bump(f"events.rejected.{reason}")
            log.warning("deployment event rejected on %s: %s", topic, str(exc)[:300])
            key = _readable_key(payload, "event_id", MAX_EVENT_BYTES) if reason == "schema" else None
            return Outcome(f"rejected: {reason}", device, key)
        new = self.store.add_event(event, payload)
        with self._lock:
            if new:
                self.stats.events_stored += 1
            else:
                self.stats.events_duplicates += 1
        return Outcome("stored" if new else "duplicate", device, event.event_id)


@dataclass
class IngestService:
    """The ingest as a service on one MQTT connection. ``shared`` uses an MQTT 5 shared subscription
    (default when the link speaks MQTT 5), so N services split the windows between them."""

    ingestor: Ingestor
    settings: LinkSettings
    shared: bool | None = None
    share_group: str = "ingest"
    link: MqttLink = field(init=False)

    #: also store the deployment events and acknowledge them (the device keeps them until then)
    events: bool = True

    def __post_init__(self) -> None:
        self.link = MqttLink(self.settings)
        use_shared = self.settings.protocol == "5" if self.shared is None else self.shared
        topics = self.ingestor.topics
        self.topic_filter = topics.shared_telemetry(self.share_group) if use_shared else topics.all_device_telemetry()
        self.events_filter = topics.shared_events(self.share_group) if use_shared else topics.all_device_events()

    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            outcome = self.ingestor.receive(topic, payload, retained)
        except BackendError:
            log.exception("telemetry store failed; window on %s not stored (the device sends it again)", topic)
            return
        self._acknowledge(outcome, "windows")

    def _on_event(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            outcome = self.ingestor.receive_event(topic, payload, retained)
        except BackendError:
            log.exception("event store failed; event on %s not stored (the device sends it again)", topic)
            return
        self._acknowledge(outcome, "events")

    def _acknowledge(self, outcome: Outcome, kind: str) -> None:
        """Tell the device its message is stored (or refused for good). Never waits for the PUBACK
        (this runs on paho's network thread); a lost acknowledgement makes the device send again,
        and the redelivery is acknowledged again."""
        if outcome.device_id is None or outcome.key is None or outcome.result == "rejected: retained":
            return
        field_name = kind if outcome.stored else f"rejected_{kind}"
        ack = Ack.model_validate({field_name: [outcome.key]})
        try:
            self.link.publish(self.ingestor.topics.device_acks(outcome.device_id), ack.encode(), qos=1)
        except EdgelineError as exc:
            self.ingestor.stats.acks_unsent += 1
            log.info("acknowledgement for %s not sent (%s); the device sends it again", outcome.device_id, exc)
            return
        self.ingestor.stats.acks_sent += 1

    def _chained(self, topic_filter: str, handler: MessageHandler) -> MessageHandler:
        """``handler``, after the one already on ``topic_filter`` of this link, if any: a link holds one
        handler per filter, and the fleet view sharing the ingest's link (``edgeline ingest
        --no-shared``) subscribes the same events filter before the service starts."""
        subs = getattr(self.link, "_subs", {})
        prior = getattr(subs.get(topic_filter), "handler", None)
        if prior is None:
            return handler

        def both(topic: str, payload: bytes, retained: bool) -> None:
            try:
                prior(topic, payload, retained)
            finally:
                handler(topic, payload, retained)

        return both

    def _announce(self, _session_present: bool) -> None:
        """At every connect: the retained capabilities message (a crashed broker may have lost it)."""
        topic = self.ingestor.topics.ingest_capabilities()
        try:
            self.link.publish(topic, IngestCapabilities(acks=True).encode(), qos=1, retain=True)
        except EdgelineError as exc:
            log.warning("ingest capabilities not published: %s", exc)

    def start(self, timeout: float = 10.0) -> None:
        self.link.on_connect(self._announce)
        self.link.subscribe(self.topic_filter, self._on_message, qos=1)
        if self.events:
            self.link.subscribe(self.events_filter, self._chained(self.events_filter, self._on_event), qos=1)
        try:
            self.link.connect(timeout)
        except EdgelineError as exc:
            self.link.stop()
            raise BackendError(f"ingest cannot reach the broker: {exc}") from exc
        try:  # the one of the first connect, on the broker before start returns
            topic = self.ingestor.topics.ingest_capabilities()
            self.link.publish_sync(topic, IngestCapabilities(acks=True).encode(), qos=1, retain=True, timeout=timeout)
        except EdgelineError as exc:
            log.warning("ingest capabilities not confirmed by the broker: %s", exc)
        log.info("telemetry ingest subscribed to %s", self.topic_filter)

    def stop(self) -> None:
        self.link.stop()

    def run(self, stop: threading.Event, *, every_s: float = 5.0, on_tick: Callable[[], None] | None = None) -> None:
        """Serve until ``stop`` is set, calling ``on_tick`` (e.g. the silent-device check) periodically."""
        while not stop.wait(every_s):
            if on_tick is not None:
                try:
                    on_tick()
                except Exception:
                    log.exception("ingest periodic task failed")
        self.stop()


def wait_for_count(store: TelemetryStore, n: int, timeout: float) -> bool:
    """Poll the store until it holds at least ``n`` windows (for tests and the demo)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.count() >= n:
            return True
        time.sleep(0.05)
    return store.count() >= n
