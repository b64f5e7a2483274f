"""The pure part of the telemetry ingest: messages in, outcomes out, one store transaction per batch.

:meth:`Ingestor.prepare` (a window) and :meth:`Ingestor.prepare_event` (a deployment event) classify
one MQTT message without touching the store: it is refused when retained, over
:data:`MAX_WINDOW_BYTES`, not a telemetry (or events) topic of this fleet, refused by the strict
schema (unknown fields, wrong histogram lengths, labels that are not labels), older than the store's
retention (``expired``; on PostgreSQL a year without one) or starting more than a day ahead of the
ingest's clock (``future``: it would open a partition years out). :meth:`Ingestor.commit` then
stores a batch of prepared messages in ONE transaction (windows, events and the refusal counters
together) and returns one :class:`Outcome` per message: "stored", "duplicate" or "rejected:
<reason>". The MQTT topic names the device, but only the window's pseudonym is stored.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from cloud_registry.errors import IngestRejected
from cloud_registry.telemetry.store import MAX_AGE_S, MAX_FUTURE_S, TelemetryStore
from edge_agent.errors import ProtocolError
from edgeline.core.protocol.canonical import parse_json
from edgeline.core.protocol.delivery import MAX_EVENT_BYTES, DeviceEvent, parse_event
from edgeline.core.protocol.partitions import parse_telemetry_topic
from edgeline.core.protocol.telemetry import MAX_WINDOW_BYTES, TelemetryWindow, parse_window
from edgeline.core.protocol.topics import Topics

log = logging.getLogger(__name__)

WindowListener = Callable[[TelemetryWindow], object]
_KEY = re.compile(r"^[0-9a-f]{32}$")
#: topics whose classification is remembered (25,000 devices on 4 partitions, and their old topic)
_TOPIC_CACHE = 125_000


@dataclass(frozen=True)
class Outcome:
    """What became of one message: ``result`` ("stored", "duplicate", "rejected: <reason>"), the
    device of its topic and its idempotency key (window ``key`` or ``event_id``) when readable."""

    result: str
    device_id: str | None = None
    key: str | None = None
    kind: Literal["windows", "events"] = "windows"

    @property
    def stored(self) -> bool:
        return self.result in ("stored", "duplicate")


@dataclass(frozen=True)
class Prepared:
    """One message, classified: a valid window or event, or the reason it is refused."""

    kind: Literal["windows", "events"]
    device_id: str | None
    key: str | None
    payload: bytes
    window: TelemetryWindow | None = None
    event: DeviceEvent | None = None
    refused: str | None = None  # "reason: detail"


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
        try:
            return parse_telemetry_topic(topics, topic)[0]
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
    #: idempotency keys in the acknowledgements sent (one acknowledgement per device per batch)
    acked_keys: int = 0
    batches: int = 0
    store_failures: int = 0

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
            "acks": {"sent": self.acks_sent, "unsent": self.acks_unsent, "keys": self.acked_keys},
            "batches": self.batches,
            "store_failures": self.store_failures,
        }


class Ingestor:
    def __init__(
        self,
        store: TelemetryStore,
        topics: Topics,
        *,
        max_bytes: int = MAX_WINDOW_BYTES,
        listeners: list[WindowListener] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.topics = topics
        self.max_bytes = max_bytes
        self.listeners = list(listeners or [])
        self.clock = clock
        self.stats = IngestStats()
        self._lock = threading.Lock()
        self._topics_seen: dict[str, tuple[str | None, str | None]] = {}

    # -- classify (pure) ----------------------------------------------------------------------------------
    def validate(self, topic: str, payload: bytes, retained: bool = False) -> TelemetryWindow:
        """The window in ``payload``, or :class:`IngestRejected` saying why not."""
        if retained:
            raise IngestRejected("retained: telemetry is never retained")
        if len(payload) > self.max_bytes:
            raise IngestRejected(f"oversize: {len(payload)} bytes, limit {self.max_bytes}")
        _device, topic_error = self._telemetry_topic(topic)
        if topic_error is not None:
            raise IngestRejected(f"schema: {topic_error}")
        try:
            window = parse_window(payload, max_bytes=self.max_bytes)
        except ProtocolError as exc:
            raise IngestRejected(f"schema: {exc}") from exc
        now = self.clock()
        if window.start > now + MAX_FUTURE_S:
            raise IngestRejected(f"future: window starts {window.start - now:.0f} s ahead of the ingest's clock")
        oldest = self.store.retention_s
        if oldest is None and self.store.backend == "postgresql":
            oldest = MAX_AGE_S  # each day of starts is a partition: a device must not create thousands
        if oldest is not None and window.start < now - oldest:
            raise IngestRejected(f"expired: window is older than the retention ({oldest:.0f} s)")
        return window

    def _telemetry_topic(self, topic: str) -> tuple[str | None, str | None]:
        """``(device of the topic, why it is not a telemetry topic or None)``, cached per topic (a
        fleet's devices publish on the same few topics; the cache is bounded against a hostile stream)."""
        hit = self._topics_seen.get(topic)
        if hit is not None:
            return hit
        try:
            parse_telemetry_topic(self.topics, topic)
            error = None
        except ProtocolError as exc:
            error = str(exc)
        hit = (_device_of(self.topics, topic), error)
        if len(self._topics_seen) >= _TOPIC_CACHE:
            self._topics_seen.clear()
        self._topics_seen[topic] = hit
        return hit

    def prepare(self, topic: str, payload: bytes, retained: bool = False) -> Prepared:
        device = self._telemetry_topic(topic)[0]
        try:
            w = self.validate(topic, payload, retained)
        except IngestRejected as exc:
            reason = str(exc).split(":", 1)[0]
            key = _readable_key(payload, "key", self.max_bytes) if reason in ("schema", "expired", "future") else None
            return Prepared("windows", device, key, payload, refused=str(exc))
        return Prepared("windows", device, w.key, payload, window=w)

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

    def prepare_event(self, topic: str, payload: bytes, retained: bool = False) -> Prepared:
        device = _device_of(self.topics, topic)
        try:
            e = self.validate_event(topic, payload, retained)
        except IngestRejected as exc:
            reason = str(exc).split(":", 1)[0]
            key = _readable_key(payload, "event_id", MAX_EVENT_BYTES) if reason == "schema" else None
            return Prepared("events", device, key, payload, refused=str(exc))
        return Prepared("events", device, e.event_id, payload, event=e)

    # -- store --------------------------------------------------------------------------------------------
    def commit(self, batch: Sequence[Prepared]) -> list[Outcome]:
        """Store a batch in one transaction (raises :class:`~cloud_registry.errors.BackendError` when
        the store fails: then nothing of it is stored); then feed the listeners the new windows."""
        windows = [(p.window, p.payload) for p in batch if p.window is not None]
        events = [(p.event, p.payload) for p in batch if p.event is not None]
        refusals: Counter[str] = Counter()
        for p in batch:
            if p.refused is not None:
                prefix = "rejected." if p.kind == "windows" else "events.rejected."
                refusals[prefix + p.refused.split(":", 1)[0]] += 1
        new_w, new_e = self.store.store_batch(windows, events, counters=dict(refusals))
        it_w, it_e = iter(new_w), iter(new_e)
        out: list[Outcome] = []
        fresh: list[TelemetryWindow] = []
        with self._lock:
            for p in batch:
                ev = p.kind == "events"
                if ev:
                    self.stats.events_received += 1
                else:
                    self.stats.received += 1
                if p.refused is not None:
                    reason = p.refused.split(":", 1)[0]
                    (self.stats.events_rejected if ev else self.stats.rejected)[reason] += 1
                    log.warning("%s rejected: %s", "deployment event" if ev else "telemetry", p.refused[:300])
                    out.append(Outcome(f"rejected: {reason}", p.device_id, p.key, p.kind))
                    continue
                new = next(it_e) if ev else next(it_w)
                if ev:
                    self.stats.events_stored += new
                    self.stats.events_duplicates += not new
                else:
                    self.stats.stored += new
                    self.stats.duplicates += not new
                    if new and p.window is not None:
                        fresh.append(p.window)
                out.append(Outcome("stored" if new else "duplicate", p.device_id, p.key, p.kind))
        for w in fresh:
            for listener in self.listeners:
                try:
                    listener(w)
                except Exception:  # an alert sink must never stop ingest
                    log.exception("telemetry listener failed")
        return out

    def refuse(self, p: Prepared, reason: str) -> Outcome:
        """The outcome of a message the store refused (acknowledged as rejected, so not sent again)."""
        with self._lock:
            if p.kind == "events":
                self.stats.events_received += 1
                self.stats.events_rejected[reason] += 1
            else:
                self.stats.received += 1
                self.stats.rejected[reason] += 1
        return Outcome(f"rejected: {reason}", p.device_id, p.key, p.kind)

    # -- one message at a time (tests, tools) ---------------------------------------------------------------
    def receive(self, topic: str, payload: bytes, retained: bool = False) -> Outcome:
        """Validate and store one window. Never raises for bad input."""
        return self.commit([self.prepare(topic, payload, retained)])[0]

    def handle(self, topic: str, payload: bytes, retained: bool = False) -> str:
        return self.receive(topic, payload, retained).result

    def receive_event(self, topic: str, payload: bytes, retained: bool = False) -> Outcome:
        """Validate and store one deployment event. Never raises for bad input."""
        return self.commit([self.prepare_event(topic, payload, retained)])[0]
