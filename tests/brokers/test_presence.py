"""A Last Will that stays true, and a fleet view that needs no retained message on a wildcard."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloud_registry.fleet import FleetView, FleetWatcher
from cloud_registry.store.sqlite import SqliteStore
from edge_agent.cloud_link import CloudLink
from edge_agent.identity import DeviceIdentity
from edgeline.core.errors import ProtocolError
from edgeline.core.mqtt_link import LinkSettings, MqttLink, wait_until
from edgeline.core.protocol.delivery import DevicePresence, DeviceState, parse_presence
from edgeline.core.protocol.model_ref import ModelRef
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker
from firmware_configs.cloud_section import CloudSection

MODEL = ModelRef(name="tiny", version=3, sha256="a" * 64)
ROOT = Path(__file__).resolve().parents[2]


def state(device_id: str = "d1", online: bool = True, **kw: object) -> DeviceState:
    return DeviceState(device_id=device_id, online=online, ts=time.time(), heartbeat_s=30.0, **kw)


def test_the_view_trusts_presence_over_a_stale_state() -> None:
    view = FleetView()
    now = time.time()
    view.apply_state("d1", state(model=MODEL, updater="COMMITTED"), received_at=now, retained=True)
    assert view.row("d1", now).status == "online"
    view.apply_presence("d1", DevicePresence(device_id="d1", online=False))
    row = view.row("d1", now)
    assert row.status == "offline"
    assert row.state is not None and row.state.model == MODEL and row.state.updater.value == "COMMITTED"
    view.apply_presence("d1", DevicePresence(device_id="d1", online=True, ts=now))
    assert view.row("d1", now).status == "online"
    with pytest.raises(ProtocolError):
        view.apply_presence("d2", DevicePresence(device_id="d1", online=True))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{",
        b'{"schema": "edgeline.online/1", "device_id": "d1"}',
        b'{"schema": "edgeline.online/1", "device_id": "d1", "online": false, "model": "x"}',
        b'{"schema": "edgeline.state/1", "device_id": "d1", "online": false}',
        b'{"schema": "edgeline.online/1", "device_id": "d1", "online": []}',
        b'{"schema": "edgeline.online/1", "device_id": "d1", "online": true, "ts": 1e400}',
        b"x" * 5000,
    ],
)
def test_malformed_presence_is_refused(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_presence(payload)


def _device_script(port: int, device_id: str) -> str:
    return f"""
import time
from edge_agent.cloud_link import CloudLink
from edge_agent.identity import DeviceIdentity
from edgeline.core.protocol.model_ref import ModelRef
from firmware_configs.cloud_section import CloudSection
link = CloudLink(CloudSection(port={port}, heartbeat_s=60), DeviceIdentity({device_id!r}, groups=("hall-1",)))
link.connect(10)
link.update_state(model=ModelRef(name="tiny", version=3, sha256="a" * 64), slot="B", updater="COMMITTED", health="ok")
print("ready", flush=True)
time.sleep(600)
"""


def test_after_sigkill_the_will_says_offline_and_the_state_keeps_the_model(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    topics = Topics()
    proc = subprocess.Popen(
        [sys.executable, "-c", _device_script(mosquitto.port, "press-1")],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    link = MqttLink(LinkSettings(port=mosquitto.port, client_id="fleet-will", clean_start=True, keepalive=5))
    link.connect(10)
    try:
        watcher = FleetWatcher(link, topics)
        # the broker notices the dead socket at once (RST) or after 1.5 keepalives: 45 s at most
        assert wait_until(lambda: watcher.view.presence("press-1") is False, 50), watcher.view.rows(time.time())
        row = watcher.view.row("press-1", time.time())
        assert row.status == "offline"
        assert row.state is not None and row.state.model == MODEL
        assert row.state.updater.value == "COMMITTED" and row.state.slot == "B"
    finally:
        link.stop()


def test_a_clean_stop_says_offline_on_both_topics(mosquitto: MosquittoBroker) -> None:
    dev = CloudLink(CloudSection(port=mosquitto.port, heartbeat_s=60), DeviceIdentity("press-2"))
    dev.connect(10)
    dev.update_state(model=MODEL, updater="COMMITTED")
    dev.stop()
    link = MqttLink(LinkSettings(port=mosquitto.port, client_id="fleet-bye", clean_start=True))
    link.connect(10)
    try:
        watcher = FleetWatcher(link, Topics())
        assert wait_until(
            lambda: watcher.view.presence("press-2") is False and watcher.view.state("press-2") is not None, 10
        )
        st = watcher.view.state("press-2")
        assert st is not None and not st.online and st.model == MODEL
    finally:
        link.stop()


def test_the_registry_keeps_the_fleet_and_reads_exact_topics(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """A watcher with the registry store records what it hears; the next one starts from the store
    and subscribes the exact state and presence topics of the devices it knows (dropped once answered)."""
    store = SqliteStore(tmp_path / "registry.db")
    dev = CloudLink(CloudSection(port=mosquitto.port, heartbeat_s=60), DeviceIdentity("press-3", groups=("hall-1",)))
    dev.connect(10)
    topics = Topics()
    try:
        dev.update_state(model=MODEL, updater="COMMITTED")
        link = MqttLink(LinkSettings(port=mosquitto.port, client_id="fleet-book-1", clean_start=True))
        link.connect(10)
        try:
            w1 = FleetWatcher(link, topics, book=store)
            assert wait_until(lambda: (w1.view.state("press-3") or state(model=None)).model == MODEL, 10)
            assert wait_until(lambda: w1.view.presence("press-3") is True, 10)
        finally:
            link.stop()
        rows = {r.device_id: r for r in store.list_devices()}
        assert rows["press-3"].state["state"]["model"]["version"] == 3 and rows["press-3"].state["online"] is True

        link = MqttLink(LinkSettings(port=mosquitto.port, client_id="fleet-book-2", clean_start=True))
        link.connect(10)
        try:
            w2 = FleetWatcher(link, topics, book=store)
            assert w2.view.members("hall-1") == ["press-3"]  # from the registry, before any message
            # SUBSCRIBE packets: the three wildcards and one each for the exact state and presence topics it
            # knows from the registry (an answer can come and drop the exact ones before this line runs:
            # count what was sent, not what is held)
            assert wait_until(lambda: link.stats.subscribes == 5, 10)
            assert wait_until(lambda: topics.device_state("press-3") not in link._subs, 10)  # answered: dropped
            assert wait_until(lambda: topics.device_online("press-3") not in link._subs, 10)
        finally:
            link.stop()
    finally:
        dev.stop()
        store.close()


def test_a_broken_registry_record_is_skipped(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "registry.db")
    store.upsert_device("bad-1", {"state": {"schema": "nope"}}, 1.0)
    store.upsert_device("bad-2", {"state": "not a dict", "online": "maybe"}, 1.0)
    link = MqttLink(LinkSettings(port=mosquitto.port, client_id="fleet-bad", clean_start=True))
    link.connect(10)
    try:
        w = FleetWatcher(link, Topics(), book=store)
        assert w.view.state("bad-1") is None and w.view.state("bad-2") is None
        assert Topics().device_state("bad-1") in link._subs  # still read from the broker
    finally:
        link.stop()
        store.close()
