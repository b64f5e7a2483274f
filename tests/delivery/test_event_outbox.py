"""Deployment events go through a durable outbox: taken while the broker is down, and across a restart
of the publisher, they arrive once the broker is back."""

from __future__ import annotations

from pathlib import Path

from edge_agent.cloud_link import CloudLink, DeviceIdentity
from edge_agent.outbox.store import Outbox
from edge_agent.updater.events import LinkEventPublisher, OutboxEventPublisher
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.delivery import DeviceEvent, EventKind, UpdaterState, parse_event
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker
from firmware_configs.cloud_section import CloudSection
from tests.delivery.conftest import wait_for


def event(kind: EventKind, seq: int) -> DeviceEvent:
    return DeviceEvent(device_id="dev-o", kind=kind, state=UpdaterState.DOWNLOADING, sequence=seq)


def test_events_survive_broker_outage_and_restart(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    topics = Topics()
    got: list[DeviceEvent] = []
    mosquitto.stop()
    link = CloudLink(CloudSection(port=mosquitto.port), DeviceIdentity("dev-o"))
    link.start()  # keeps trying
    first = OutboxEventPublisher(Outbox(tmp_path / "events.db"), link.link, topics, "dev-o")
    first.publish_event(event(EventKind.DOWNLOADING, 1))
    first.publish_event(event(EventKind.VERIFIED, 1))
    first.close()  # the process "dies" with both events undelivered
    assert len(first.outbox) == 2

    second = OutboxEventPublisher(Outbox(tmp_path / "events.db"), link.link, topics, "dev-o")
    second.publish_event(event(EventKind.STAGED, 1))
    mosquitto.start()
    cloud = MqttLink(LinkSettings(port=mosquitto.port, client_id="cloud-o", clean_start=True))
    cloud.subscribe(topics.device_events("dev-o"), lambda t, p, r: got.append(parse_event(p)))
    cloud.connect(10)
    try:
        assert wait_for(lambda: len(got) >= 3, 20)
        assert [e.kind.value for e in got][:3] == ["downloading", "verified", "staged"]
        # sent (the broker's PUBACK), and kept until an ingest confirms them: tests/telemetry/test_ack.py
        assert wait_for(lambda: second.outbox.stats().counters.get("sent", 0) >= 3)
        assert len(second.outbox) == 3
    finally:
        second.close()
        cloud.stop()
        link.stop()


def test_link_publisher_queues_while_offline(mosquitto: MosquittoBroker) -> None:
    topics = Topics()
    got: list[DeviceEvent] = []
    cloud = MqttLink(LinkSettings(port=mosquitto.port, client_id="cloud-l", clean_start=True))
    cloud.subscribe(topics.device_events("dev-o"), lambda t, p, r: got.append(parse_event(p)))
    cloud.connect(10)
    link = CloudLink(CloudSection(port=mosquitto.port), DeviceIdentity("dev-o"))
    pub = LinkEventPublisher(link)
    pub.publish_event(event(EventKind.DOWNLOADING, 2))  # not connected yet: queued
    assert pub.queued == 1
    link.connect(10)  # the publisher flushes on connect
    try:
        assert wait_for(lambda: len(got) == 1) and got[0].sequence == 2 and pub.queued == 0
    finally:
        link.stop()
        cloud.stop()
