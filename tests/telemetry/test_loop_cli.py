"""The loop through the commands: telemetry of a darkened line in the store -> ``edgeline drift``
(table + PNG) -> ``edgeline retrain`` (v2 on augmentation matched to the field, gates, registry with
lineage, canary rollout on a real broker) -> v2 beats v1 on drifted frames it never saw. And
``edgeline ingest`` as a real long-lived process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cloud_registry.registry import Registry, RegistryPaths
from cloud_registry.telemetry.ingest import Ingestor
from cloud_registry.telemetry.retrain import accuracy
from cloud_registry.telemetry.store import TelemetryStore
from converters.keys import KeyPaths
from edge_agent.cloud_link import CloudLink, DeviceIdentity
from edge_agent.inference import load_and_check
from edge_agent.model import LoadedModel
from edge_agent.outbox.store import Outbox
from edge_agent.telemetry.plugin import TelemetryPlugin
from edgeline.cli.main import cli
from edgeline.core.mqtt_link import LinkSettings, MqttLink, wait_until
from edgeline.core.protocol.signing import TrustStore
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker
from firmware_configs.cloud_section import CloudSection
from firmware_configs.telemetry_section import TelemetrySection
from tests.telemetry.conftest import SECRET, AgentStub, Line, SimClock, line_frames


def device_windows(model: LoadedModel, tmp: Path, normal: int, dark: int, *, link: MqttLink | None = None) -> Outbox:
    """A device (real model, real frames, the telemetry plugin) seeing ``normal`` then ``dark``
    40-frame windows; returns its outbox (drained through ``link`` when given)."""
    clock = SimClock()
    ob = Outbox(tmp / "outbox.db", clock=clock)
    cfg = TelemetrySection(window_frames=40, window_s=3600, min_frames=20)
    plugin = TelemetryPlugin(
        cfg, outbox=ob, secret=SECRET, topics=Topics(), link=link, clock=clock, background=False, group="hall-1"
    )
    plugin.start(AgentStub(device_id="cam-1", current_model=model))
    from edge_agent.inference import inspect_frame

    for phase, n in ((False, normal), (True, dark)):
        images, _ = line_frames(40 * n, seed=300 + n + phase, dark=phase)
        for i, img in enumerate(images):
            plugin.on_result(inspect_frame(model, img, i, with_stats=True))
            clock.advance(30)
        plugin.tick()
    return ob


@pytest.fixture(scope="module")
def home(line: Line, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An edgeline home with v1 registered and the telemetry of 4 normal and 8 darkened windows."""
    home = tmp_path_factory.mktemp("home")
    trust = TrustStore.load(KeyPaths(line.key_dir).trust)
    paths = RegistryPaths(home)
    reg = Registry.open(paths.store_url, paths.artifacts_url)
    reg.add_bundle(line.v1, trust)
    reg.close()
    model = load_and_check(line.v1, trust)
    ob = device_windows(model, tmp_path_factory.mktemp("dev"), normal=4, dark=8)
    store = TelemetryStore(home / "telemetry.db")
    ingest = Ingestor(store, Topics())
    assert [ingest.handle(m.topic, m.payload) for m in ob.peek(100)] == ["stored"] * 12
    store.close()
    return home


def invoke(*args: str) -> tuple[int, str]:
    # a wide terminal whatever runs the test (a pytest worker has none: rich would fold the table)
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_drift_command_table_json_and_png(home: Path, tmp_path: Path) -> None:
    png = tmp_path / "drift.png"
    code, out = invoke("drift", "--model", "plates", "--home", str(home), "--png", str(png))
    assert code == 0, out
    assert "brightness" in out and "DRIFT" in out
    assert png.read_bytes().startswith(b"\x89PNG")
    code, out = invoke("drift", "--model", "plates", "--home", str(home), "--png", str(png), "--json")
    doc = json.loads(out)
    [v1] = doc["versions"]
    b = next(s for s in v1["stats"] if s["name"] == "brightness")
    assert v1["windows"] == 12 and b["drifted"] and b["windows_drifted"] == 8
    assert b["field_mean"] < b["ref_mean"] - 0.05
    code, out = invoke("drift", "--model", "nope", "--home", str(home), "--png", str(png))
    assert code == 1 and "no telemetry for model 'nope'" in out
    code, out = invoke("drift", "--model", "plates", "--db", str(tmp_path / "missing.db"))
    assert code == 1 and "no telemetry database" in out


