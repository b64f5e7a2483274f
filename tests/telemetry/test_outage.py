"""Days of broker outage with agent restarts in between, on a real Mosquitto: every window reaches the
store exactly once after reconnection. The plugin's clock is simulated (days pass in a second); the
broker, the MQTT sessions, the outbox file and the ingest store are real."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cloud_registry.telemetry.ingest import Ingestor, IngestService, wait_for_count
from cloud_registry.telemetry.store import TelemetryStore
from edge_agent.model import LoadedModel
from edge_agent.outbox.store import Outbox
from edge_agent.plugins import FrameResult
from edge_agent.telemetry.plugin import TelemetryPlugin
from edgeline.core.mqtt_link import LinkSettings, MqttLink, wait_until
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker
from firmware_configs.telemetry_section import TelemetrySection
from tests.telemetry.conftest import SECRET, AgentStub, SimClock, frames, run_frames

TOPICS = Topics()
HOUR = 3600.0


def link_settings(broker: MosquittoBroker, client_id: str) -> LinkSettings:
    return LinkSettings(port=broker.port, client_id=client_id, reconnect_min_s=0.2, reconnect_max_s=1.0)


@contextmanager
def ingest_running(broker: MosquittoBroker, store: TelemetryStore, shared: bool = False) -> Iterator[IngestService]:
    svc = IngestService(Ingestor(store, TOPICS), link_settings(broker, "ingest-1"), shared=shared)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


class Device:
    """One agent process: its own MQTT link, outbox handle and telemetry plugin."""

    def __init__(self, broker: MosquittoBroker, outbox_path: Path, clock: SimClock, agent: AgentStub) -> None:
        self.link = MqttLink(link_settings(broker, "device-1"))
        self.link.start()
        self.outbox = Outbox(outbox_path, clock=clock, ttl_s=30 * 86400)
        cfg = TelemetrySection(window_s=HOUR, min_frames=5)
        self.plugin = TelemetryPlugin(
            cfg, outbox=self.outbox, secret=SECRET, topics=TOPICS, link=self.link, clock=clock, background=False
        )
        self.plugin.start(agent)

    def restart_stop(self) -> None:
        self.plugin.stop()
        self.link.stop()
        self.outbox.close()


def feed_hours(device: Device, clock: SimClock, results: list[FrameResult], hours: int) -> None:
    """10 frames per simulated hour; the tick at the end of each hour closes that hour's window."""
    for _ in range(hours):
        for r in results[:10]:
            device.plugin.on_result(r)
            clock.advance(HOUR / 10)
        device.plugin.tick()


def test_days_of_outage_with_restarts_deliver_every_window_exactly_once(
    mosquitto: MosquittoBroker, tmp_path: Path, ref_model: LoadedModel, store: TelemetryStore
) -> None:
    clock = SimClock()
    agent = AgentStub(current_model=ref_model)
    results = list(run_frames(ref_model, frames(10, seed=21)))
    outbox_path = tmp_path / "device" / "outbox.db"
    with ingest_running(mosquitto, store) as ingest:
        dev = Device(mosquitto, outbox_path, clock, agent)
        assert dev.link.wait_connected(10)
        feed_hours(dev, clock, results, 3)
        assert wait_for_count(store, 3, 10)
        assert wait_until(lambda: len(dev.outbox) == 0, 10)  # acknowledged end to end (within ack_delay_s)
        mosquitto.stop()
        assert wait_until(lambda: not dev.link.connected, 10)

        for _day in range(3):  # three days offline, the agent restarted once a day
            feed_hours(dev, clock, results, 24)
            dev.restart_stop()
            dev = Device(mosquitto, outbox_path, clock, agent)
        queued = {m.key for m in dev.outbox.peek(10_000)}
        assert len(queued) == 72
        before = store.keys()
        assert not queued & before

        mosquitto.start()
        assert dev.link.wait_connected(15)
        assert wait_until(lambda: ingest.link.connected, 15)
        dev.plugin.tick()
        assert wait_for_count(store, len(before) + len(queued), 20)
        assert store.keys() == before | queued
        assert wait_until(lambda: len(dev.outbox) == 0, 10), "the ingest acknowledges what it stored"
        assert dev.outbox.dropped() == 0
        assert ingest.ingestor.stats.rejected == {}
        dev.restart_stop()


def test_a_crash_between_puback_and_confirmation_redelivers_and_the_store_keeps_one_copy(
    mosquitto: MosquittoBroker, tmp_path: Path, ref_model: LoadedModel, store: TelemetryStore
) -> None:
    clock = SimClock()
    agent = AgentStub(current_model=ref_model)
    results = list(run_frames(ref_model, frames(10, seed=22)))
    outbox_path = tmp_path / "outbox.db"
    with ingest_running(mosquitto, store) as ingest:
        dev = Device(mosquitto, outbox_path, clock, agent)
        assert dev.link.wait_connected(10)
        dev.plugin.pump = None  # hold the windows in the outbox
        feed_hours(dev, clock, results, 20)
        held = dev.outbox.peek(100)
        n = len(held)
        assert n == 20
        dev.restart_stop()  # the process dies ...
        # ... right after the pump's publishes got their PUBACKs, before any confirmation came back
        sender = MqttLink(link_settings(mosquitto, "device-1-last-breath"))
        sender.connect(10)
        for m in held:
            sender.publish_sync(m.topic, m.payload, qos=1)
        sender.stop()
        assert wait_for_count(store, n, 10)
        assert len(Outbox(outbox_path)) == n  # on disk after the crash: all of them
        dev = Device(mosquitto, outbox_path, clock, agent)
        assert dev.link.wait_connected(10)
        dev.plugin.tick()  # sent again (or confirmed first by the acknowledgements queued for the device)
        assert wait_until(lambda: len(dev.outbox) == 0, 10)
        assert store.count() == n
        assert dev.outbox.dropped() == 0
        # a copy can still be in the ingest's hands (received, not yet counted) when the outbox empties
        stats = ingest.ingestor.stats
        assert wait_until(lambda: stats.duplicates == stats.received - n, 10), stats
        dev.restart_stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_two_ingest_workers_split_a_shared_subscription(
    mosquitto: MosquittoBroker, tmp_path: Path, ref_model: LoadedModel, store: TelemetryStore, protocol: str
) -> None:
    """Two services on one shared subscription: each window stored once, the load split between them."""
    clock = SimClock()
    workers = [
        IngestService(
            Ingestor(store, TOPICS),
            LinkSettings(port=mosquitto.port, client_id=f"ingest-{i}", protocol=protocol),  # type: ignore[arg-type]
            shared=True,
        )
        for i in range(2)
    ]
    for w in workers:
        w.start()
    try:
        dev = Device(mosquitto, tmp_path / "outbox.db", clock, AgentStub(current_model=ref_model))
        assert dev.link.wait_connected(10)
        feed_hours(dev, clock, list(run_frames(ref_model, frames(10, seed=23))), 40)
        assert wait_for_count(store, 40, 15)
        counts = [w.ingestor.stats.stored for w in workers]
        assert sum(counts) == 40 and min(counts) > 0
        dev.restart_stop()
    finally:
        for w in workers:
            w.stop()
