"""The delivery commands end to end: registry, deploy, rollout, rollback and fleet, on a real broker
with in-process devices."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from edgeline.cli.main import cli
from tests.delivery.conftest import BuiltBundle, Cloud, wait_for


class Edgeline:
    def __init__(self, cloud: Cloud, home: Path) -> None:
        self.common = ["--home", str(home)]
        self.broker = ["--broker-port", str(cloud.broker.port)]
        self.keys = ["--keys", str(cloud.key_dir)]
        self.trust = ["--trust", str(cloud.key_dir / "trust.json")]
        self.runner = CliRunner()

    def __call__(self, *args: str, ok: bool = True) -> Result:
        result = self.runner.invoke(cli, list(args), catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        else:
            assert result.exit_code != 0, result.output
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def edgeline(cloud: Cloud, tmp_path: Path) -> Edgeline:
    return Edgeline(cloud, tmp_path / "home")


def test_registry_commands(edgeline: Edgeline, bundles: dict[int, BuiltBundle], tmp_path: Path) -> None:
    e = edgeline
    row = e.json("registry", "add", str(bundles[1].path), *e.common, *e.trust)
    assert (row["name"], row["version"]) == ("tiny", 1)
    e("registry", "add", str(bundles[2].path), *e.common, *e.trust, "--note", "second")
    out = e("registry", "add", str(bundles[2].path), *e.common, *e.trust, ok=False).output
    assert "not above" in out
    assert e.json("registry", "list", *e.common) == [{"name": "tiny", "versions": 2, "latest": 2, "stages": {}}]
    e("registry", "promote", "tiny@1", "--stage", "production", *e.common)
    shown = e.json("registry", "show", "tiny@production", *e.common)
    assert shown["version"] == 1 and shown["stages"] == ["production"] and shown["labels"] == ["ok", "spot"]
    assert [r["version"] for r in e.json("registry", "show", "tiny", *e.common)] == [1, 2]
    assert "v9 is not registered" in e("registry", "show", "tiny@9", *e.common, ok=False).output
    assert "bad model reference" in e("registry", "show", "tiny@@1", *e.common, ok=False).output
    assert "staging" in e("registry", "promote", "tiny@1", "--stage", "canary", *e.common, ok=False).output
    evil = tmp_path / "evil"
    shutil.copytree(bundles[3].path, evil)
    manifest = json.loads((evil / "manifest.json").read_text())
    manifest["body"]["version"] = 42  # altered after signing
    (evil / "manifest.json").write_text(json.dumps(manifest))
    assert "refused" in e("registry", "add", str(evil), *e.common, *e.trust, ok=False).output
    assert "unsupported" in e("registry", "list", "--store", "mysql://x", *e.common, ok=False).output


def test_deploy_fleet_status_and_rollback(
    edgeline: Edgeline, cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any]
) -> None:
    e = edgeline
    for v in (1, 2):
        e("registry", "add", str(bundles[v].path), *e.common, *e.trust)
    devs = [cloud.device(d, groups=("line-9",), hardware_class="x86-ipc", frames=frames) for d in ("e-1", "e-2")]
    done = e.json("deploy", "tiny@1", "--to", "group:line-9", "--waves", "1,all", *e.common, *e.broker, *e.keys)
    assert done["status"] == "completed" and done["devices"] == {"e-1": "committed", "e-2": "committed"}

    fleet = {r["device_id"]: r for r in e.json("fleet", *e.broker, "--wait", "1")}
    assert fleet["e-1"]["status"] == "online" and fleet["e-1"]["model"]["version"] == 1
    assert fleet["e-2"]["hardware_class"] == "x86-ipc" and fleet["e-2"]["updater"] == "COMMITTED"
    assert "e-1" in e("fleet", *e.broker, "--wait", "1").output

    devs[0].agent.fail_sha = bundles[2].manifest.artifact.sha256
    out = e("deploy", "tiny@2", "--to", "group:line-9", "--canary", "1", *e.common, *e.broker, *e.keys, ok=False)
    assert "aborted: canary failed" in out.output
    [latest, first] = e.json("rollout", "status", *e.common)
    assert latest["status"] == "aborted" and first["status"] == "completed"
    detail = e.json("rollout", "status", latest["id"], *e.common)
    assert detail["devices"]["e-1"] == {"status": "rolled_back", "reason": "trial_errors"}
    assert detail["devices"]["e-2"]["status"] == "skipped"
    assert wait_for(lambda: [d.version() for d in devs] == [1, 1])

    # a good v2 for everyone, then roll that rollout back (no runner alive: the command does it)
    devs[0].agent.fail_sha = None
    good = e.json("deploy", "tiny@2", "--to", "group:line-9", *e.common, *e.broker, *e.keys)
    assert good["status"] == "completed"
    assert wait_for(lambda: [d.version() for d in devs] == [2, 2])
    assert "aborted" in e("rollback", good["id"], *e.common, *e.broker, *e.keys).output
    assert wait_for(lambda: [d.version() for d in devs] == [1, 1])
    # an explicit authorised downgrade... to v1 again is a no-op that completes
    again = e.json("rollback", "tiny@1", "--to", "device:e-2", *e.common, *e.broker, *e.keys)
    assert again["status"] == "completed"
    assert "already aborted" not in e("rollout", "pause", good["id"], *e.common, *e.broker, *e.keys).output


def test_bad_cli_input(edgeline: Edgeline, bundles: dict[int, BuiltBundle]) -> None:
    e = edgeline
    e("registry", "add", str(bundles[1].path), *e.common, *e.trust)
    assert (
        "no device matches"
        in e("deploy", "tiny@1", "--to", "group:nobody", *e.common, *e.broker, *e.keys, ok=False).output
    )
    assert "bad target" in e("deploy", "tiny@1", "--to", "line-1", *e.common, *e.broker, *e.keys, ok=False).output
    assert (
        "percentage"
        in e(
            "deploy", "tiny@1", "--to", "device:x", "--max-failures", "lots", *e.common, *e.broker, *e.keys, ok=False
        ).output
    )
    assert (
        "not found"
        in e("deploy", "tiny@1", "--to", "device:x", *e.common, *e.broker, "--keys", "/nope", ok=False).output
    )
    assert "does not exist" in e("rollout", "status", "r-nope", *e.common, ok=False).output
    assert "--to" in e("rollback", "tiny@1", *e.common, *e.broker, *e.keys, ok=False).output
    assert "fleet broker" in e("fleet", "--broker-port", "1", ok=False).output
