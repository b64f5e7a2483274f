"""``edgeline config push|diff|history|status`` against a real Mosquitto and a SQLite registry (the
status of a device that answers: tests/remote_config/test_agent_hot.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from edgeline.cli.main import cli
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.remote_config import parse_config_payload
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, env=env)


def test_push_diff_history_and_status(mosquitto: MosquittoBroker, key_dir: Path, tmp_path: Path) -> None:
    common = ["--home", str(tmp_path / "home"), "--broker", f"127.0.0.1:{mosquitto.port}"]
    f1 = tmp_path / "c1.toml"
    f1.write_text('[sinks.jsonl]\npath = "/var/log/edgeline/v.jsonl"\n\n[telemetry]\nwindow_s = 30.0\n')
    r = run("config", "push", "dev-7", str(f1), "--keys", str(key_dir), "--by", "bob", "--json", *common)
    assert r.exit_code == 0, r.output
    v1 = json.loads(r.output)["version"]
    # retained on the device's config topic, signed
    got: list[bytes] = []
    link = MqttLink(LinkSettings(port=mosquitto.port, client_id="t-read", clean_start=True))
    link.connect(10)
    try:
        link.subscribe(Topics().device_config("dev-7"), lambda _t, p, _r: got.append(p))
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        link.stop()
    env = parse_config_payload(got[0])
    assert env is not None and env.body["version"] == v1 and env.body["pushed_by"] == "bob"
    assert env.body["target"]["devices"] == ["dev-7"]

    f2 = tmp_path / "c2.toml"
    f2.write_text('[telemetry]\nwindow_s = 10.0\n\n[inference]\nstats_every = 5\n\n[cloud]\nhost = "x"\n')
    r = run("config", "diff", "dev-7", str(f2), "--json", "--home", str(tmp_path / "home"))
    assert r.exit_code == 0, r.output
    changes: dict[str, Any] = {c["key"]: c for c in json.loads(r.output)["changes"]}
    assert changes["telemetry.window_s"] == {"key": "telemetry.window_s", "old": 30.0, "new": 10.0, "applied": "hot"}
    assert changes["inference.stats_every"]["applied"] == "restart"
    assert changes["cloud.host"]["applied"].startswith("refused")
    assert changes["sinks.jsonl.path"]["new"] is None
    # a file a device would refuse is refused before it is signed
    r = run("config", "push", "--to", "group:line-a", str(f2), "--keys", str(key_dir), *common)
    assert r.exit_code != 0 and "cloud.host" in r.output
    f3 = tmp_path / "c3.toml"
    f3.write_text("[decision]\nthreshold = 0.4\n")
    r = run("config", "push", "--to", "group:line-a", str(f3), "--keys", str(key_dir), "--note", "night", *common)
    assert r.exit_code == 0 and "pushed to group:line-a" in r.output, r.output
    r = run("config", "push", "dev-7", "--reset", "--keys", str(key_dir), "--by", "bob", *common)
    assert r.exit_code == 0, r.output
    r = run("config", "push", "dev-7", str(f3), "--reset", "--keys", str(key_dir), *common)
    assert r.exit_code != 0 and "no FILE" in r.output
    r = run("config", "history", "--json", "--home", str(tmp_path / "home"))
    rows = json.loads(r.output)
    assert [(x["target"], x["by"]) for x in rows[1:]] == [("group:line-a", rows[1]["by"]), ("device:dev-7", "bob")]
    assert rows[0]["target"] == "device:dev-7" and rows[0]["version"] > rows[1]["version"]
    assert rows[1]["note"] == "night" and rows[1]["version"] > v1
    for bad in (["config", "push", "dev/7", str(f1)], ["config", "push", str(f1)]):
        r = run(*bad, "--keys", str(key_dir), *common)
        assert r.exit_code != 0
    garbage = tmp_path / "bad.toml"
    garbage.write_text("[sinks\n")
    r = run("config", "push", "dev-7", str(garbage), "--keys", str(key_dir), *common)
    assert r.exit_code != 0 and "not valid TOML" in r.output
    # no device answers: status says so
    r = run("config", "status", "dev-7", "--wait", "0.5", "--json", *common)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == [
        {
            "device": "dev-7",
            "version": None,
            "trial": None,
            "changed": [],
            "last_refusal": None,
            "last_rollback": None,
            "pushed_to_device": rows[0]["version"],  # the reset
        }
    ]
    # the same, for people
    r = run("config", "status", "dev-7", "--wait", "0.3", *common)
    assert r.exit_code == 0 and "dev-7" in r.output and "no answer" in r.output, r.output
    r = run("config", "history", "dev-7", "--home", str(tmp_path / "home"))
    assert r.exit_code == 0 and "bob" in r.output and "device:dev-7" in r.output, r.output
    r = run("config", "diff", "--to", "group:line-a", str(f2), "--home", str(tmp_path / "home"))
    assert r.exit_code == 0, r.output
    assert "~ " not in r.output and "+ telemetry.window_s = 10.0  [hot]" in r.output, r.output
    assert "- decision.threshold = 0.4  [hot]" in r.output and "[restart]" in r.output, r.output