def test_retrain_registers_v2_with_lineage_and_starts_a_canary(
    home: Path, line: Line, tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    # a device of group hall-1 announces itself, so the canary rollout has a target
    device = CloudLink(CloudSection(port=mosquitto.port, heartbeat_s=60), DeviceIdentity("cam-1", groups=("hall-1",)))
    device.connect(10)
    try:
        code, out = invoke(
            "retrain", "--model", "plates", "--data", str(line.data), "--out", str(tmp_path / "v2"),
            "--keys", str(line.key_dir), "--home", str(home), "--rollout-target", "group:hall-1",
            "--broker", f"127.0.0.1:{mosquitto.port}", "--json",
        )  # fmt: skip
    finally:
        device.stop()
    assert code == 0, out
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["version"] == 2 and doc["registered"] and doc["rollout"]
    acc = doc["accuracy"]
    assert acc["new_drifted"] > acc["parent_drifted"] + 0.05
    assert acc["new_normal"] >= acc["parent_normal"] - 0.03
    light = doc["matched_lighting"]  # the line was darkened by brightness -40, contrast 0.85
    assert abs(light["brightness"] + 40) < 6 and abs(light["contrast"] - 0.85) < 0.05

    paths = RegistryPaths(home)
    reg = Registry.open(paths.store_url, paths.artifacts_url)
    try:
        v2 = reg.resolve("plates@2")
        assert v2.parent == 1
        evidence = v2.lineage["retrained_for"]["drift_evidence"]
        # the evidence: 8 drifted windows (of 12) whose histograms the augmentation was matched to
        assert evidence["version"] == 1 and evidence["windows_total"] == 12 and evidence["windows"] == 8
        assert evidence["windows_drifted"]["brightness"] == 8
        assert evidence["psi"]["brightness"] > evidence["threshold"]["brightness"]
        rollout = reg.store.get_rollout(doc["rollout"])
        assert rollout.doc["plan"]["model"]["version"] == 2
        assert rollout.doc["plan"]["canary"] == 1
    finally:
        reg.close()

    # v2 beats v1 on darkened frames neither has seen (new seed, rendered under the drifted lighting)
    trust = TrustStore.load(KeyPaths(line.key_dir).trust)
    v1_model, v2_model = load_and_check(line.v1, trust), load_and_check(tmp_path / "v2", trust)
    images, labels = line_frames(300, seed=999, dark=True)
    a1, a2 = accuracy(v1_model, images, labels), accuracy(v2_model, images, labels)
    assert a2 > a1 + 0.05, (a1, a2)


def test_retrain_refuses_without_sustained_drift(
    line: Line, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = tmp_path / "home"
    trust = TrustStore.load(KeyPaths(line.key_dir).trust)
    paths = RegistryPaths(home)
    reg = Registry.open(paths.store_url, paths.artifacts_url)
    reg.add_bundle(line.v1, trust)
    reg.close()
    ob = device_windows(load_and_check(line.v1, trust), tmp_path, normal=6, dark=0)
    store = TelemetryStore(home / "telemetry.db")
    for m in ob.peek(100):
        Ingestor(store, Topics()).handle(m.topic, m.payload)
    code, out = invoke(
        "retrain", "--model", "plates", "--data", str(line.data), "--out", str(tmp_path / "v2"),
        "--keys", str(line.key_dir), "--home", str(home),
    )  # fmt: skip
    assert code == 1
    assert "drifted share" in out and not (tmp_path / "v2").exists()


def test_ingest_command_runs_as_a_service(mosquitto: MosquittoBroker, line_v1: LoadedModel, tmp_path: Path) -> None:
    db = tmp_path / "telemetry.db"
    alerts = tmp_path / "alerts.jsonl"
    hook = f"{sys.executable} -c \"import sys; open('{alerts}', 'a').write(sys.stdin.read() + '\\n')\""
    # a device that said hello and went away: silent past the 1 s budget while the service runs
    gone = CloudLink(CloudSection(port=mosquitto.port, heartbeat_s=60), DeviceIdentity("cam-9"))
    gone.connect(10)
    gone.stop()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeline.cli.main", "ingest", "--port", str(mosquitto.port), "--db", str(db),
         "--duration", "6", "--json", "--silent-budget", "1", "--command", hook],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    try:
        probe = TelemetryStore(db) if wait_until(db.exists, 10) else None
        assert probe is not None
        link = MqttLink(LinkSettings(port=mosquitto.port, client_id="dev-cam-1"))
        link.connect(10)
        bad = b'{"schema": "edgeline.telemetry/1", "image": "x"}'

        def service_listening() -> bool:  # a malformed window is counted once the service is subscribed
            link.publish_sync(Topics().device_telemetry("cam-1"), bad)
            return probe.counters().get("rejected.schema", 0) > 0

        assert wait_until(service_listening, 10, interval=0.2)
        ob = device_windows(line_v1, tmp_path, normal=3, dark=0, link=link)
        assert wait_until(lambda: len(ob) == 0, 10), "the service acknowledges what it stored"
        assert wait_until(lambda: probe.count() == 3, 10)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    stats = json.loads(out.decode().strip().splitlines()[-1])
    assert stats["stored"] == 3 and set(stats["rejected"]) == {"schema"} and stats["duplicates"] == 0
    assert probe.count() == 3
    fired = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert [(a["kind"], a["scope"], a["state"]) for a in fired] == [("device_silent", "cam-9", "firing")]
    assert stats["alerts"] == 1
