"""Partitioned telemetry on the tests' own 3-node NATS cluster: a backlog larger than a session's
max_ack_pending (1,024) drains without waiting for NATS's 30 s ack wait, because each partition
filter has a session of its own (cloud_registry/telemetry/ingest_sessions.py). With the four
partition filters in one session the same backlog stalls: 1,024 windows at once, the rest only as
redeliveries 30 s later (measured: 1,024 in 0.3 s, all 1,500 at 30.2 s; per filter 0.4 s)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_registry.telemetry.ingest import Ingestor, IngestService
from cloud_registry.telemetry.ingest_sessions import filter_suffix, per_filter, plan_sessions
from cloud_registry.telemetry.store import TelemetryStore
from edgeline.core.mqtt_link import LinkSettings
from edgeline.core.protocol.partitions import TelemetryTopics
from edgeline.core.protocol.topics import Topics
from tests.brokers.servers import NatsCluster
from tests.telemetry.test_window_schema import body

DEVICES = 60
PER_DEVICE = 25  # 1,500 windows: more than one session may hold unacknowledged on NATS


def publish_backlog(port: int, topics: Topics, tt: TelemetryTopics) -> int:
    now = time.time()
    sent = 0
    for d in range(DEVICES):
        dev = f"dev-{d:03d}"
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv311)
        c.connect("127.0.0.1", port)
        c.loop_start()
        topic = tt.for_device(dev, f"{d:032x}")
        infos = []
        for _ in range(PER_DEVICE):
            w = body(key=uuid.uuid4().hex, device=f"{d:032x}", start=now - 60, end=now)
            infos.append(c.publish(topic, json.dumps(w).encode(), qos=1))
        for info in infos:
            info.wait_for_publish(30)
        sent += len(infos)
        c.disconnect()
        c.loop_stop()
    return sent


@pytest.mark.broker
def test_a_partitioned_backlog_drains_without_redeliveries(nats_cluster: NatsCluster, tmp_path: Path) -> None:
    (host, port), *rest = nats_cluster.addresses
    topics = Topics()
    tt = TelemetryTopics(topics, 4)
    store = TelemetryStore(tmp_path / "t.db")
    cid = f"ingest-{uuid.uuid4().hex[:8]}"
    settings = LinkSettings(
        host=host, port=port, brokers=tuple(rest), client_id=cid, protocol="3.1.1", clean_start=False
    )

    def service() -> IngestService:
        return IngestService(Ingestor(store, topics), settings, shared=False, partitions=4, workers=1)

    first = service()
    assert [p.client_id for p in first._plans] == [cid, f"{cid}-t0", f"{cid}-t1", f"{cid}-t2", f"{cid}-t3", f"{cid}-t"]
    first.start(30)  # the sessions and their subscriptions, then away while the fleet publishes
    first.stop()
    # on a cluster, for a moment after a session disconnects its consumers still push to it, and what
    # they pushed comes back only after the ack wait: the fleet publishes once that moment has passed
    time.sleep(3)
    total = publish_backlog(port, topics, tt)
    svc = service()
    svc.start(30)
    try:
        deadline = time.monotonic() + 25  # below the 30 s ack wait: a stall fails here
        while store.count() < total and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.count() == total, f"{store.count()} of {total} stored before NATS's ack wait"
        assert svc.redelivered == 0
        assert svc.ingestor.stats.duplicates == 0
    finally:
        svc.stop()
        store.close()


def test_session_plans() -> None:
    assert per_filter("auto", 4) and not per_filter("auto", 0)
    assert per_filter("per_filter", 0) and not per_filter("one", 4)
    with pytest.raises(ValueError, match="sessions must be one of"):
        per_filter("many", 4)
    assert filter_suffix("edgeline/default/devices/+/telemetry/12") == "t12"
    assert filter_suffix("edgeline/default/devices/+/telemetry") == "t"
    one = plan_sessions("w", ["a/telemetry/0", "a/telemetry"], ["a/events"], split=False)
    assert [(p.client_id, p.filters) for p in one] == [("w", ("a/telemetry/0", "a/telemetry", "a/events"))]
    split = plan_sessions("w", ["a/telemetry/0", "a/telemetry"], ["a/events"], split=True)
    assert [(p.client_id, p.filters) for p in split] == [
        ("w", ("a/events",)),
        ("w-t0", ("a/telemetry/0",)),
        ("w-t", ("a/telemetry",)),
    ]
    assert [p.client_id for p in plan_sessions("", ["a/telemetry/0"], [], split=True)] == ["", ""]
    with pytest.raises(ValueError, match="share the session"):
        plan_sessions("w", ["a/telemetry/0", "b/telemetry/0"], [], split=True)
