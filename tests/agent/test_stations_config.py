"""``[[station]]`` tables (docs/stations.md): what each station derives from the device file, and
every configuration two stations cannot run with, refused with the station, the key and the reason.
Pure: files are written, no agent is started."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edge_agent.stations.restart_policy import RestartPolicy, RestartState
from edgeline.cli.main import cli
from edgeline.core.errors import ProtocolError
from edgeline.core.protocol.partitions import parse_telemetry_topic, partition_topic
from edgeline.core.protocol.topics import Topics, check_unit, split_unit, station_unit, unit_problem
from firmware_configs.errors import ConfigError
from firmware_configs.loader import ConfigProblems, load_config, shipped_profiles
from firmware_configs.stations import load_stations, station_config
from firmware_configs.writer import render_stations, render_toml

DEVICE: dict[str, dict[str, Any]] = {
    "device": {"id": "press-7", "groups": ["line-3"]},
    "source": {"kind": "folder", "path": "/srv/frames", "loop": True, "read_timeout_ms": 2500},
    "model": {"bundle": "/var/lib/edgeline/slots/current"},
    "updater": {"state_dir": "/var/lib/edgeline"},
    "status": {"path": "/run/edgeline/status.json"},
}


def _write(tmp_path: Path, stations: list[tuple[str, dict[str, dict[str, Any]]]], **sections: Any) -> Path:
    tables = {**DEVICE, **sections}
    path = tmp_path / "device.toml"
    path.write_text(render_toml(tables) + "\n" + render_stations(stations), "utf-8")
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigProblems) as exc:
        load_config(path)
    return [str(p) for p in exc.value.problems]


def test_a_file_without_stations_is_one_station_exactly_as_before(tmp_path: Path) -> None:
    path = tmp_path / "device.toml"
    path.write_text(render_toml(DEVICE), "utf-8")
    cfg, stations = load_stations(str(path))
    assert stations == {} and cfg.station == ()
    assert Topics().device_state(cfg.device.id) == "edgeline/default/devices/press-7/state"
    assert cfg.updater.state_dir == "/var/lib/edgeline" and cfg.status.path == "/run/edgeline/status.json"
    with pytest.raises(ConfigError, match="no station 'left'; stations: none"):
        station_config(str(path), "left")


def test_each_station_derives_its_address_state_dir_status_and_slot(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            ("left", {}),
            ("right", {"": {"groups": ["line-4"]}, "source": {"kind": "url", "url": "rtsp://cam-2/s"}}),
        ],
    )
    _, st = load_stations(str(path))
    left, right = st["left"], st["right"]
    assert (left.device.id, right.device.id) == ("press-7~left", "press-7~right")
    assert (left.device.groups, right.device.groups) == (("line-3",), ("line-4",))
    assert left.updater.state_dir == "/var/lib/edgeline/stations/left"
    assert right.updater.state_dir == "/var/lib/edgeline/stations/right"
    assert left.status.path == "/run/edgeline/status-left.json"
    assert left.model.bundle == "/var/lib/edgeline/stations/left/slots/current"  # its own slot pair
    # a station's table is laid over the device's key by key
    assert left.source.kind == "folder" and right.source.kind == "url" and right.source.read_timeout_ms == 2500
    assert Topics().device_desired(right.device.id) == "edgeline/default/devices/press-7~right/desired"


def test_stations_may_leave_out_the_device_source(tmp_path: Path) -> None:
    tables = {k: v for k, v in DEVICE.items() if k != "source"}
    path = tmp_path / "device.toml"
    stations = [
        ("a", {"source": {"kind": "usb", "index": 0}}),
        ("b", {"source": {"kind": "usb", "index": 1, "mode": "trigger"}}),
    ]
    path.write_text(render_toml(tables) + "\n" + render_stations(stations), "utf-8")
    _, st = load_stations(str(path))
    assert (st["a"].source.index, st["a"].source.mode) == (0, "free")  # nothing of b's source leaks into a
    assert (st["b"].source.index, st["b"].source.mode) == (1, "trigger")
    path.write_text(render_toml(tables) + "\n" + render_stations([*stations, ("c", {})]), "utf-8")
    assert _problems(path) == ["station[c].source: required key is missing"]
    path.write_text(render_toml(tables) + "\n" + render_stations([("c", {}), *stations]), "utf-8")
    assert _problems(path) == ["station[c].source: required key is missing"]


@pytest.mark.parametrize(
    ("stations", "expected"),
    [
        ([("left", {}), ("left", {})], "station name 'left' is already used by station 1"),
        ([("Left", {}), ("left", {})], "differs only in case from 'Left'"),
        ([("cam.1", {})], "contains '.' (NATS refuses '.' in topics)"),
        ([("cam~1", {})], "contains '~'"),
        ([("cam/1", {})], "contains '/' (a topic level separator)"),
        ([("", {})], "must not be empty"),
    ],
)
def test_bad_station_names_are_refused(tmp_path: Path, stations: list[Any], expected: str) -> None:
    problems = _problems(_write(tmp_path, stations))
    assert any(expected in p for p in problems), problems


def test_an_address_longer_than_one_topic_level_is_refused(tmp_path: Path) -> None:
    problems = _problems(_write(tmp_path, [("s" * 60, {})]))
    assert problems == [
        f"station[{'s' * 60}].name = {'s' * 60!r}: the station's address 'press-7~{'s' * 60}' is 68 characters "
        "long; a station address <device>~<station> is one topic level of at most 64"
    ]


def test_two_stations_sharing_a_state_dir_are_refused(tmp_path: Path) -> None:
    same = {"updater": {"state_dir": "/var/lib/edgeline/one"}}
    problems = _problems(_write(tmp_path, [("a", same), ("b", same)]))
    assert len(problems) == 1 and "stations 'a' and 'b' would share a state dir" in problems[0], problems
    assert problems[0].startswith("station[b].updater.state_dir = '/var/lib/edgeline/one'")
    nested = _problems(_write(tmp_path, [("a", same), ("b", {"updater": {"state_dir": "/var/lib/edgeline/one/b"}})]))
    assert "would share a state dir" in nested[0]


def test_two_stations_listening_on_one_port_are_refused(tmp_path: Path) -> None:
    problems = _problems(_write(tmp_path, [("a", {}), ("b", {})], api={"enabled": True, "port": 8600}))
    assert problems == [
        "station[b].api.port = 8600: stations 'a' (api.port) and 'b' (api.port) would listen on the same port "
        "(give each its own, or 0 for a free one)"
    ]
    ok = _write(tmp_path, [("a", {}), ("b", {"api": {"port": 8601}})], api={"enabled": True, "port": 8600})
    assert load_stations(str(ok))[1]["b"].api.port == 8601
    free = _write(tmp_path, [("a", {}), ("b", {})], api={"enabled": True, "port": 0})
    assert len(load_stations(str(free))[1]) == 2


def test_two_stations_writing_one_file_or_reading_one_camera_are_refused(tmp_path: Path) -> None:
    sink = {"sinks.jsonl": {"path": "/var/log/edgeline/verdicts.jsonl"}}
    problems = _problems(_write(tmp_path, [("a", {}), ("b", {})], **sink))
    assert problems == [
        "station[b].sinks.jsonl.path = '/var/log/edgeline/verdicts.jsonl': stations 'a' (sinks.jsonl.path) and "
        "'b' (sinks.jsonl.path) would write the same file: give each station its own [station.sinks]"
    ]
    usb = {"source": {"kind": "usb", "index": 2}}
    problems = _problems(_write(tmp_path, [("a", usb), ("b", usb)]))
    assert problems == [
        "station[b].source.index = 2: stations 'a' and 'b' would open the same USB camera (a camera has one reader)"
    ]


def test_a_station_error_names_the_station_and_the_key(tmp_path: Path) -> None:
    problems = _problems(_write(tmp_path, [("a", {}), ("b", {"source": {"kind": "url", "url": "ftp://cam"}})]))
    assert problems == [
        "station[b].source.url = 'ftp://cam': url must start with rtsp://, rtsps://, http:// or https://"
    ]
    path = _write(tmp_path, [("a", {"camera": {"index": 1}})])
    assert _problems(path) == ["station.0.camera: unknown key (value {'index': 1})"]


def test_a_device_with_stations_has_a_plain_id(tmp_path: Path) -> None:
    problems = _problems(_write(tmp_path, [("a", {})], device={"id": "press~7"}))
    assert any("is already a station address" in p for p in problems), problems


def test_station_addresses() -> None:
    assert station_unit("press-7", "left") == "press-7~left"
    assert split_unit("press-7~left") == ("press-7", "left") and split_unit("press-7") == ("press-7", None)
    assert unit_problem("a~b~c") is not None and "'b~c'" in str(unit_problem("a~b~c"))
    assert unit_problem("~b") is not None and unit_problem("a~") is not None
    with pytest.raises(ProtocolError, match=r"invalid device id 'a\.b~c'"):
        check_unit("a.b~c")
    t = Topics()
    # what the cloud side parses from a station's topics: its address, as one device id
    assert t.device_id_from(t.device_events("press-7~left")) == "press-7~left"
    assert parse_telemetry_topic(t, partition_topic(t, "press-7~left", 3)) == ("press-7~left", 3)
    assert parse_telemetry_topic(t, t.device_telemetry("press-7~left")) == ("press-7~left", None)
    with pytest.raises(ProtocolError):
        t.device_id_from("edgeline/default/devices/a~b~c/state")


def test_check_config_lists_the_stations(tmp_path: Path) -> None:
    path = _write(tmp_path, [("left", {}), ("right", {})])
    out = CliRunner().invoke(cli, ["agent", "check-config", str(path)])
    assert out.exit_code == 0, out.output
    assert "stations left (press-7~left), right (press-7~right)" in out.output
    bad = _write(tmp_path, [("left", {}), ("left", {})])
    out = CliRunner().invoke(cli, ["agent", "check-config", str(bad)])
    assert out.exit_code == 1 and "station name 'left' is already used by station 1" in out.output


def test_run_refuses_an_unknown_station(tmp_path: Path) -> None:
    path = _write(tmp_path, [("left", {})])
    out = CliRunner().invoke(cli, ["agent", "run", "--config", str(path), "--station", "middle"])
    assert out.exit_code != 0 and "no station 'middle'; stations: left" in out.output


def test_the_two_camera_profile_is_valid() -> None:
    profile = next(p for p in shipped_profiles() if p.name == "two-camera-stations.toml")
    _, stations = load_stations(str(profile))
    assert len(stations) == 2 and all("~" in s.device.id for s in stations.values())


def test_restart_backoff_doubles_and_starts_again_after_a_healthy_run() -> None:
    state = RestartState(RestartPolicy(min_s=1.0, max_s=8.0, healthy_after_s=60.0))
    delays = [state.died(ran_s=2.0, now=100.0) - 100.0 for _ in range(5)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0] and state.restarts == 5
    assert state.died(ran_s=61.0, now=0.0) == 1.0  # it ran long enough: the count starts again
    with pytest.raises(ValueError):
        RestartPolicy(min_s=2.0, max_s=1.0)


def test_two_stations_with_one_broker_identity_are_refused(tmp_path: Path) -> None:
    cloud = {"username": "press-7", "password_file": "/etc/edgeline/mqtt-password"}
    problems = _problems(_write(tmp_path, [("a", {}), ("b", {})], cloud=cloud))
    assert len(problems) == 1 and problems[0].startswith("station[b].cloud.username = 'press-7': stations 'a' and 'b'")
    assert "would connect as one identity" in problems[0] and "press-7~a, press-7~b" in problems[0]
    own = [(n, {"cloud": {"username": f"press-7~{n}", "password_file": f"/etc/edgeline/{n}.pw"}}) for n in "ab"]
    assert load_stations(str(_write(tmp_path, own, cloud=cloud)))[1]["b"].cloud.username == "press-7~b"


def test_check_config_deep_checks_each_station(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    path = _write(tmp_path, [("left", {"source": {"path": str(frames)}}), ("right", {})])
    out = CliRunner().invoke(cli, ["agent", "check-config", str(path), "--deep", "--json"])
    warnings = json.loads(out.output)["warnings"]
    assert "station[right] source.path = '/srv/frames': no such image folder" in warnings
    assert not [w for w in warnings if w.startswith("station[left] source")], warnings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('station = "left"\n', "station = 'left': write one [[station]] table per station"),
        ('[station]\nname = "left"\n', "station: write one [[station]] table per station"),
        ("station = [1]\n", "station.0 = 1: input should be a valid dictionary"),
        ('[[station]]\nname = "a"\nsource = "usb"\n', "station.0.source = 'usb': input should be a valid dictionary"),
        ("[[station]]\nname = 3\n", "station.0.name = 3: input should be a valid string"),
        ('[[station]]\nname = "a"\ngroups = ["x.y"]\n', "group 'x.y' contains '.'"),
        ('[[station]]\nname = "a"\n[station.source]\nkindd = "usb"\n', "station[a].source.kindd: unknown key"),
        (
            "".join(f'[[station]]\nname = "s{i}"\n[station.source]\nindex = {i}\n' for i in range(17)),
            "station: 17 stations; at most 16 on one device",
        ),
    ],
)
def test_hostile_station_tables_get_clear_messages(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "device.toml"
    head = '[device]\nid = "d"\n[source]\nkind = "usb"\nindex = 0\n'
    path.write_text(text + head if not text.startswith("[") else head + text, "utf-8")
    problems = _problems(path)
    assert len(problems) >= 1 and any(p.startswith(expected) or expected in p for p in problems), problems
