"""End-to-end acknowledgement on a real Mosquitto: a device deletes a telemetry window or a deployment
event from its outbox only when the ingest says it is stored, not on the broker's PUBACK.

The fault the acknowledgement exists for: a broker saving its database periodically (Mosquitto's
``autosave_interval``) answers PUBACK, keeps the message in memory for the offline ingest's persistent
session, and is SIGKILLed before its next save. Deleting on PUBACK lost those messages for good."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from cloud_registry.telemetry.ingest import Ingestor, IngestService
from cloud_registry.telemetry.store import TelemetryStore
from edge_agent.model import LoadedModel
from edge_agent.outbox.acks import ack_router
from edge_agent.outbox.pump import OutboxPump
from edge_agent.outbox.store import Outbox
from edge_agent.telemetry.plugin import TelemetryPlugin
from edge_agent.updater.events import OutboxEventPublisher
from edgeline.core.mqtt_link import LinkSettings, MqttLink, wait_until
from edgeline.core.protocol.delivery import DeviceEvent, EventKind, UpdaterState
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker
from firmware_configs.telemetry_section import TelemetrySection
from tests.telemetry.conftest import SECRET, AgentStub, SimClock, frames, run_frames

TOPICS = Topics()
HOUR = 3600.0
DEVICE = "line-7-cam-2"


@pytest.fixture
def lazy_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A real Mosquitto that saves its database only once an hour (or when stopped gracefully)."""
    broker = MosquittoBroker(tmp_path / "mosquitto", autosave_interval=3600)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


def settings(broker: MosquittoBroker, client_id: str) -> LinkSettings:
    return LinkSettings(port=broker.port, client_id=client_id, reconnect_min_s=0.2, reconnect_max_s=1.0)


def ingest_service(broker: MosquittoBroker, store: TelemetryStore) -> IngestService:
    return IngestService(Ingestor(store, TOPICS), settings(broker, "ingest-ack"), shared=False)


def register_ingest_session(broker: MosquittoBroker, store: TelemetryStore) -> None:
    """The ingest subscribes once (persistent session) and goes away; a graceful broker restart puts
    its session on the broker's disk, so the broker queues windows for it from now on."""
    svc = ingest_service(broker, store)
    svc.start()
    svc.stop()
    broker.stop()
    broker.start()


def test_windows_acknowledged_by_a_broker_that_then_crashed_are_sent_again_and_stored_once(
    lazy_broker: MosquittoBroker, tmp_path: Path, ref_model: LoadedModel, store: TelemetryStore
) -> None:
    register_ingest_session(lazy_broker, store)
    clock = SimClock()
    link = MqttLink(settings(lazy_broker, "device-ack"))
    outbox = Outbox(tmp_path / "device" / "outbox.db", clock=clock)
    plugin = TelemetryPlugin(
        TelemetrySection(window_s=HOUR, min_frames=5),
        outbox=outbox,
        secret=SECRET,
        topics=TOPICS,
        link=link,
        clock=clock,
        background=False,
    )
    plugin.start(AgentStub(device_id=DEVICE, current_model=ref_model))
    link.start()
    try:
        assert link.wait_connected(10)
        assert wait_until(lambda: outbox.peer_confirms, 10), "the ingest's retained capabilities arrive"
        results = list(run_frames(ref_model, frames(10, seed=31)))
        for _hour in range(3):  # three windows, each PUBACKed by the broker (the ingest is offline)
            for r in results:
                plugin.on_result(r)
                clock.advance(HOUR / 10)
            plugin.tick()
        keys = {m.key for m in outbox.peek(100, include_unconfirmed=True)}
        assert len(keys) == 3, "each window stays in the outbox until the ingest confirms it"

        lazy_broker.kill()  # the broker had them in memory only
        lazy_broker.start()
        svc = ingest_service(lazy_broker, store)
        svc.start()
        try:
            assert wait_until(lambda: link.connected, 15)
            plugin.tick()  # after a reconnect the unconfirmed windows go again
            assert wait_until(lambda: store.keys() == keys, 15), f"stored {store.keys()} of {keys}"
            assert wait_until(lambda: len(outbox) == 0, 15), "the ingest's acknowledgements delete them"
            assert store.count() == 3
            st = outbox.stats().counters
            assert st["delivered"] == 3 and st.get("delivered.unconfirmed", 0) == 0
            assert outbox.dropped() == 0
        finally:
            svc.stop()
    finally:
        plugin.stop()
        link.stop()
        outbox.close()


