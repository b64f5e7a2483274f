"""The ingest's writer thread on a real Mosquitto and real SQLite and PostgreSQL stores: it wakes
for a message that comes while it sleeps (the network thread takes its lock only then), the cyclic
garbage collector it pauses for a batch runs again afterwards and while a failing store is retried,
and the end-to-end acknowledgements it collects name every stored, duplicate and refused key once
per device."""

from __future__ import annotations

import gc
import json
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_registry.telemetry.ingest import Ingestor, IngestService, gc_paused
from cloud_registry.telemetry.store import TelemetryStore, open_telemetry_store
from edgeline.core.mqtt_link import LinkSettings, wait_until
from edgeline.core.protocol.partitions import TelemetryTopics
from edgeline.core.protocol.telemetry import parse_ack
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker
from tests.telemetry.stores import PG_URL, drop, pg_url
from tests.telemetry.test_window_schema import body

T = Topics()
TT = TelemetryTopics(T, 4)


def window(key: str, device: str = "a" * 32, **over: object) -> bytes:
    now = time.time()
    return json.dumps(body(key=key, device=device, start=now - 60, end=now, **over)).encode()


def client(broker: MosquittoBroker, cid: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    return c


def service(broker: MosquittoBroker, store: TelemetryStore, cid: str) -> IngestService:
    settings = LinkSettings(port=broker.port, client_id=cid, protocol="3.1.1", reconnect_min_s=0.2)
    return IngestService(Ingestor(store, T), settings, shared=False, partitions=4)


def test_gc_paused_gives_the_collector_back_even_when_the_batch_fails() -> None:
    assert gc.isenabled()
    with pytest.raises(ValueError), gc_paused():
        assert not gc.isenabled()
        raise ValueError("a batch that failed")
    assert gc.isenabled()
    gc.disable()  # a process that runs without the collector keeps it off
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_idle_writer_wakes_for_each_message(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """One window at a time to an idle ingest: each is stored in milliseconds, not after the writer's
    half-second fallback wait (a wake-up lost between its look at the queue and its sleep)."""
    store = TelemetryStore(tmp_path / "t.db")
    svc = service(mosquitto, store, "ingest-wake")
    svc.start()
    pub = client(mosquitto, "fleet-wake")
    latencies: list[float] = []
    try:
        topic = TT.for_device("cam-1", "a" * 32)
        for i in range(25):
            t0 = time.perf_counter()
            pub.publish(topic, window(f"{i:032x}"), qos=1).wait_for_publish(5)
            assert wait_until(lambda: store.count() == len(latencies) + 1, 5), store.count()
            latencies.append(time.perf_counter() - t0)
    finally:
        pub.loop_stop()
        pub.disconnect()
        svc.stop()
    assert svc.ingestor.stats.stored == 25 and gc.isenabled()
    assert statistics.median(latencies) < 0.2, latencies  # a lost wake-up costs up to 0.5 s each


def test_a_burst_is_stored_once_and_acknowledged_per_device(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """2,000 windows of 20 devices in a burst (batches of many), a redelivered copy of some and
    windows the schema refuses: every key is acknowledged to its device, stored or refused, once."""
    store = TelemetryStore(tmp_path / "t.db")
    svc = service(mosquitto, store, "ingest-burst")
    acks: dict[str, dict[str, set[str]]] = {}
    refusals: Counter[str] = Counter()

    def on_ack(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        device = msg.topic.split("/")[-2]
        ack = parse_ack(bytes(msg.payload))
        got = acks.setdefault(device, {"windows": set(), "rejected_windows": set()})
        got["windows"].update(ack.windows)
        got["rejected_windows"].update(ack.rejected_windows)
        refusals.update(ack.rejected_windows)

    sub = client(mosquitto, "fleet-acks")
    sub.on_message = on_ack
    granted = threading.Event()
    sub.on_subscribe = lambda *_: granted.set()
    sub.subscribe(f"{T.base}/devices/+/acks", 1)
    assert granted.wait(5)  # before the first acknowledgement
    pub = client(mosquitto, "fleet-burst")
    svc.start()
    try:
        infos = []
        want: dict[str, set[str]] = {}
        refused: dict[str, set[str]] = {}
        for i in range(2000):
            dev = f"cam-{i % 20}"
            topic = TT.for_device(dev, f"{i % 20:032x}")
            key = f"{i:032x}"
            if i % 97 == 0:  # the schema refuses it, its key is readable: acknowledged as rejected
                infos.append(pub.publish(topic, window(key, f"{i % 20:032x}", frames=-1), qos=1))
                refused.setdefault(dev, set()).add(key)
                continue
            infos.append(pub.publish(topic, window(key, f"{i % 20:032x}"), qos=1))
            want.setdefault(dev, set()).add(key)
            if i % 10 == 0:  # sent again (a device that missed the acknowledgement)
                infos.append(pub.publish(topic, window(key, f"{i % 20:032x}"), qos=1))
        for info in infos:
            info.wait_for_publish(20)
        stored = sum(len(v) for v in want.values())
        assert wait_until(lambda: store.count() == stored, 60), (store.count(), stored)
        assert wait_until(lambda: all(acks.get(d, {}).get("windows") == k for d, k in want.items()), 20)
        assert wait_until(lambda: all(acks[d]["rejected_windows"] == k for d, k in refused.items()), 20)
    finally:
        for c in (pub, sub):
            c.loop_stop()
            c.disconnect()
        svc.stop()
    st = svc.ingestor.stats
    assert st.stored == stored and st.duplicates == len(range(0, 2000, 10)) - len(range(0, 2000, 970))
    assert st.rejected["schema"] == len(refused_keys := [k for v in refused.values() for k in v])
    assert len(refused_keys) == len(range(0, 2000, 97))
    assert set(refusals.values()) == {1}  # each refused message acknowledged once
    assert max(svc.batch_sizes) > 1 and gc.isenabled()


def test_a_failing_store_is_retried_with_the_collector_running_between_attempts(mosquitto: MosquittoBroker) -> None:
    """PostgreSQL drops the store's connection: every attempt fails, nothing is acknowledged, and
    while the writer waits to try again the garbage collector runs (the pause is for a batch's own
    work, not for an outage of the store)."""
    url = pg_url()
    store = open_telemetry_store(url)
    svc = service(mosquitto, store, "ingest-pgdown")
    pub = client(mosquitto, "fleet-pgdown")
    svc.start()
    try:
        topic = TT.for_device("cam-1", "a" * 32)
        pub.publish(topic, window("1" * 32), qos=1).wait_for_publish(5)
        assert wait_until(lambda: store.count() == 1, 10)
        pid = store._pg.info.backend_pid  # type: ignore[attr-defined]
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        pub.publish(topic, window("2" * 32), qos=1).wait_for_publish(5)
        assert wait_until(lambda: svc.ingestor.stats.store_failures >= 2, 10)
        samples = []
        for _ in range(150):  # 1.5 s of retries: attempts fail at once, the waits are 0.2, 0.4, 0.8 s
            samples.append(gc.isenabled())
            time.sleep(0.01)
        assert sum(samples) > len(samples) * 0.8, samples
        assert svc.ingestor.stats.stored == 1
    finally:
        pub.loop_stop()
        pub.disconnect()
        svc.stop(drain_s=2.0)
    assert gc.isenabled()
    assert svc.ingestor.stats.acked_keys == 1  # the window of the failing batch was not acknowledged
    fresh = open_telemetry_store(url)
    try:
        assert fresh.keys() == {"1" * 32}
    finally:
        drop(fresh)
        store.close()
