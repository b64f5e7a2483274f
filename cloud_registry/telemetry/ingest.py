"""Telemetry ingest as a service: store the windows and deployment events devices publish, in
batches, and tell the broker and each device what is stored.

:class:`~cloud_registry.telemetry.ingestor.Ingestor` is the pure part (classify, then store a batch
in one transaction). :class:`IngestService` runs it on MQTT:

* persistent sessions (the broker queues messages while the service is down): one, or with
  partitions one per telemetry filter besides the worker's own (:mod:`.ingest_sessions`: on
  nats-server several QoS 1 subscriptions in one session stall for its 30 s ack wait);
* the load split between workers on any broker: with ``partitions = N`` and ``workers = W``,
  worker ``index`` subscribes only its partitions of the telemetry topics
  (:mod:`edgeline.core.protocol.partitions`); worker 0 also reads the unpartitioned topic of
  earlier releases and the deployment events. Where the broker has MQTT 5 shared subscriptions
  (``shared``, default on MQTT 5) every filter is shared (``$share/<group>/...``) and every worker
  reads the old topic and the events too;
* batches: the network thread only queues messages (waking the writer only when it sleeps); a
  writer thread takes whatever has queued (up to ``max_batch``), classifies it, stores it in ONE
  transaction with the cyclic garbage collector paused (:func:`gc_paused`), and only then PUBACKs
  each message to the broker (paho manual acknowledgements, :mod:`.acking_link`: all PUBACKs of a
  batch in one write) and publishes the end-to-end acknowledgements (``devices/<id>/acks``, QoS 1, idempotency
  keys only): at once when nothing more is queued, else one message per device for what was stored
  within ``ack_delay_s``. So a message the broker considers acknowledged is stored, and a worker
  killed mid-batch leaves its unacknowledged messages with the broker, which sends them again. A
  store failure stops the batch from being acknowledged; it is retried until it succeeds. A stored
  message that comes again is acknowledged again; one the schema refuses is acknowledged as rejected
  when its key can be read, so the device stops sending it.

The device deletes a window from its outbox only on the end-to-end acknowledgement, never on the
broker's PUBACK: a broker saving its database periodically can acknowledge a message and crash
without it.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from cloud_registry.errors import BackendError
from cloud_registry.telemetry.acking_link import AckingLink, Delivery
from cloud_registry.telemetry.ingest_sessions import per_filter, plan_sessions
from cloud_registry.telemetry.ingestor import Ingestor, IngestStats, Outcome, Prepared, WindowListener
from cloud_registry.telemetry.store import StoreRefused, TelemetryStore
from edge_agent.errors import EdgelineError
from edgeline.core.mqtt_link import LinkSettings
from edgeline.core.protocol.canonical import canonical_json
from edgeline.core.protocol.partitions import TelemetryTopics
from edgeline.core.protocol.partitions import shared as share_filter
from edgeline.core.protocol.telemetry import ACK_SCHEMA, MAX_ACK_KEYS, IngestCapabilities

log = logging.getLogger(__name__)
#: device acknowledgement topics remembered (as many devices as the ingestor's topic cache)
_ACK_TOPICS = 125_000

__all__ = ["IngestService", "IngestStats", "Ingestor", "Outcome", "WindowListener", "wait_for_count"]


@dataclass
class IngestService:
    """The ingest as a service on its MQTT sessions (see the module's docstring)."""

    ingestor: Ingestor
    settings: LinkSettings
    shared: bool | None = None
    share_group: str = "ingest"
    #: also store the deployment events and acknowledge them (the device keeps them until then)
    events: bool = True
    partitions: int = 0
    workers: int = 1
    index: int = 0
    #: the most messages one transaction stores (the broker's in-flight window bounds it too)
    max_batch: int = 1000
    #: while more messages are queued, a device's end-to-end acknowledgement waits up to this long for
    #: more of its keys (one message for all: a device draining its outbox gets one for many
    #: windows); when nothing is queued it goes at once. 1 s against 0.25 s, in a 1,000-device
    #: drain: 1,000-2,000 acknowledgements per 10,000 windows instead of 2,800-4,800, a sixth less
    #: worker CPU and 40% less broker CPU (a device resends after ``ack_resend_s``, 30 s)
    ack_delay_s: float = 1.0
    #: a session per telemetry filter or one for all (:mod:`.ingest_sessions`; auto: per filter
    #: when partitioned)
    sessions: str = "auto"
    link: AckingLink = field(init=False)

    def __post_init__(self) -> None:
        self.link = AckingLink(self.settings)
        self.split = per_filter(self.sessions, self.partitions)
        #: shared subscriptions decided once the link knows which MQTT version the broker speaks
        self._shared_after_connect = self.shared is None and self.settings.protocol == "auto"
        self._plan(self.settings.protocol == "5" if self.shared is None else self.shared)
        self._events_head, _, self._events_tail = self.ingestor.topics.all_device_events().partition("+")
        self._queue: deque[Delivery] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        #: the writer sleeps on the condition: only then does a network thread take its lock
        self._idle = False
        self._writer: threading.Thread | None = None
        self.batch_sizes: list[int] = []
        self._pending: dict[str, dict[str, list[str]]] = {}
        self._ack_topics: dict[str, str] = {}
        #: the batch being stored paused the garbage collector (:func:`gc_paused`)
        self._gc_held = False
        self._acks_due = float("inf")

    def _plan(self, use_shared: bool) -> None:
        """The filters this worker reads and the sessions it reads them on (links not connected yet)."""
        self.use_shared = use_shared
        topics = self.ingestor.topics
        tt = TelemetryTopics(topics, self.partitions)
        filters = tt.filters(self.workers, self.index, legacy=True if use_shared else None)
        self.telemetry_filters = [share_filter(f, self.share_group) if use_shared else f for f in filters]
        events_here = self.events and (use_shared or self.index == 0)
        self.events_filter = topics.shared_events(self.share_group) if use_shared else topics.all_device_events()
        self.events_filters = [self.events_filter] if events_here else []
        self.topic_filter = ", ".join(self.telemetry_filters)
        self._plans = plan_sessions(self.settings.client_id, self.telemetry_filters, self.events_filters, self.split)
        self.links = [self.link] + [AckingLink(replace(self.settings, client_id=p.client_id)) for p in self._plans[1:]]
        for i, link in enumerate(self.links):
            link.source = i

    # -- the network thread: queue only -------------------------------------------------------------------
    def _enqueue(self, d: Delivery) -> None:
        """Queue a message (deque.append is atomic); wake the writer only when it sleeps. The writer
        marks itself idle and looks at the queue again under the lock before it sleeps, so a message
        appended before it looked is seen, and one appended after finds it idle and wakes it."""
        self._queue.append(d)
        if self._idle:
            with self._cond:
                self._cond.notify()

    # -- the writer thread --------------------------------------------------------------------------------
    def _take(self) -> list[Delivery] | None:
        """The next batch: whatever has queued (up to max_batch); [] when only pending device
        acknowledgements are due; None when stopping with nothing left."""
        with self._cond:
            self._idle = True
            try:
                while not self._queue:
                    if self._stopping:
                        return None
                    due = self._acks_due - time.monotonic() if self._pending else 0.5
                    if self._pending and due <= 0:
                        return []
                    self._cond.wait(min(0.5, due))
            finally:
                self._idle = False
        n = min(len(self._queue), self.max_batch)  # only this thread takes from the queue
        return [self._queue.popleft() for _ in range(n)]

    def _prepare(self, d: Delivery) -> Prepared:
        if d.topic.endswith(self._events_tail) and d.topic.startswith(self._events_head):
            return self.ingestor.prepare_event(d.topic, d.payload, d.retained)
        return self.ingestor.prepare(d.topic, d.payload, d.retained)

    def _write(self) -> None:
        try:
            while (batch := self._take()) is not None:
                try:
                    if batch and not self._process(batch):
                        return  # stopping with a batch not stored: not acknowledged, the broker sends it again
                except Exception:  # never the writer thread: unacknowledged, the batch comes again
                    log.exception("telemetry batch of %d failed; not acknowledged", len(batch))
                if not self._queue or time.monotonic() >= self._acks_due:
                    self._send_acks()  # at once when idle; while busy, within ack_delay_s
        finally:
            self._send_acks()

    def _process(self, batch: list[Delivery]) -> bool:
        """Store a batch, then acknowledge it: to the broker at once, to each device within ack_delay_s."""
        with gc_paused() as self._gc_held:  # until the batch's windows are freed: no collection walks them
            outcomes = self._commit([self._prepare(d) for d in batch])
        if outcomes is None:
            return False
        if len(self.links) == 1:
            self.link.ack_many(batch)
        else:  # each on the session it came on
            by_link: dict[int, list[Delivery]] = {}
            for d in batch:
                by_link.setdefault(d.source, []).append(d)
            for source, deliveries in by_link.items():
                self.links[source].ack_many(deliveries)
        self._acknowledge(outcomes)
        self.batch_sizes.append(len(batch))
        return True

    def _commit(self, prepared: list[Prepared]) -> list[Outcome] | None:
        """Store a batch: retried while the store fails; a batch with a value the store refuses is
        split until the message at fault is alone, and that one is refused for good."""
        delay = 0.2
        while True:
            try:
                outcomes = self.ingestor.commit(prepared)
                self.ingestor.stats.batches += 1
                return outcomes
            except StoreRefused as exc:
                if len(prepared) == 1:
                    log.warning("telemetry store refused a message of %s: %s", prepared[0].device_id, exc)
                    return [self.ingestor.refuse(prepared[0], "store")]
                half = len(prepared) // 2
                first = self._commit(prepared[:half])
                second = self._commit(prepared[half:]) if first is not None else None
                return None if first is None or second is None else first + second
            except BackendError:
                self.ingestor.stats.store_failures += 1
                log.exception("telemetry store failed; batch of %d not acknowledged, retrying", len(prepared))
            with self._cond:
                if self._stopping:
                    return None
                self._wait_collecting(delay)
            delay = min(delay * 2, 5.0)

    def _wait_collecting(self, delay: float) -> None:
        """Wait before a retry with the garbage collector running (a store down for an hour must not
        leave the process without it), paused again for the next attempt."""
        held = self._gc_held and not gc.isenabled()
        if held:
            gc.enable()
        try:
            self._cond.wait(delay)
        finally:
            if held:
                gc.disable()

    def _acknowledge(self, outcomes: list[Outcome]) -> None:
        """Collect the end-to-end acknowledgements of a stored batch, per device; they go out within
        ``ack_delay_s`` of the first, one message per device for all its keys stored meanwhile."""
        per_device = self._pending
        if not per_device:
            self._acks_due = time.monotonic() + self.ack_delay_s
        for o in outcomes:
            device, key, result = o.device_id, o.key, o.result
            if device is None or key is None or result == "rejected: retained":
                continue
            name = o.kind if result in _STORED else f"rejected_{o.kind}"
            fields = per_device.get(device)
            if fields is None:
                per_device[device] = {name: [key]}
            elif name in fields:
                fields[name].append(key)
            else:
                fields[name] = [key]
        if not per_device:
            self._acks_due = float("inf")

    def _send_acks(self) -> None:
        """Publish the pending acknowledgements. Never waits for the PUBACK; a lost acknowledgement
        makes the device send again, and the redelivery is acknowledged again."""
        per_device, self._pending, self._acks_due = self._pending, {}, float("inf")
        for device, fields in per_device.items():
            topic = self._ack_topic(device)
            for part in _split(fields):
                try:
                    self.link.publish(topic, encode_ack(part), qos=1)
                except EdgelineError as exc:
                    self.ingestor.stats.acks_unsent += 1
                    log.info("acknowledgement for %s not sent (%s); the device sends it again", device, exc)
                    continue
                self.ingestor.stats.acks_sent += 1
                self.ingestor.stats.acked_keys += sum(len(v) for v in part.values())

    def _ack_topic(self, device: str) -> str:
        """``devices/<id>/acks``, built (and its id checked) once per device; bounded like the
        ingestor's topic cache, against a stream of new device ids."""
        topic = self._ack_topics.get(device)
        if topic is None:
            if len(self._ack_topics) >= _ACK_TOPICS:
                self._ack_topics.clear()
            topic = self._ack_topics[device] = self.ingestor.topics.device_acks(device)
        return topic

    @property
    def client_ids(self) -> list[str]:
        """The client ids of the worker's sessions, its own first."""
        return [p.client_id for p in self._plans]

    @property
    def redelivered(self) -> int:
        """Messages the broker sent again (DUP flag) on any of the worker's sessions."""
        return sum(link.redelivered for link in self.links)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def _announce(self, _session_present: bool) -> None:
        """At every connect: the retained capabilities message (a crashed broker may have lost it)."""
        topic = self.ingestor.topics.ingest_capabilities()
        try:
            self.link.publish(topic, IngestCapabilities(acks=True).encode(), qos=1, retain=True)
        except EdgelineError as exc:
            log.warning("ingest capabilities not published: %s", exc)

    def start(self, timeout: float = 10.0) -> None:
        self._stopping = False
        self._writer = threading.Thread(target=self._write, name="edgeline-ingest-writer", daemon=True)
        self._writer.start()
        self.link.on_connect(self._announce)
        try:
            if self._shared_after_connect:  # protocol auto: $share where the broker took MQTT 5
                self.link.connect(timeout)
                self._plan(self.link.stats.protocol == "5")
            for link, plan in zip(self.links, self._plans, strict=True):
                # the worker's own session also stores what an earlier layout's telemetry filters bring
                routed = self.telemetry_filters if self.split and link is self.link else ()
                link.deliver(list(plan.filters), self._enqueue, routed=routed)
            for link in self.links:  # every session connecting at once (a queue drains on each)
                if not link.connected:
                    link.start()
            for link in self.links:
                if not link.connected:
                    link.connect(timeout)  # started: waits for its CONNACK, raises without one
        except EdgelineError as exc:
            self.stop()
            raise BackendError(f"ingest cannot reach the broker: {exc}") from exc
        if self.split:  # what the worker's own session subscribed in one-session layouts, not kept there
            self.link.unsubscribe_many(self.telemetry_filters)
        for link in self.links:  # a session queues only for granted filters: granted before start returns
            if not link.wait_granted(timeout):
                log.warning("ingest: %s did not grant every subscription within %.0f s", link.stats.address, timeout)
        try:  # the one of the first connect, on the broker before start returns
            topic = self.ingestor.topics.ingest_capabilities()
            self.link.publish_sync(topic, IngestCapabilities(acks=True).encode(), qos=1, retain=True, timeout=timeout)
        except EdgelineError as exc:
            log.warning("ingest capabilities not confirmed by the broker: %s", exc)
        log.info("telemetry ingest subscribed to %s", self.topic_filter)

    def stop(self, drain_s: float = 10.0) -> None:
        """Store and acknowledge what has queued (up to ``drain_s``), then disconnect."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._writer is not None:
            self._writer.join(drain_s)
            self._writer = None
        for link in self.links:
            link.stop()

    def run(self, stop: threading.Event, *, every_s: float = 5.0, on_tick: Callable[[], None] | None = None) -> None:
        """Serve until ``stop`` is set, calling ``on_tick`` (e.g. the silent-device check) periodically."""
        while not stop.wait(every_s):
            if on_tick is not None:
                try:
                    on_tick()
                except Exception:
                    log.exception("ingest periodic task failed")
        self.stop()


@contextmanager
def gc_paused() -> Iterator[bool]:
    """The cyclic garbage collector paused while a batch is validated and stored. A batch holds a
    thousand windows of some thirty objects each: the collector, run every 700 allocations, walked
    them again and again (half the validation's CPU, measured). Reference counting frees them as
    before; cycles are collected once the batch is done."""
    if not gc.isenabled():
        yield False  # a process running without the collector keeps it off
        return
    gc.disable()
    try:
        yield True
    finally:
        gc.enable()


def encode_ack(fields: dict[str, list[str]]) -> bytes:
    """What ``Ack.model_validate(fields).encode()`` gives, without validating again keys the window
    and event schemas (or the refusal's key check) already validated: one per device per ack_delay_s."""
    return canonical_json({"schema": ACK_SCHEMA, **{name: fields.get(name, []) for name in _ACK_LISTS}})


_ACK_LISTS = ("windows", "events", "rejected_windows", "rejected_events")
_STORED = frozenset(("stored", "duplicate"))


def _split(fields: dict[str, list[str]]) -> list[dict[str, list[str]]]:
    """Acknowledgement bodies of at most MAX_ACK_KEYS keys per list."""
    longest = max(len(v) for v in fields.values())
    if longest <= MAX_ACK_KEYS:  # nearly always: one body
        return [fields]
    out: list[dict[str, list[str]]] = []
    for i in range(0, longest, MAX_ACK_KEYS):
        part = {k: v[i : i + MAX_ACK_KEYS] for k, v in fields.items() if v[i : i + MAX_ACK_KEYS]}
        out.append(part)
    return out


def wait_for_count(store: TelemetryStore, n: int, timeout: float) -> bool:
    """Poll the store until it holds at least ``n`` windows (for tests and the demo)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.count() >= n:
            return True
        time.sleep(0.05)
    return store.count() >= n
