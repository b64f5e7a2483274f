"""Shadow deployments end to end: ``edgeline deploy --shadow`` on a real broker to a real agent
process. The challenger is delivered in chunks, verified and started in the shadow slot beside the
serving model; the serving slots are not touched, the challenger's verdicts reach no sink, a shadow
manifest copied onto the desired topic is refused, and ``--stop-shadow`` stops it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cloud_registry.publisher import reissue
from cloud_registry.shadow_deploy import as_shadow, judge
from edge_agent.shadow.worker import ShadowWorker
from edge_agent.updater import machine as m
from edge_agent.updater.offer import Refusal, triage
from edge_agent.updater.shadow_slot import ShadowSlot
from edgeline.cli.main import cli
from edgeline.core.protocol.delivery import ShadowSlotState, envelope_bytes
from edgeline.core.protocol.model_ref import ModelRef
from edgeline.core.protocol.signing import TrustStore
from edgeline.demo.devices import launch_agent
from firmware_configs.writer import render_toml
from tests.delivery.agent_proc import ROOT, write_frames
from tests.delivery.conftest import BuiltBundle, Cloud, wait_for
from tests.factories import tiny_frames

DEVICE = "sh-1"


def _config(tmp: Path, port: int, trust: Path, **extra: dict[str, Any]) -> Path:
    state = tmp / "state"
    sections: dict[str, dict[str, Any]] = {
        "device": {"id": DEVICE, "groups": ["line-s"]},
        "source": {
            "kind": "folder",
            "path": str(write_frames(tmp / "frames", tiny_frames(12, seed=3)[0])),
            "loop": True,
            "max_fps": 40.0,
        },
        "model": {"bundle": str(state / "slots" / "current"), "trust_file": str(trust)},
        "sinks.jsonl": {"path": str(tmp / "verdicts.jsonl"), "events": True},
        "status": {"path": str(tmp / "status.json"), "interval_s": 0.2},
        "cloud": {"port": port, "heartbeat_s": 0.5},
        "updater": {"state_dir": str(state), "trust_file": str(trust), "trial_frames": 3, "min_free_bytes": 0},
        "telemetry": {"enabled": False},
        **extra,
    }
    path = tmp / "agent.toml"
    path.write_text(render_toml(sections), "utf-8")
    return path


def _status(tmp: Path) -> dict[str, Any]:
    try:
        return json.loads((tmp / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _cli(*args: str, ok: bool = True) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert (result.exit_code == 0) == ok, result.output
    return result


def test_a_shadow_deployment_runs_beside_the_champion_and_reaches_no_sink(
    cloud: Cloud, bundles: dict[int, BuiltBundle], tmp_path: Path
) -> None:
    trust = cloud.key_dir / "trust.json"
    home = ["--home", str(tmp_path / "home")]
    net = ["--broker-port", str(cloud.broker.port), "--keys", str(cloud.key_dir)]
    for v in (1, 2):
        _cli("registry", "add", str(bundles[v].path), *home, "--trust", str(trust))
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    proc = launch_agent(
        _config(agent_dir, cloud.broker.port, trust), agent_dir / "agent.log", {"PYTHONPATH": str(ROOT)}
    )
    try:
        first = json.loads(_cli("deploy", "tiny@1", "--to", f"device:{DEVICE}", *home, *net, "--json").stdout)
        assert first["status"] == "completed"
        record_before = json.loads((agent_dir / "state" / "updater.json").read_text())

        out = json.loads(_cli("deploy", "tiny@2", "--to", f"device:{DEVICE}", "--shadow", *home, *net, "--json").stdout)
        assert out == {"shadow": "tiny@2", "devices": {DEVICE: {"status": "running", "reason": "", "detail": ""}}}
        assert wait_for(lambda: (_status(agent_dir).get("shadow") or {}).get("compared", 0) >= 5, 30)
        sh = _status(agent_dir)["shadow"]
        assert sh["challenger"]["version"] == 2 and sh["challenger"]["sha256"] == bundles[2].manifest.artifact.sha256

        # the serving slots, their record and their link are as the champion's deployment left them
        record = json.loads((agent_dir / "state" / "updater.json").read_text())
        assert record["active"] == record_before["active"] and record["slots"] == record_before["slots"]
        assert record["sequence"] == record_before["sequence"]
        assert (agent_dir / "state" / "shadow" / "slot" / "manifest.json").is_file()
        # the challenger's verdicts reach no sink: every verdict is the champion's
        recs = [json.loads(x) for x in (agent_dir / "verdicts.jsonl").read_text().splitlines()]
        verdicts = [r for r in recs if r["type"] == "verdict"]
        assert verdicts and {r["model_version"] for r in verdicts} == {1}
        assert any(r.get("kind") == "shadow_started" for r in recs)

        # the shadow manifest replayed onto the desired topic: the serving slots refuse it
        shadow_env = json.loads((agent_dir / "state" / "shadow" / "slot" / "manifest.json").read_text())
        cloud.link.publish(cloud.topics.device_desired(DEVICE), json.dumps(shadow_env).encode(), qos=1)
        assert wait_for(lambda: any(e.reason == "wrong_target" for e in cloud.seen_events), 15)
        assert _status(agent_dir)["model"]["version"] == 1

        stopped = json.loads(_cli("deploy", "--stop-shadow", "--to", f"device:{DEVICE}", *home, *net, "--json").stdout)
        assert stopped["devices"][DEVICE]["status"] == "stopped"
        assert wait_for(lambda: not _status(agent_dir).get("shadow"), 10)
    finally:
        proc.terminate()
        proc.wait(20)
    log = (agent_dir / "agent.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def test_a_bad_shadow_deployment_is_refused_with_a_reason(
    cloud: Cloud, bundles: dict[int, BuiltBundle], tmp_path: Path, frames: list[Any]
) -> None:
    dev = cloud.device("sh-2", frames=frames)
    assert wait_for(lambda: dev.plugin.shadow_slot._thread is None)  # an agent without a challenger slot
    slot = ShadowSlot(dev.plugin.ctx)
    seen: list[tuple[str, dict[str, object]]] = []

    class Host:
        def __init__(self) -> None:
            self.shadow: ShadowWorker | None = None

        def local_event(self, kind: str, payload: dict[str, object]) -> None:
            seen.append((kind, payload))

    host = Host()
    slot.start(host)
    # the slot subscribes on the connected link: publish only once the broker granted it
    assert dev.plugin.ctx.link.link.wait_granted(10.0)
    try:
        serve = reissue(bundles[2].manifest, sequence=50, devices=("sh-2",))
        cloud.publisher.publish_artifact(serve, bundles[2].data)
        topic = cloud.topics.device_shadow("sh-2")
        # a serving deployment on the shadow topic
        cloud.link.publish(topic, envelope_bytes(cloud.publisher.sign(serve)), qos=1)
        assert wait_for(lambda: slot.state.reason == "wrong_target")
        # for another device
        other = as_shadow(reissue(bundles[2].manifest, sequence=51, devices=("sh-9",)))
        cloud.link.publish(topic, envelope_bytes(cloud.publisher.sign(other)), qos=1)
        assert wait_for(lambda: slot.state.refused_sequence == 51 and slot.state.reason == "wrong_target")
        # garbage, then a signature that does not match the body
        cloud.link.publish(topic, b"{not json", qos=1)
        assert wait_for(lambda: slot.state.reason == "bad_manifest")
        good = as_shadow(reissue(bundles[2].manifest, sequence=52, devices=("sh-2",)))
        forged = json.loads(envelope_bytes(cloud.publisher.sign(good)))
        forged["body"]["version"] = 99
        cloud.link.publish(topic, json.dumps(forged).encode(), qos=1)
        assert wait_for(lambda: slot.state.reason == "bad_signature")
        assert slot.state.state == "refused" and host.shadow is None
        # a good one runs; the same one again (a redelivery) changes nothing; an older one is a replay
        cloud.link.publish(topic, envelope_bytes(cloud.publisher.sign(good)), qos=1)
        assert wait_for(lambda: slot.state.state == "running", 60)
        running = host.shadow
        assert running is not None and running.challenger is not None and running.challenger["version"] == 2
        old = as_shadow(reissue(bundles[2].manifest, sequence=40, devices=("sh-2",)))
        cloud.link.publish(topic, envelope_bytes(cloud.publisher.sign(old)), qos=1)
        assert wait_for(lambda: slot.state.reason == "replay")
        assert slot.state.state == "running" and slot.state.sequence == 52
        assert [k for k, _ in seen].count("shadow_started") == 1
        # the agent restarts: the slot starts its staged challenger again, the retained offer changes nothing
        slot.stop()
        old_worker, host.shadow = host.shadow, None
        old_worker.stop()
        slot = ShadowSlot(dev.plugin.ctx)
        slot.start(host)
        assert wait_for(lambda: host.shadow is not None, 60) and slot.state.state == "running"
        # the slot sets host.shadow first, then tells the agent: wait for the event itself
        assert wait_for(lambda: [k for k, _ in seen].count("shadow_started") >= 2)
        assert slot.state.sequence == 52 and [k for k, _ in seen].count("shadow_started") == 2
    finally:
        slot.stop()
        if host.shadow is not None:
            host.shadow.stop()


def test_the_serving_slots_refuse_a_shadow_manifest(bundles: dict[int, BuiltBundle], cloud: Cloud) -> None:
    man = as_shadow(reissue(bundles[1].manifest, sequence=7, devices=("d-1",)))
    assert man.role == "shadow" and "role" not in bundles[1].manifest.to_body()
    payload = envelope_bytes(cloud.publisher.sign(man))
    me = m.Identity("d-1", "generic", ())
    got = triage(payload, False, m.Record(), TrustStore.load(cloud.key_dir / "trust.json"), me, man.issued_at + 1)
    assert isinstance(got, Refusal) and got.reason == "wrong_target" and "shadow" in got.detail


@pytest.mark.parametrize(
    ("state", "seq", "status"),
    [
        (None, 3, None),
        (ShadowSlotState(state="downloading", sequence=3), 3, None),
        (
            ShadowSlotState(state="running", sequence=3, model=ModelRef(name="t", version=2, sha256="a" * 64)),
            3,
            "running",
        ),
        (ShadowSlotState(state="running", sequence=2, model=ModelRef(name="t", version=1, sha256="b" * 64)), 3, None),
        (ShadowSlotState(state="running", sequence=2, refused_sequence=3, reason="selftest"), 3, "refused"),
        (ShadowSlotState(state="refused", sequence=3, reason="hash_mismatch"), 3, "refused"),
        (ShadowSlotState(state="stopped"), None, "stopped"),
    ],
)
def test_what_the_deploy_command_reads_from_a_device_state(
    state: ShadowSlotState | None, seq: int | None, status: str | None
) -> None:
    got = judge(state, seq, "a" * 64)
    assert (got.status if got else None) == status


@pytest.mark.parametrize(
    "args",
    [
        ["deploy", "--shadow", "--to", "device:x"],  # no REF
        ["deploy", "tiny@1", "--stop-shadow", "--to", "device:x"],  # a REF to stop
        ["deploy", "tiny@1", "--shadow", "--stop-shadow", "--to", "device:x"],
        ["deploy", "--to", "device:x"],
    ],
)
def test_bad_shadow_command_lines_are_refused_before_anything_is_sent(args: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [*args, "--home", str(tmp_path), "--broker-port", "1"], catch_exceptions=False)
    assert result.exit_code == 2 and ("REF" in result.output or "--stop-shadow" in result.output), result.output
