"""Partitioned telemetry topics: a device's windows all land in one partition (from its pseudonym),
every partition has one owner among N workers, hostile topics are refused, the device publishes on its
partition, and two ingest workers on MQTT 3.1.1 split a fleet between them while worker 0 still reads
the unpartitioned topic of earlier releases."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_registry.telemetry.ingest import Ingestor, IngestService
from cloud_registry.telemetry.store import TelemetryStore
from edge_agent.errors import ProtocolError
from edge_agent.model import LoadedModel
from edgeline.core.mqtt_link import LinkSettings, wait_until
from edgeline.core.protocol.partitions import (
    TelemetryTopics,
    parse_telemetry_topic,
    partition_of,
    shared,
    worker_partitions,
)
from edgeline.core.protocol.telemetry import TelemetryWindow
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker
from tests.telemetry.conftest import AgentStub, SimClock, frames, run_frames
from tests.telemetry.test_plugin import make
from tests.telemetry.test_window_schema import body

T = Topics()


def test_partition_of_is_stable_and_spreads_devices() -> None:
    pseudonyms = [f"{i:032x}" for i in range(4000)]
    counts = Counter(partition_of(p, 8) for p in pseudonyms)
    assert set(counts) == set(range(8)) and min(counts.values()) > 400  # ~500 each
    assert all(partition_of(p, 8) == partition_of(p, 8) for p in pseudonyms[:50])
    with pytest.raises(ProtocolError):
        partition_of("x", 0)
    with pytest.raises(ProtocolError):
        TelemetryTopics(T, 5000)


def test_every_partition_has_exactly_one_worker() -> None:
    for n, w in ((8, 1), (8, 3), (4, 4), (3, 5)):
        owned = [p for i in range(w) for p in worker_partitions(n, w, i)]
        assert sorted(owned) == list(range(n))
    with pytest.raises(ProtocolError):
        worker_partitions(4, 2, 2)
    tt = TelemetryTopics(T, 4)
    assert tt.filters(2, 0) == [
        "edgeline/default/devices/+/telemetry/0",
        "edgeline/default/devices/+/telemetry/2",
        "edgeline/default/devices/+/telemetry",
    ]
    assert tt.filters(2, 1) == ["edgeline/default/devices/+/telemetry/1", "edgeline/default/devices/+/telemetry/3"]
    assert shared(tt.partition_filter(3), "ingest") == "$share/ingest/edgeline/default/devices/+/telemetry/3"
    assert TelemetryTopics(T, 0).for_device("cam-1", "ab" * 16) == T.device_telemetry("cam-1")


@pytest.mark.parametrize(
    "topic",
    [
        "edgeline/default/devices/cam-1/telemetry/00",
        "edgeline/default/devices/cam-1/telemetry/-1",
        "edgeline/default/devices/cam-1/telemetry/4096",
        "edgeline/default/devices/cam-1/telemetry/1/2",
        "edgeline/default/devices/cam-1/telemetry/+",
        "edgeline/default/devices/cam-1/telemetry/٣",
        "edgeline/default/devices/cam+1/telemetry/1",
        "edgeline/default/devices/cam-1/events",
        "edgeline/other/devices/cam-1/telemetry/1",
    ],
)
def test_hostile_telemetry_topics_are_refused(topic: str, tmp_path: Path) -> None:
    with pytest.raises(ProtocolError):
        parse_telemetry_topic(T, topic)
    store = TelemetryStore(tmp_path / "t.db")
    assert Ingestor(store, T).handle(topic, json.dumps(body(key="1" * 32)).encode()).startswith("rejected: schema")
    assert store.count() == 0


def test_the_device_publishes_on_its_partition(tmp_path: Path, ref_model: LoadedModel) -> None:
    clock = SimClock()
    agent = AgentStub(current_model=ref_model)
    p = make(tmp_path, clock, agent, partitions=16)
    for r in run_frames(ref_model, frames(20, seed=5)):
        p.on_result(r)
    clock.advance(61)
    p.tick()
    [msg] = p.outbox.peek(1)
    device, part = parse_telemetry_topic(T, msg.topic)
    window = TelemetryWindow.model_validate_json(msg.payload)
    assert device == agent.device_id and part == partition_of(window.device, 16)


def test_two_workers_split_the_partitions_on_mqtt_311(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "t.db")
    seen: list[dict[str, int]] = [Counter(), Counter()]
    services = []
    for i in range(2):
        ing = Ingestor(store, T, listeners=[lambda w, i=i: seen[i].update([w.device])])  # type: ignore[misc]
        settings = LinkSettings(port=mosquitto.port, client_id=f"ingest-{i}", protocol="3.1.1")
        services.append(IngestService(ing, settings, partitions=4, workers=2, index=i))
    for svc in services:
        svc.start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet", protocol=mqtt.MQTTv311)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    try:
        tt = TelemetryTopics(T, 4)
        infos = []
        for i in range(200):
            dev = i % 20
            pseudo = f"{dev:032x}"
            # devices 0-3 are not updated yet: they publish on the old topic
            topic = T.device_telemetry(f"d{dev}") if dev < 4 else tt.for_device(f"d{dev}", pseudo)
            payload = json.dumps(body(key=f"{i:032x}", device=pseudo)).encode()
            infos.append(pub.publish(topic, payload, qos=1))
        for info in infos:
            info.wait_for_publish(10)
        assert wait_until(lambda: store.count() == 200, 20), store.count()
    finally:
        pub.loop_stop()
        pub.disconnect()
        for svc in services:
            svc.stop()
    assert not set(seen[0]) & set(seen[1])  # every device's windows in one worker
    both = sum(s.ingestor.stats.stored for s in services)
    assert both == 200 and all(s.ingestor.stats.stored > 30 for s in services)
    for dev in range(4, 20):
        owner = 0 if partition_of(f"{dev:032x}", 4) % 2 == 0 else 1
        assert seen[owner][f"{dev:032x}"] == 10
    assert all(seen[0][f"{dev:032x}"] == 10 for dev in range(4))  # the old topic: worker 0


def test_the_batched_acknowledgement_is_the_schemas_own_encoding() -> None:
    from cloud_registry.telemetry.ingest import _split, encode_ack
    from edgeline.core.protocol.telemetry import MAX_ACK_KEYS, Ack, parse_ack

    fields = {"windows": [f"{i:032x}" for i in range(MAX_ACK_KEYS + 3)], "rejected_events": ["e" * 32]}
    parts = _split(fields)
    assert [len(p.get("windows", [])) for p in parts] == [MAX_ACK_KEYS, 3]
    for part in parts:
        assert encode_ack(part) == Ack.model_validate(part).encode()
        assert parse_ack(encode_ack(part)).windows == part["windows"]