def event(sequence: int) -> DeviceEvent:
    return DeviceEvent(device_id=DEVICE, kind=EventKind.DOWNLOADING, state=UpdaterState.DOWNLOADING, sequence=sequence)


def test_deployment_events_acknowledged_by_a_crashed_broker_are_sent_again_and_stored_once(
    lazy_broker: MosquittoBroker, tmp_path: Path, store: TelemetryStore
) -> None:
    register_ingest_session(lazy_broker, store)
    link = MqttLink(settings(lazy_broker, "device-ev-ack"))
    outbox = Outbox(tmp_path / "events.db")
    link.start()
    pub = OutboxEventPublisher(outbox, link, TOPICS, DEVICE)
    try:
        assert link.wait_connected(10)
        assert wait_until(lambda: outbox.peer_confirms, 10), "the ingest's retained capabilities arrive"
        sent = [event(i) for i in range(1, 4)]
        for ev in sent:
            pub.publish_event(ev)
        assert wait_until(lambda: outbox.stats().counters.get("sent", 0) >= 3, 10), outbox.stats()
        assert len(outbox) == 3

        lazy_broker.kill()
        lazy_broker.start()
        svc = ingest_service(lazy_broker, store)
        svc.start()
        try:
            want = {e.event_id for e in sent}
            assert wait_until(lambda: store.event_ids() == want, 20), f"stored {store.event_ids()} of {want}"
            assert wait_until(lambda: len(outbox) == 0, 15)
            assert outbox.stats().counters["delivered"] == 3
        finally:
            svc.stop()
    finally:
        pub.close()
        link.stop()
        outbox.close()


# -- the outbox's side, pure (a real SQLite file, a simulated clock) ----------------------------------
def test_a_sent_message_waits_for_its_confirmation_and_goes_again_until_then(tmp_path: Path) -> None:
    clock = SimClock()
    ob = Outbox(tmp_path / "o.db", clock=clock, resend_s=30, resend_max_s=100)
    ob.set_peer_confirms(True)
    ob.put("t", b"w1", kind="telemetry", key="a" * 32)
    ob.put("t", b"w2", kind="telemetry", key="b" * 32)
    ids = [m.id for m in ob.peek(10)]
    assert ob.sent(ids) == 0  # PUBACK: sent, not deleted
    assert ob.peek(10) == [] and len(ob) == 2
    clock.advance(29)
    assert ob.peek(10) == []
    clock.advance(2)
    assert len(ob.peek(10)) == 2  # 30 s without a confirmation: due again
    ob.sent(ids)
    clock.advance(59)
    assert ob.peek(10) == []  # the delay doubles ...
    clock.advance(2)
    ob.sent(ids)
    clock.advance(99)
    assert ob.peek(10) == []
    clock.advance(2)
    assert len(ob.peek(10)) == 2  # ... up to resend_max_s
    ob.sent(ids)
    assert ob.rearm() == 2 and len(ob.peek(10)) == 2  # a reconnect makes them due at once
    assert ob.confirm(["a" * 32, "f" * 32]) == 1  # a key of another outbox is ignored
    assert ob.reject(["b" * 32]) == 1
    assert len(ob) == 0 and ob.stats().bytes == 0
    c = ob.stats().counters
    assert (c["sent"], c["resent"], c["delivered"], c["dropped.telemetry.rejected"]) == (8, 6, 1, 1)


def test_without_a_confirming_ingest_a_message_goes_after_three_acknowledged_sends(tmp_path: Path) -> None:
    clock = SimClock()
    ob = Outbox(tmp_path / "o.db", clock=clock, resend_s=30)
    assert not ob.peer_confirms
    ob.put("t", b"e", kind="event", key="ev-1")
    for sends in range(1, 4):
        msgs = ob.peek(10)
        assert len(msgs) == 1, f"send {sends}"
        ob.sent([m.id for m in msgs])
        clock.advance(1000)
    assert len(ob) == 0
    assert ob.stats().counters["delivered.unconfirmed"] == 1
    assert "delivered" not in ob.stats().counters


