"""End-to-end acknowledgement on a real Mosquitto: a device deletes a telemetry window or a deployment
event from its outbox only when the ingest says it is stored, not on the broker's PUBACK.

The fault the acknowledgement exists for: a broker saving its database periodically (Mosquitto's
``autosave_interval``) answers PUBACK, keeps the message in memory for the offline ingest's persistent
session, and is SIGKILLed before its next save. Deleting on PUBACK lost those messages for good."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_registry.broker import MosquittoBroker
from cloud_registry.telemetry.ingest import Ingestor, IngestService
from cloud_registry.telemetry.store import TelemetryStore
from edge_agent.model import LoadedModel
from edge_agent.mqtt_link import LinkSettings, MqttLink, wait_until
from edge_agent.protocol.delivery import DeviceEvent, EventKind, UpdaterState
from edge_agent.protocol.topics import Topics
from edge_agent.telemetry.outbox import Outbox
from edge_agent.telemetry.plugin import TelemetryPlugin
from edge_agent.updater.events import OutboxEventPublisher
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
