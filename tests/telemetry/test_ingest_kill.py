"""An acknowledged window is stored: an ingest worker SIGKILLed inside a batch's transaction (windows
written, not committed) leaves every window it had not acknowledged with the broker, which sends them
again to the restarted worker; in the end every published window is stored exactly once, on SQLite
and on PostgreSQL. The same kill with the acknowledgement sent before the commit loses the batch,
which shows the check sees a loss when there is one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_registry.telemetry.store import open_telemetry_store
from edgeline.core.mqtt_link import wait_until
from edgeline.core.protocol.partitions import TelemetryTopics
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker, find_mosquitto
from tests.telemetry.stores import BACKENDS, drop, store_url
from tests.telemetry.test_window_schema import body

ROOT = Path(__file__).resolve().parents[2]
N = 600
DEVICES = 30


@pytest.fixture
def lazy_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A Mosquitto that keeps up to 200 unacknowledged messages in flight per client."""
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: run .ci/run, or apt-get install -y mosquitto")
    broker = MosquittoBroker(tmp_path / "mosquitto", extra_config="max_inflight_messages 200\n")
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


def worker(port: int, url: str, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.telemetry.ingest_worker", str(port), url, "ingest-k", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None else "")  # type: ignore[union-attr]
    return proc


def publish(port: int, partitions: int) -> set[str]:
    """N windows of DEVICES devices at QoS 1, each PUBACKed by the broker; returns their keys."""
    tt = TelemetryTopics(Topics(), partitions)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub", protocol=mqtt.MQTTv311)
    c.max_inflight_messages_set(100)
    c.connect("127.0.0.1", port)
    c.loop_start()
    keys, infos = set(), []
    for i in range(N):
        key, dev = f"{i:032x}", i % DEVICES
        pseudonym = f"{dev:032x}"
        start = time.time() - 3600 + i
        payload = json.dumps(body(key=key, device=pseudonym, start=start, end=start + 60)).encode()
        infos.append(c.publish(tt.for_device(f"dev-{dev}", pseudonym), payload, qos=1))
        keys.add(key)
    for info in infos:
        info.wait_for_publish(30)
    c.loop_stop()
    c.disconnect()
    return keys


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_killed_mid_batch_loses_nothing_and_stores_nothing_twice(
    lazy_broker: MosquittoBroker, tmp_path: Path, backend: str
) -> None:
    url = store_url(backend, tmp_path)
    store = open_telemetry_store(url)
    try:
        w1 = worker(lazy_broker.port, url, "--die-in-batch", "3", "--partitions", "4")
        keys = publish(lazy_broker.port, 4)
        assert w1.wait(30) == -9  # killed itself inside the third batch's transaction
        stored_at_kill = store.count()
        assert 0 < stored_at_kill < N, stored_at_kill  # some batches were committed, not all
        w2 = worker(lazy_broker.port, url, "--partitions", "4")
        try:
            assert wait_until(lambda: store.count() >= N, 60), store.count()
            time.sleep(0.5)  # anything still arriving would be a duplicate: it must not be stored
        finally:
            w2.terminate()
            w2.wait(20)
        assert store.keys() == keys
        assert store.count() == N  # none twice
    finally:
        drop(store)


def test_acknowledging_before_the_commit_would_lose_the_batch(lazy_broker: MosquittoBroker, tmp_path: Path) -> None:
    url = store_url("sqlite", tmp_path)
    store = open_telemetry_store(url)
    try:
        w1 = worker(lazy_broker.port, url, "--die-in-batch", "3", "--ack-first")
        keys = publish(lazy_broker.port, 0)
        assert w1.wait(30) == -9
        w2 = worker(lazy_broker.port, url)
        try:
            assert wait_until(lambda: store.count() >= N - 50, 60), store.count()
            time.sleep(1.0)  # what the broker still had, has come
        finally:
            w2.terminate()
            w2.wait(20)
        lost = keys - store.keys()
        assert 0 < len(lost) <= 50  # the acknowledged, uncommitted batch is gone for good
    finally:
        drop(store)