def test_the_peer_state_is_durable_and_cleared_by_an_empty_capabilities_message(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    ob.confirm([])  # any acknowledgement proves an ingest that confirms
    ob.close()
    ob = Outbox(tmp_path / "o.db")
    assert ob.peer_confirms
    ob.set_peer_confirms(False)
    ob.close()
    assert not Outbox(tmp_path / "o.db").peer_confirms


def test_an_outbox_written_before_the_acknowledgement_opens_with_its_messages(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        """CREATE TABLE messages(id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
        priority INTEGER NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL, size INTEGER NOT NULL,
        created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, not_before REAL NOT NULL DEFAULT 0);
        INSERT INTO messages(key, kind, priority, topic, payload, size, created)
        VALUES ('k', 'event', 0, 't', x'00', 70, 1);"""
    )
    db.commit()
    db.close()
    ob = Outbox(path)
    [m] = ob.peek(10)
    ob.set_peer_confirms(True)
    ob.sent([m.id])
    assert len(ob) == 1 and ob.confirm(["k"]) == 1


# -- old and new on either side, on a real broker ---------------------------------------------------------
def test_a_device_whose_ingest_does_not_acknowledge_keeps_the_old_guarantee(
    mosquitto: MosquittoBroker, tmp_path: Path, store: TelemetryStore, ref_model: LoadedModel
) -> None:
    """An ingest from before the acknowledgement: a plain subscriber that stores, and says nothing."""
    old = MqttLink(settings(mosquitto, "old-ingest"))
    ingestor = Ingestor(store, TOPICS)

    def store_only(topic: str, payload: bytes, retained: bool) -> None:
        ingestor.handle(topic, payload, retained)

    old.subscribe(TOPICS.all_device_telemetry(), store_only)
    old.connect(10)
    link = MqttLink(settings(mosquitto, "device-new"))
    outbox = Outbox(tmp_path / "outbox.db", resend_s=0.2, resend_max_s=0.2)
    plugin = TelemetryPlugin(
        TelemetrySection(window_frames=5, min_frames=5, tick_s=0.05),
        outbox=outbox,
        secret=SECRET,
        topics=TOPICS,
        link=link,
    )
    plugin.start(AgentStub(device_id=DEVICE, current_model=ref_model))
    link.start()
    try:
        assert link.wait_connected(10)
        for r in run_frames(ref_model, frames(20, seed=32)):
            plugin.on_result(r)
        assert wait_until(lambda: len(outbox) == 0 and store.count() == 4, 20), outbox.stats()
        c = outbox.stats().counters
        assert c["delivered.unconfirmed"] == 4 and c["sent"] == 12  # three sends each, then deleted
        assert wait_until(lambda: ingestor.stats.duplicates == 8, 10)  # the old ingest stored each once
        assert not outbox.peer_confirms
    finally:
        plugin.stop()
        link.stop()
        old.stop()
        outbox.close()


def test_an_old_device_is_served_by_a_new_ingest(mosquitto: MosquittoBroker, store: TelemetryStore) -> None:
    """A device from before the acknowledgement publishes and forgets; nobody hears the acknowledgements."""
    from tests.telemetry.test_window_schema import body

    svc = ingest_service(mosquitto, store)
    svc.start()
    dev = MqttLink(settings(mosquitto, "device-old"))
    dev.connect(10)
    try:
        for i in range(5):
            payload = json.dumps(body(key=f"{i:032x}")).encode()
            dev.publish_sync(TOPICS.device_telemetry("old-1"), payload)
        assert wait_until(lambda: store.count() == 5, 10)
        assert wait_until(lambda: svc.ingestor.stats.acked_keys == 5, 10)
        assert 1 <= svc.ingestor.stats.acks_sent <= 5  # one per device per batch
    finally:
        dev.stop()
        svc.stop()


def test_a_window_the_ingest_refuses_for_good_is_dropped_and_counted_not_sent_forever(
    mosquitto: MosquittoBroker, tmp_path: Path, store: TelemetryStore
) -> None:
    svc = ingest_service(mosquitto, store)
    svc.start()
    link = MqttLink(settings(mosquitto, "device-bad"))
    outbox = Outbox(tmp_path / "outbox.db")
    ack_router(link, TOPICS, DEVICE).add(outbox)
    pump = OutboxPump(outbox, link)
    link.connect(10)
    try:
        key = "c" * 32
        outbox.put(TOPICS.device_telemetry(DEVICE), b'{"schema": "edgeline.telemetry/9", "key": "%s"}' % key.encode(),
                   kind="telemetry", key=key)  # fmt: skip
        assert wait_until(lambda: (pump.drain(), len(outbox) == 0)[1], 10)
        assert outbox.stats().counters["dropped.telemetry.rejected"] == 1
        assert store.count() == 0 and svc.ingestor.stats.rejected == {"schema": 1}
    finally:
        link.stop()
        svc.stop()
        outbox.close()


def test_the_fleet_view_on_the_ingest_link_still_sees_the_events(
    mosquitto: MosquittoBroker, store: TelemetryStore
) -> None:
    """``edgeline ingest --no-shared``: the fleet view and the ingest subscribe the same events filter
    on one link; both get every event."""
    from cloud_registry.fleet import FleetWatcher

    svc = ingest_service(mosquitto, store)
    fleet = FleetWatcher(svc.link, TOPICS)
    svc.start()
    dev = MqttLink(settings(mosquitto, "device-ev"))
    dev.connect(10)
    try:
        ev = event(7)
        dev.publish_sync(TOPICS.device_events(DEVICE), ev.to_bytes())
        assert wait_until(lambda: store.event_ids() == {ev.event_id}, 10)
        assert wait_until(lambda: fleet.view.row(DEVICE, 0).last_event is not None, 10)
    finally:
        dev.stop()
        svc.stop()


# -- what arrives on the acknowledgement topics is network input ----------------------------------------
@examples(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda d: json.dumps(d).encode(),
            st.dictionaries(
                st.sampled_from(["schema", "windows", "events", "rejected_windows", "rejected_events", "x"]),
                st.one_of(
                    st.just("edgeline.ack/1"),
                    st.lists(st.one_of(st.text(max_size=40), st.just("a" * 32), st.integers()), max_size=5),
                    st.none(),
                ),
            ),
        ),
    )
)
def test_any_payload_on_the_ack_topics_is_parsed_or_refused_and_never_breaks_the_router(payload: bytes) -> None:
    from edge_agent.errors import ProtocolError
    from edgeline.core.protocol.telemetry import parse_ack, parse_capabilities

    for parse in (parse_ack, parse_capabilities):
        with contextlib.suppress(ProtocolError):
            parse(payload)
    router = ack_router(_NullLink(), TOPICS, DEVICE)
    router._on_ack(TOPICS.device_acks(DEVICE), payload, False)
    router._on_capabilities(TOPICS.ingest_capabilities(), payload, True)


