"""The ingest's sessions on a real Mosquitto: shared subscriptions chosen from the negotiated
protocol (protocol auto), a session per partition filter, and what a one-session layout's
subscriptions still bring to the worker's own session after the move."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud_registry.telemetry.ingest import Ingestor, IngestService
from cloud_registry.telemetry.store import TelemetryStore
from edgeline.core.mqtt_link import LinkSettings, wait_until
from edgeline.core.protocol.partitions import TelemetryTopics
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker
from tests.telemetry.test_window_schema import body

TOPICS = Topics()


def window_bytes(device_hex: str) -> bytes:
    now = time.time()
    return json.dumps(body(key=uuid.uuid4().hex, device=device_hex, start=now - 60, end=now)).encode()


def publish(port: int, topic: str, payloads: list[bytes]) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv311)
    c.connect("127.0.0.1", port)
    c.loop_start()
    for info in [c.publish(topic, p, qos=1) for p in payloads]:
        info.wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def test_protocol_auto_takes_shared_subscriptions_where_mqtt5_was_negotiated(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    store = TelemetryStore(tmp_path / "t.db")
    settings = LinkSettings(port=mosquitto.port, client_id="ingest-auto", protocol="auto", clean_start=True)
    svc = IngestService(Ingestor(store, TOPICS), settings, partitions=2)
    assert not svc.use_shared  # not known before the CONNACK
    svc.start()
    try:
        assert svc.link.stats.protocol == "5"
        assert svc.use_shared
        assert all(f.startswith("$share/ingest/") for f in svc.telemetry_filters)
        assert svc.events_filters == [TOPICS.shared_events("ingest")]
        publish(mosquitto.port, TelemetryTopics(TOPICS, 2).for_device("dev-a", "a" * 32), [window_bytes("a" * 32)])
        assert wait_until(lambda: store.count() == 1, 10)
    finally:
        svc.stop()
        store.close()
    forced = IngestService(Ingestor(TelemetryStore(tmp_path / "u.db"), TOPICS), settings, shared=False)
    assert not forced._shared_after_connect and not forced.use_shared  # --no-shared is kept


def test_protocol_311_keeps_plain_subscriptions(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "t.db")
    settings = LinkSettings(port=mosquitto.port, client_id="ingest-311", protocol="3.1.1", clean_start=True)
    svc = IngestService(Ingestor(store, TOPICS), settings, partitions=2)
    svc.start()
    try:
        assert not svc.use_shared and not any(f.startswith("$share") for f in svc.telemetry_filters)
        assert svc.client_ids == ["ingest-311", "ingest-311-t0", "ingest-311-t1", "ingest-311-t"]
        assert all(link.wait_granted(0) for link in svc.links)  # start returned once all were granted
    finally:
        svc.stop()
        store.close()


def test_a_one_session_layouts_backlog_is_stored_after_the_move_to_sessions_per_filter(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """A worker that ran with one session for all its partitions, then restarts with a session per
    filter: the windows queued for its old subscriptions on its own session are stored (not
    acknowledged unstored), and those subscriptions are dropped, so new windows arrive once."""
    store = TelemetryStore(tmp_path / "t.db")
    settings = LinkSettings(port=mosquitto.port, client_id="ingest-move", protocol="3.1.1", clean_start=False)
    tt = TelemetryTopics(TOPICS, 2)
    old = IngestService(Ingestor(store, TOPICS), settings, shared=False, partitions=2, sessions="one")
    old.start()
    old.stop()
    topic = tt.for_device("dev-a", "a" * 32)
    publish(mosquitto.port, topic, [window_bytes("a" * 32) for _ in range(5)])  # queued on the old session
    new = IngestService(Ingestor(store, TOPICS), settings, shared=False, partitions=2)
    assert new.split
    new.start()
    try:
        assert wait_until(lambda: store.count() == 5, 10)
        publish(mosquitto.port, topic, [window_bytes("a" * 32) for _ in range(3)])
        assert wait_until(lambda: store.count() == 8, 10)
        time.sleep(0.5)
        stats = new.ingestor.stats
        assert stats.stored == 8 and stats.duplicates == 0  # each new window came on one session only
    finally:
        new.stop()
        store.close()
