"""Telemetry ingest: validate, deduplicate and store the windows devices publish.

:class:`Ingestor` is the pure part: one MQTT message in, one outcome out ("stored", "duplicate" or
"rejected: <reason>"). It refuses retained messages, payloads over :data:`MAX_WINDOW_BYTES`, anything
that is not a telemetry topic of this fleet, and anything the strict window schema refuses (unknown
fields, wrong histogram lengths, labels that are not labels). The MQTT topic names the device, but
only the window's pseudonym is stored.

:class:`IngestService` runs it as a long-lived service: a persistent MQTT session (the broker queues
windows while the service is down), MQTT 5 shared subscriptions so several workers split the load
(``$share/<group>/...``), and the store write happens inside the message handler, i.e. *before* paho
sends the PUBACK, so an acknowledged window is on disk.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from cloud_registry.errors import BackendError, IngestRejected
from cloud_registry.telemetry.store import TelemetryStore
from edge_agent.errors import EdgeAgentError, ProtocolError
from edge_agent.mqtt_link import LinkSettings, MqttLink
from edge_agent.protocol.telemetry import MAX_WINDOW_BYTES, TelemetryWindow, parse_window
from edge_agent.protocol.topics import Topics

log = logging.getLogger(__name__)

WindowListener = Callable[[TelemetryWindow], object]


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": dict(self.rejected),
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
        """Validate and store one message. Never raises for bad input: returns the outcome."""
        with self._lock:
            self.stats.received += 1
        try:
            window = self.validate(topic, payload, retained)
        except IngestRejected as exc:
            reason = str(exc).split(":", 1)[0]
            with self._lock:
                self.stats.rejected[reason] += 1
            self.store.bump(f"rejected.{reason}")
            log.warning("telemetry rejected on %s: %s", topic, str(exc)[:300])
            return f"rejected: {reason}"
        new = self.store.add(window, raw=payload)
        with self._lock:
            if new:
                self.stats.stored += 1
            else:
                self.stats.duplicates += 1
        if not new:
            return "duplicate"
        for listener in self.listeners:
            try:
                listener(window)
            except Exception:  # an alert sink must never stop ingest
                log.exception("telemetry listener failed")
        return "stored"


@dataclass
class IngestService:
    """The ingest as a service on one MQTT connection. ``shared`` uses an MQTT 5 shared subscription
    (default when the link speaks MQTT 5), so N services split the windows between them."""

    ingestor: Ingestor
    settings: LinkSettings
    shared: bool | None = None
    share_group: str = "ingest"
    link: MqttLink = field(init=False)

    def __post_init__(self) -> None:
        self.link = MqttLink(self.settings)
        use_shared = self.settings.protocol == "5" if self.shared is None else self.shared
        topics = self.ingestor.topics
        self.topic_filter = topics.shared_telemetry(self.share_group) if use_shared else topics.all_device_telemetry()

    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            self.ingestor.handle(topic, payload, retained)
        except BackendError:
            log.exception("telemetry store failed; window on %s not stored", topic)

    def start(self, timeout: float = 10.0) -> None:
        self.link.subscribe(self.topic_filter, self._on_message, qos=1)
        try:
            self.link.connect(timeout)
        except EdgeAgentError as exc:
            self.link.stop()
            raise BackendError(f"ingest cannot reach the broker: {exc}") from exc
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