class _NullLink:
    """A link that takes subscriptions and delivers nothing (the handlers are driven directly)."""

    def subscribe(self, topic_filter: str, handler: object, qos: int = 1) -> None:
        pass


def test_clearing_the_retained_capabilities_returns_devices_to_the_old_ingest_rule(
    mosquitto: MosquittoBroker, tmp_path: Path, store: TelemetryStore
) -> None:
    """The downgrade path of docs/protocol.md: an empty retained message on ``ingest/capabilities``."""
    svc = ingest_service(mosquitto, store)
    svc.start()
    svc.stop()  # the capabilities stay retained
    link = MqttLink(settings(mosquitto, "device-downgrade"))
    outbox = Outbox(tmp_path / "outbox.db")
    ack_router(link, TOPICS, DEVICE).add(outbox)
    link.connect(10)
    try:
        assert wait_until(lambda: outbox.peer_confirms, 10)
        admin = MqttLink(settings(mosquitto, "operator"))
        admin.connect(10)
        admin.publish_sync(TOPICS.ingest_capabilities(), b"", retain=True)
        admin.stop()
        assert wait_until(lambda: not outbox.peer_confirms, 10)
    finally:
        link.stop()
        outbox.close()
    assert not Outbox(tmp_path / "outbox.db").peer_confirms  # durable
