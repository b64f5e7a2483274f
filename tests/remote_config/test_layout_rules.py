"""The rules of a station layout document (edge_agent/stations/layout.py, layout_trial.py), its bounds on
the wire, and the layout the supervisor starts with (layout_boot.py) on real files, with real
signatures: a committed layout is verified again, a trial the supervisor did not finish is rolled
back, a layout altered on disk or one the file no longer validates with is not used."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from converters.keys import KeyPaths, SigningKey
from edge_agent.remote_config.errors import ConfigRefused
from edge_agent.remote_config.store import Applied, ConfigRecord, ConfigStore
from edge_agent.stations import layout_file
from edge_agent.stations.layout import (
    LayoutPlan,
    check_layout,
    layout_diff,
    layout_entries,
    layout_problem,
    layout_roots,
    plan_layout,
    resolve_layout,
)
from edge_agent.stations.layout_boot import boot_layout
from edge_agent.stations.layout_file import layout_in_force, station_in_force
from edge_agent.stations.layout_trial import LayoutTrial, StationRun
from edgeline.core.errors import ProtocolError
from edgeline.core.protocol.remote_config import LAYOUT_KEY, parse_config_document
from firmware_configs.loader import parse_config
from firmware_configs.writer import render_stations, render_toml


def _file(tmp: Path, cloud: bool = False) -> dict[str, Any]:
    (tmp / "frames").mkdir(exist_ok=True)
    (tmp / "frames" / "f.png").write_bytes(b"x")
    return {
        "device": {"id": "cell"},
        "model": {"bundle": str(tmp / "bundle")},
        "updater": {"state_dir": str(tmp / "state"), "enabled": False},
        "status": {"path": str(tmp / "status.json")},
        "cloud": {"enabled": cloud},
        "station": [_entry(tmp, "a", username="cell-a"), _entry(tmp, "b", username="cell-b")],
    }


def _entry(tmp: Path, name: str, username: str | None = None, **tables: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "name": name,
        "source": {"kind": "folder", "path": str(tmp / "frames")},
        "sinks": {"jsonl": {"path": str(tmp / "logs" / f"{name}.jsonl")}},
    }
    if username:
        e["cloud"] = {"username": username}
    return e | tables


def _refused(fn: Any, *args: Any) -> ConfigRefused:
    with pytest.raises(ConfigRefused) as info:
        fn(*args)
    return info.value


def _check(tmp: Path, file: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    check_layout(entries, file, layout_roots(file, [str(tmp / "allowed")]), set(), [str(tmp / "state")])


def test_a_layout_document_carries_the_station_list_only(tmp_path: Path) -> None:
    file = _file(tmp_path)
    r = _refused(layout_entries, {"station": [], "decision": {"threshold": 0.4}}, file)
    assert r.reason == "forbidden" and r.detail.startswith("decision: a document to a device with stations")
    assert _refused(layout_entries, {"station": {"name": "a"}}, file).reason == "bad_document"
    r = _refused(layout_entries, {"station": []}, file)
    assert (r.reason, r.detail) == ("no_station", "the layout names no station: a device keeps at least one")
    r = _refused(layout_entries, {"station": [{"source": {}}]}, file)
    assert (r.reason, r.detail) == ("invalid", "station[0].name: every station needs a name")
    assert layout_entries({}, file) == file["station"]  # an empty document: the file's own stations


def test_each_station_is_judged_on_what_it_changes_from_the_file(tmp_path: Path) -> None:
    file = _file(tmp_path)
    # stations copied from the file keep their identity keys, which no document may set
    _check(tmp_path, file, [*file["station"], _entry(tmp_path, "c")])
    r = _refused(_check, tmp_path, file, [file["station"][0], _entry(tmp_path, "c", username="x")])
    assert r.reason == "forbidden" and r.detail.startswith("station[c].cloud.username: the fleet link")
    changed = _entry(tmp_path, "a", username="someone-else")
    assert _refused(_check, tmp_path, file, [changed]).detail.startswith("station[a].cloud.username")
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"sinks": {"command": {"argv": ["/bin/sh"]}}}, "hostile", "station[c].sinks.command"),
        ({"sinks": {"jsonl": {"path": "/etc/passwd"}}}, "hostile", "outside the allowed directories"),
        ({"sinks": {"jsonl": {"path": f"{tmp_path}/../x.jsonl"}}}, "hostile", "without '..'"),
        ({"sinks": {"jsonl": {"path": f"{tmp_path}/state/x.jsonl"}}}, "hostile", "inside the device's own state"),
        ({"sinks": {"mqtt": {"host": "evil.example"}}}, "hostile", "host 'evil.example' is not allowed"),
        ({"updater": {"state_dir": "/tmp/x"}}, "forbidden", "station[c].updater.state_dir"),
        ({"model": {"bundle": "/tmp/b"}}, "forbidden", "station[c].model.bundle"),
        ({"api": {"port": 8080}}, "forbidden", "station[c].api.port"),
    ]
    for tables, reason, shown in cases:
        r = _refused(_check, tmp_path, file, [file["station"][0], _entry(tmp_path, "c") | tables])
        assert r.reason == reason and shown in r.detail, (tables, r)
    # a new folder under an allowed directory is fine
    (tmp_path / "allowed" / "frames").mkdir(parents=True)
    e = _entry(tmp_path, "c", source={"kind": "folder", "path": str(tmp_path / "allowed" / "frames")})
    _check(tmp_path, file, [file["station"][0], e])


def test_the_resulting_layout_is_validated_as_the_file_is(tmp_path: Path) -> None:
    file = _file(tmp_path)
    stations = resolve_layout(file, [*file["station"], _entry(tmp_path, "c")], "layout v1")
    assert {n: c.device.id for n, c in stations.items()} == {"a": "cell~a", "b": "cell~b", "c": "cell~c"}
    assert stations["c"].updater.state_dir == f"{tmp_path}/state/stations/c"
    clash = _entry(tmp_path, "c", sinks={"jsonl": {"path": str(tmp_path / "logs" / "a.jsonl")}})
    r = _refused(resolve_layout, file, [file["station"][0], clash], "layout v2")
    assert r.reason == "invalid" and "stations 'a' (sinks.jsonl.path) and 'c' (sinks.jsonl.path)" in r.detail
    usb = [_entry(tmp_path, n, source={"kind": "usb", "index": 0}) for n in ("a", "c")]
    assert "would open the same USB camera" in _refused(resolve_layout, file, usb, "v3").detail
    twin = [_entry(tmp_path, "a", username="u"), _entry(tmp_path, "c", username="u")]
    online = _file(tmp_path, cloud=True)
    assert "would connect as one identity" in _refused(resolve_layout, online, twin, "v4").detail
    bad = [_entry(tmp_path, "no/slash")]
    assert "station.0.name = 'no/slash': contains '/'" in _refused(resolve_layout, file, bad, "v5").detail
    r = _refused(resolve_layout, file, [file["station"][0], _entry(tmp_path, "c", source={"url": "ftp://x"})], "v6")
    assert "station[c].source.url = 'ftp://x'" in r.detail


def test_a_layout_must_leave_a_working_station(tmp_path: Path) -> None:
    file = _file(tmp_path)
    missing = _entry(tmp_path, "z", source={"kind": "folder", "path": str(tmp_path / "nothing")})
    stations = resolve_layout(file, [missing], "v1")
    why = layout_problem(stations, plan_layout(file["station"], [missing]))
    assert why is not None and why.startswith("the layout leaves no working station (station[z]: ")
    assert "no such image folder" in why
    both = [file["station"][0], missing]
    why = layout_problem(resolve_layout(file, both, "v2"), plan_layout(file["station"], both))
    assert why is not None and why.startswith("station[z] would not work: ")
    # a station left as it is is not probed (its camera unplugged now is not the document's fault)
    gone = resolve_layout(file, file["station"], "v3")
    assert layout_problem(gone, LayoutPlan(unchanged=("a", "b")), probe=lambda _s: "unplugged") is None
    no_slot = resolve_layout({**file, "model": {}}, [_entry(tmp_path, "c")], "v4")
    why = layout_problem(no_slot, plan_layout([], [_entry(tmp_path, "c")]))
    assert why is not None and "no model slot" in why


def test_plan_and_diff_name_each_station(tmp_path: Path) -> None:
    a, b, c = (_entry(tmp_path, n) for n in "abc")
    b2 = _entry(tmp_path, "b", source={"kind": "usb", "index": 1})
    plan = plan_layout([a, b], [a, b2, c])
    assert (plan.added, plan.removed, plan.changed, plan.unchanged) == (("c",), (), ("b",), ("a",))
    assert plan.tried == ("c", "b") and plan.describe() == ("station[c]: added", "station[b]: changed")
    assert plan_layout([a, b], [a]).describe() == ("station[b]: removed",)
    assert plan_layout([a], [a]).empty
    keys = [(ch.key, ch.had_old, ch.had_new) for ch in layout_diff([a, b], [a, b2, c])]
    assert keys == [
        ("station[b].source.index", False, True),
        ("station[b].source.kind", True, True),
        ("station[b].source.path", True, False),
        ("station[c]", False, True),
    ]


def test_the_trial_of_a_layout() -> None:
    t = LayoutTrial(7, ("c",), started=100.0, trial_s=1.0, trial_frames=3, trial_timeout_s=30.0)
    starting = {"c": StationRun("running", 0, 0.5)}
    assert t.judge(100.5, starting) is None
    assert t.judge(103.0, {"c": StationRun("running", 0, 3.0, None, "RUNNING", 5)}) == (True, "")
    assert t.judge(103.0, {"c": StationRun("finished", 0, 0.0, 0)}) == (True, "")
    assert t.judge(103.0, {"c": StationRun("running", 0, 3.0, None, "NO_MODEL", 5)}) == (True, "")
    assert t.judge(103.0, {"c": StationRun("running", 0, 3.0, None, "STARTING", 5)}) is None
    assert t.judge(104.0, {"c": StationRun("waiting", 2, 0.0, 1)}) == (
        False,
        "station[c] died 2 times during its trial, last exit 1",
    )
    assert t.judge(104.0, {"c": StationRun("running", 1, 2.0, 1, "FAILED")}) == (
        False,
        "station[c] cannot run with it (its status says FAILED)",
    )
    assert t.judge(129.0, {"c": StationRun("running", 1, 9.0, -9, "RUNNING", 1)}) is None
    assert t.judge(130.0, {"c": StationRun("running", 1, 9.0, -9, "RUNNING", 1)}) == (
        False,
        "not healthy within 30 s (station[c]: running, 1 of 3 frames)",
    )
    assert t.judge(101.0, {}) == (False, "station[c] is not under the supervisor")
    assert LayoutTrial(8, (), 0.0, 1.0, 3, 30.0).judge(0.0, {}) == (True, "")  # removals only


def test_a_layout_on_the_wire_is_bounded() -> None:
    now = time.time()
    assert layout_file.LAYOUT_KEY == LAYOUT_KEY == "station"  # the file's key, the protocol's key

    def doc(config: dict[str, Any]) -> Any:
        return parse_config_document({"version": 1, "issued_at": now, "expires_at": now + 60, "config": config})

    assert doc({"station": [{"name": "a", "cloud": {"tls": {"cert_file": "/x"}}}]}).config["station"][0]["name"] == "a"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"station": [{"name": str(i)} for i in range(17)]}, "17 stations (at most 16)"),
        ({"station": [{"name": "a"}, "b"]}, "station[1]: a station is a table"),
        ({"station": "a"}, "a station layout is a list of tables"),
        ({"station": [{"a": {"b": {"c": {"d": 1}}}}]}, "nested deeper than 4 levels"),
        ({"station": [{"name": "x" * 2000}]}, "a string of 2000 characters"),
        ({"sinks": [{"jsonl": {}}]}, "lists hold plain values only"),  # only the layout holds tables
    ]
    for config, shown in cases:
        with pytest.raises(ProtocolError, match=re.escape(shown)):
            doc(config)


# -- the layout the supervisor starts with -------------------------------------------------------------


def _device_file(tmp: Path, key_dir: Path, cloud: dict[str, Any] | None = None) -> Path:
    data = _file(tmp)
    if cloud is not None:
        data["cloud"] = cloud
    trust = str(KeyPaths(key_dir).trust)
    sections = {k: v for k, v in data.items() if k != "station"}
    sections["model"] = {**sections["model"], "trust_file": trust}
    sections["remote_config"] = {"enabled": True}
    stations = [
        (e["name"], {"source": e["source"], "sinks.jsonl": e["sinks"]["jsonl"], "cloud": e["cloud"]})
        for e in data["station"]
    ]
    path = tmp / "device.toml"
    path.write_text(render_toml(sections) + "\n" + render_stations(stations), "utf-8")
    return path


def _record(tmp: Path, signer: SigningKey, entries: list[dict[str, Any]], *, trial: bool = False) -> int:
    now = time.time()
    version = 1_000 + len(entries)
    body = {
        "schema": "edgeline.config/1",
        "version": version,
        "issued_at": now,
        "expires_at": now + 60,
        "target": {"devices": ["cell"]},
        "config": {"station": entries},
    }
    applied = Applied(version, signer.sign(body).model_dump(mode="json"), now, ("station[c]: added",), True)
    rec = ConfigRecord(floor=version)
    if trial:
        rec.trial = applied
    else:
        rec.committed = applied
    ConfigStore(tmp / "state" / "config").save(rec)
    return version


def test_the_supervisor_starts_with_the_committed_layout(
    tmp_path: Path, key_dir: Path, signing_key: SigningKey
) -> None:
    path = _device_file(tmp_path, key_dir)
    file = _file(tmp_path)
    entries = [*file["station"][:1], _entry(tmp_path, "c")]
    for e in entries:
        e.pop("cloud", None)
    v = _record(tmp_path, signing_key, entries)
    boot = boot_layout(path)
    assert (sorted(boot.stations), boot.version) == (["a", "c"], v)
    layout = tmp_path / "state" / "stations" / "layout.json"
    assert json.loads(layout.read_text())["version"] == v
    # every station process and `agent status` read the same layout in force
    assert sorted(layout_in_force(path)[2]) == ["a", "c"]
    cfg, tables = station_in_force(path, "c")
    assert cfg.device.id == "cell~c" and tables["sinks"]["jsonl"]["path"].endswith("c.jsonl")
    with pytest.raises(Exception, match=r"no station 'b' \(station layout version \d+\); stations: a, c"):
        station_in_force(path, "b")

    # the document altered on disk: not used, the file's own stations serve
    rec = json.loads((tmp_path / "state" / "config" / "config.json").read_text())
    rec["committed"]["envelope"]["body"]["config"]["station"][1]["name"] = "evil"
    (tmp_path / "state" / "config" / "config.json").write_text(json.dumps(rec))
    boot = boot_layout(path)
    assert (sorted(boot.stations), boot.version) == (["a", "b"], 0) and not layout.exists()

    # a layout the file no longer validates with (the device's own identity now set in [cloud], which
    # the layout's stations inherit: they would connect as one): not used
    _record(tmp_path, signing_key, entries)
    assert sorted(boot_layout(path).stations) == ["a", "c"]
    _device_file(tmp_path, key_dir, cloud={"enabled": True, "username": "cell"})
    assert sorted(boot_layout(path).stations) == ["a", "b"] and not layout.exists()


def test_the_cli_sends_a_layout_to_a_device_only(tmp_path: Path, key_dir: Path) -> None:
    from click.testing import CliRunner

    from edgeline.cli.main import cli

    layout = tmp_path / "layout.toml"
    layout.write_text(render_stations([("a", {"source": {"kind": "usb", "index": 0}})]), "utf-8")
    extra = tmp_path / "extra.toml"
    extra.write_text(layout.read_text() + "\n[decision]\nthreshold = 0.4\n", "utf-8")
    for target, file, shown in [
        ("group:line-a", layout, "a station layout goes to a device (device:ID), not to group:line-a"),
        ("station:cell/a", layout, "a station layout goes to a device (device:ID), not to device:cell~a"),
        ("device:cell", extra, "decision: a document to a device with stations carries its station layout"),
    ]:
        args = ["config", "push", "--to", target, str(file), "--keys", str(key_dir), "--home", str(tmp_path)]
        r = CliRunner().invoke(cli, [*args, "--broker", "127.0.0.1:1"])
        assert r.exit_code != 0 and "a device would refuse it" in r.output and shown in r.output, r.output


def test_stations_sharing_the_devices_own_identity_are_named(tmp_path: Path) -> None:
    from edge_agent.stations.layout_remote import shared_identity

    file = {**_file(tmp_path, cloud=True), "cloud": {"enabled": True, "username": "cell-b"}}
    stations = resolve_layout(file, [*file["station"], _entry(tmp_path, "c", username="cell-c")], "v1")
    device = parse_config({k: v for k, v in file.items() if k != "station"} | {"source": {"kind": "usb", "index": 0}})
    assert shared_identity(device, stations) == ["b"]
    assert (
        shared_identity(parse_config({"device": {"id": "cell"}, "source": {"kind": "usb", "index": 0}}), stations) == []
    )
