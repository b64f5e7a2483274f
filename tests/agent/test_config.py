"""Device configuration: strict schema, errors naming key and value, shipped profiles, check-config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeline.cli.main import cli
from firmware_configs.errors import ConfigError
from firmware_configs.loader import ConfigProblems, load_config, parse_toml, profiles_dir, shipped_profiles

GOOD = """
[device]
id = "cam-7"
[source]
kind = "file"
path = "/data/line.avi"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigProblems) as info:
        parse_toml(text, "t.toml")
    return [str(p) for p in info.value.problems]


def test_minimal_config_takes_defaults_for_every_other_section() -> None:
    cfg = parse_toml(GOOD)
    assert cfg.device.id == "cam-7"
    assert cfg.source.policy == "block"  # a file is read completely
    assert cfg.inference.threads == 1
    assert cfg.cloud.enabled and cfg.updater.trial_frames >= 0 and cfg.telemetry.window_s > 0
    assert cfg.api.host == "127.0.0.1"  # the prediction API is local by default
    assert cfg.trust_file == cfg.updater.trust_file


def test_unknown_key_is_named_with_its_value() -> None:
    assert problems(GOOD + "[inference]\ntreads = 2\n") == ["inference.treads: unknown key (value 2)"]
    assert problems(GOOD.replace('kind = "file"', 'kind = "file"\nfsp = 30')) == ["source.fsp: unknown key (value 30)"]


def test_bad_value_is_named_with_its_value() -> None:
    (msg,) = problems(GOOD.replace('"file"', '"camera"'))
    assert msg.startswith("source.kind = 'camera': must be one of")
    (msg,) = problems(GOOD + "[inference]\nthreads = 0\n")
    assert msg.startswith("inference.threads = 0:") and "greater than or equal to 1" in msg
    (msg,) = problems(GOOD.replace('"cam-7"', '"cam 7/#"'))
    assert msg.startswith("device.id = 'cam 7/#':")


def test_wrong_type_is_named_with_its_value() -> None:
    (msg,) = problems(GOOD + '[inference]\nthreads = "two"\n')
    assert msg.startswith("inference.threads = 'two':") and "integer" in msg
    (msg,) = problems(GOOD + "[api]\nenabled = 3.5\n")
    assert msg.startswith("api.enabled = 3.5:")


def test_rules_across_keys_name_the_table() -> None:
    (msg,) = problems('[device]\nid = "a"\n[source]\nkind = "usb"\n')
    assert msg == "source: source kind 'usb' needs the key 'index'"
    (msg,) = problems('[device]\nid = "a"\n[source]\nkind = "url"\nurl = "ftp://cam"\n')
    assert msg.startswith("source.url = 'ftp://cam':")


def test_camera_recovery_and_pixel_limit_keys_are_validated() -> None:
    cfg = parse_toml(GOOD)
    s = cfg.source
    assert (s.reconnect_max_s, s.reconnect_probe_s, s.stall_intervals, s.stall_min_s, s.stall_max_s) == (
        2.0,
        0.25,
        10.0,
        2.0,
        3.0,
    )
    assert s.max_image_pixels == cfg.api.max_image_pixels == 25_000_000
    (msg,) = problems(GOOD + "stall_min_s = 4.0\nstall_max_s = 2.0\n")
    assert msg == "source: stall_max_s must be >= stall_min_s"
    (msg,) = problems(GOOD + "max_image_pixels = 0\n")
    assert msg.startswith("source.max_image_pixels = 0:") and "greater than or equal to 1" in msg
    (msg,) = problems(GOOD + "[api]\nmax_image_pixels = 99999999999\n")
    assert msg.startswith("api.max_image_pixels = 99999999999:")
    (msg,) = problems(GOOD + "stall_seconds = 3\n")
    assert msg == "source.stall_seconds: unknown key (value 3)"


def test_every_problem_is_reported_at_once() -> None:
    found = problems('[source]\nkind = "usb"\nindex = -1\n[sinks.jsonl]\nmax_bytes = 1\n')
    assert "device: required key is missing" in found
    assert any(p.startswith("source.index = -1:") for p in found)
    assert "sinks.jsonl.path: required key is missing" in found
    assert any(p.startswith("sinks.jsonl.max_bytes = 1:") for p in found)


def test_config_is_immutable() -> None:
    cfg = parse_toml(GOOD)
    with pytest.raises(Exception, match="frozen"):
        cfg.device.id = "other"  # type: ignore[misc]


def test_unreadable_files_give_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[device\nid = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)
    huge = tmp_path / "huge.toml"
    huge.write_bytes(b"#" * (2 * 1024 * 1024))
    with pytest.raises(ConfigError, match="too large"):
        load_config(huge)


def test_shipped_profiles_validate_and_cover_three_device_classes() -> None:
    profiles = shipped_profiles()
    assert {p.name for p in profiles} >= {"arm-usb.toml", "ipc-rtsp.toml", "replay-station.toml"}
    configs = {p.name: load_config(p) for p in profiles}
    assert configs["arm-usb.toml"].source.kind == "usb"
    assert configs["arm-usb.toml"].source.policy == "drop_oldest"
    assert configs["ipc-rtsp.toml"].source.kind == "url"
    assert configs["ipc-rtsp.toml"].source.rtsp_transport == "tcp"
    assert configs["replay-station.toml"].source.policy == "block"
    assert len({c.device.hardware_class for c in configs.values()}) >= 3


def test_systemd_unit_runs_the_agent_after_checking_its_config() -> None:
    unit = (profiles_dir().parent / "deploy" / "edgeline-agent.service").read_text()
    assert "ExecStartPre=" in unit and "agent check-config /etc/edgeline/agent.toml" in unit
    assert "ExecStart=" in unit and "agent run --config /etc/edgeline/agent.toml" in unit
    assert "Restart=always" in unit and "[Install]" in unit


def test_check_config_command(tmp_path: Path) -> None:
    runner = CliRunner()
    for profile in shipped_profiles():
        res = runner.invoke(cli, ["agent", "check-config", str(profile)])
        assert res.exit_code == 0, res.output
        assert "OK" in res.output
    bad = tmp_path / "agent.toml"
    bad.write_text(GOOD + "[inference]\ntreads = 2\n")
    res = runner.invoke(cli, ["agent", "check-config", str(bad)])
    assert res.exit_code == 1
    assert "inference.treads: unknown key (value 2)" in res.output
    res = runner.invoke(cli, ["agent", "check-config", "--json", str(bad)])
    assert res.exit_code == 1
    assert json.loads(res.output) == {
        "ok": False,
        "file": str(bad),
        "problems": ["inference.treads: unknown key (value 2)"],
    }


def test_check_config_deep_reports_what_is_missing_on_this_machine(tmp_path: Path) -> None:
    good = tmp_path / "agent.toml"
    good.write_text(GOOD + f'[model]\nbundle = "{tmp_path / "nothing"}"\n')
    runner = CliRunner()
    res = runner.invoke(cli, ["agent", "check-config", "--deep", "--json", str(good)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["ok"] is True
    assert any("no such video file" in w for w in doc["warnings"])
    assert any("no bundle there" in w for w in doc["warnings"])
    res = runner.invoke(cli, ["agent", "check-config", "--deep", "--strict", str(good)])
    assert res.exit_code == 1
