"""The fleet view: birth, heartbeat, Last Will; online, stale and offline; malformed input ignored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cloud_registry.fleet import FleetView, FleetWatcher
from edge_agent.errors import ProtocolError
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.delivery import DeviceEvent, DeviceState, EventKind, ModelRef, UpdaterState
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker
from tests.delivery.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
MODEL = ModelRef(name="tiny", version=3, sha256="c" * 64)


def state(online: bool, ts: float, model: ModelRef | None = MODEL) -> DeviceState:
    return DeviceState(device_id="d1", online=online, ts=ts, heartbeat_s=10.0, groups=("g",), model=model)


def test_online_stale_offline_and_the_will_keeps_the_model() -> None:
    v = FleetView()
    v.apply_state("d1", state(True, 100.0), received_at=100.0, retained=False)
    assert v.row("d1", 125.0).status == "online"
    assert v.row("d1", 131.0).status == "stale"  # three heartbeats missed, no Will yet
    v.apply_state("d1", state(False, 140.0, model=None), received_at=140.0, retained=False)
    row = v.row("d1", 141.0)
    assert row.status == "offline" and row.state is not None and row.state.model == MODEL
    # a retained state read later: the device's own timestamp counts, not the time we read it
    v.apply_state("d1", state(True, 1000.0), received_at=5000.0, retained=True)
    assert v.row("d1", 5000.0).status == "stale"
    assert v.members("g") == ["d1"] and v.resolve_target("group:g") == ["d1"]
    assert v.resolve_target("device:a,b") == ["a", "b"]
    with pytest.raises(ValueError):
        v.resolve_target("everyone")
    with pytest.raises(ProtocolError):
        v.apply_state("d2", state(True, 1.0), received_at=1.0, retained=False)
    ev = DeviceEvent(device_id="d1", kind=EventKind.COMMITTED, state=UpdaterState.COMMITTED, sequence=4)
    v.apply_event("d1", ev)
    assert v.row("d1", 5000.0).to_dict()["last_event"]["kind"] == "committed"


def test_last_will_marks_a_killed_device_offline(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    topics = Topics()
    cloud = MqttLink(LinkSettings(port=mosquitto.port, client_id="fleet-t", clean_start=True))
    fleet = FleetWatcher(cloud, topics)
    cloud.connect(10)
    code = textwrap.dedent(f"""
        import time
        from edge_agent.cloud_link import CloudLink, DeviceIdentity
        from firmware_configs.cloud_section import CloudSection
        link = CloudLink(CloudSection(port={mosquitto.port}, heartbeat_s=1.0), DeviceIdentity("dw", "arm64", ("g",)))
        link.connect(10)
        link.update_state(health="ok")
        print("up", flush=True)
        time.sleep(60)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"up"
        assert wait_for(lambda: fleet.view.row("dw", time.time()).status == "online")
        row = fleet.view.row("dw", time.time())
        assert row.state is not None and row.state.hardware_class == "arm64" and row.state.groups == ("g",)
        # malformed and spoofed messages are counted and ignored (sent once the watcher's subscription
        # certainly holds: a device's state came through it; a live message sent before its SUBACK is lost)
        cloud.publish_sync(topics.device_state("evil"), b"{not json", 1, False)
        cloud.publish_sync(topics.device_state("evil"), state(True, time.time()).to_bytes(), 1, False)  # says d1
        assert wait_for(lambda: fleet.malformed == 2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert wait_for(lambda: fleet.view.row("dw", time.time()).status == "offline", 20)
        assert fleet.malformed == 2 and fleet.view.state("evil") is None
    finally:
        if proc.poll() is None:
            proc.kill()
        cloud.stop()
