"""A signed station layout for a device with stations (docs/stations.md), on real agent processes under
the station supervisor and a real Mosquitto. The document goes to ``device:cell``; the supervisor
receives it on its own small link, verifies and validates it, and applies it: a station added starts
while the others keep their process (same pid) and every frame; a station removed is stopped; a
layout leaving no working station, and an older layout replayed, are refused with their reason; a
layout whose new station cannot run rolls back to the previous layout."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cloud_registry.remote_config import ConfigPusher, ConfigTarget
from cloud_registry.store import open_store
from cloud_registry.store.base import RegistryStore
from converters.keys import KeyPaths, SigningKey
from edgeline.cli.main import cli
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.canonical import canonical_json
from edgeline.core.protocol.remote_config import ConfigState, parse_config_state
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker
from firmware_configs.writer import render_stations
from tests.delivery.station_proc import StationDevice, keeps_inspecting
from tests.remote_config.conftest import wait_for, write_frames

DEV = "cell"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Layouts:
    dev: StationDevice
    pusher: ConfigPusher
    link: MqttLink
    store: RegistryStore
    topics: Topics
    workdir: Path
    states: dict[str, ConfigState]
    key_dir: Path
    port: int

    def cli(self, *args: str) -> Any:
        """``edgeline ARGS`` against this registry and broker, its JSON output."""
        store = ["--store", f"sqlite:///{self.workdir / 'registry.db'}"]
        broker = ["--broker", f"127.0.0.1:{self.port}"] if args[1] in ("push", "status") else []
        keys = ["--keys", str(self.key_dir)] if args[1] == "push" else []
        r = CliRunner().invoke(cli, [*args, *store, *broker, *keys, "--json"], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return json.loads(r.output)

    def entry(self, name: str, frames: Path | None = None, **tables: dict[str, Any]) -> dict[str, Any]:
        """A station's table as the file writes it: its own folder and JSONL sink."""
        src = {"kind": "folder", "path": str(frames or self.workdir / "frames"), "loop": True, "max_fps": 30.0}
        sinks = {"jsonl": {"path": str(self.workdir / "logs" / f"{name}.jsonl")}}
        return {"name": name, "source": src, "sinks": sinks, **tables}

    def push(self, *entries: dict[str, Any]) -> int:
        return self.pusher.push(ConfigTarget.parse(f"device:{DEV}"), {"station": list(entries)}, actor="test").version

    def state(self) -> ConfigState | None:
        return self.states.get(DEV)

    def committed(self, version: int, timeout: float = 60.0) -> ConfigState | None:
        got: ConfigState | None = wait_for(
            lambda: (s := self.state()) is not None and s.version == version and s.trial is None and s, timeout
        )
        return got

    def refused(self, version: int, timeout: float = 20.0) -> ConfigState | None:
        got: ConfigState | None = wait_for(
            lambda: (
                (s := self.state()) is not None
                and s.last_refusal is not None
                and s.last_refusal.version == version
                and s
            ),
            timeout,
        )
        return got

    def rolled_back(self, version: int, timeout: float = 60.0) -> ConfigState | None:
        got: ConfigState | None = wait_for(
            lambda: (
                (s := self.state()) is not None and (r := s.last_rollback) is not None and r.version == version and s
            ),
            timeout,
        )
        return got

    def verdict_ids(self, name: str) -> list[int]:
        path = self.workdir / "logs" / f"{name}.jsonl"
        ids = []
        for line in path.read_text("utf-8").splitlines():
            rec = json.loads(line)
            if rec.get("type") == "verdict":
                ids.append(int(rec["frame_id"]))
        return ids


@pytest.fixture
def layouts(
    mosquitto: MosquittoBroker, key_dir: Path, signing_key: SigningKey, tiny_bundle: Path, tmp_path: Path
) -> Iterator[Layouts]:
    trust = KeyPaths(key_dir).trust
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    write_frames(tmp_path / "frames")
    (tmp_path / "logs").mkdir()
    dev = StationDevice(
        DEV,
        tmp_path / DEV,
        sections={
            "model": {"bundle": str(bundle), "trust_file": str(trust)},
            "cloud": {"port": mosquitto.port, "heartbeat_s": 1.0},
            "updater": {"trust_file": str(trust), "min_free_bytes": 0},
            "remote_config": {
                "enabled": True,
                "trial_s": 1.0,
                "trial_frames": 3,
                "trial_timeout_s": 40.0,
                "allowed_dirs": [str(tmp_path)],
            },
        },
        stations={},
    )
    topics = Topics()
    link = MqttLink(LinkSettings(port=mosquitto.port, client_id="test-layouts", clean_start=True))
    link.connect(10)
    states: dict[str, ConfigState] = {}
    link.subscribe(
        topics.all_device_config_states(),
        lambda t, p, _r: states.__setitem__(topics.device_id_from(t), parse_config_state(p)) if p else None,
    )
    store = open_store(f"sqlite:///{tmp_path / 'registry.db'}")
    pusher = ConfigPusher(link, topics, signing_key, store)
    lay = Layouts(dev, pusher, link, store, topics, tmp_path, states, key_dir, mosquitto.port)
    for name in ("a", "b"):
        e = lay.entry(name)
        dev.stations[name] = {"source": e["source"], "sinks.jsonl": e["sinks"]["jsonl"]}
    dev.start()
    try:
        assert wait_for(lambda: dev.inspected("a") > 0 and dev.inspected("b") > 0, 60), dev.log_tail()
        assert wait_for(lambda: (s := lay.state()) is not None and s.version == 0, 20), (states, dev.log_tail())
        yield lay
    finally:
        rc = dev.stop()
        link.stop()
        store.close()
        assert rc == 0, dev.log_tail()


def test_a_layout_adds_and_removes_stations_and_leaves_the_others_alone(layouts: Layouts) -> None:
    lay, dev = layouts, layouts.dev
    pids = {n: dev.station(n)["pid"] for n in ("a", "b")}

    # add c: a and b keep their processes and every frame
    v1 = lay.push(lay.entry("a"), lay.entry("b"), lay.entry("c"))
    st = lay.committed(v1)
    assert st is not None, (lay.state(), dev.log_tail())
    assert st.changed == ("station[c]: added",)
    assert wait_for(lambda: dev.inspected("c") > 0, 30), dev.log_tail()
    assert {n: dev.station(n)["pid"] for n in ("a", "b")} == pids
    assert all(dev.station(n)["restarts"] == 0 for n in ("a", "b", "c"))
    assert dev.status("c")["device"]["id"] == "cell~c"
    assert keeps_inspecting(dev, "a") and keeps_inspecting(dev, "b")
    ids = lay.verdict_ids("a")
    assert ids == list(range(ids[0], ids[0] + len(ids))), "station a lost a frame"
    assert sum(dev.status("a")["dropped"].values()) == 0
    layout = json.loads((dev.state_dir / "stations" / "layout.json").read_text())
    assert layout["version"] == v1 and [e["name"] for e in layout["station"]] == ["a", "b", "c"]

    # remove b, with the CLI: its process is stopped (SIGTERM: it ends cleanly), a and c go on in theirs
    pid_c = dev.station("c")["pid"]
    layout_file = lay.workdir / "layout.toml"
    layout_file.write_text(render_stations([(n, _tables(lay.entry(n))) for n in ("a", "c")]), "utf-8")
    shown = lay.cli("config", "diff", "--to", f"device:{DEV}", str(layout_file))
    assert shown["against"] == v1
    assert [(c["key"], c["applied"]) for c in shown["changes"]] == [("station[b]", "stop station b")]
    v2 = lay.cli("config", "push", "--to", f"device:{DEV}", str(layout_file))["version"]
    st = lay.committed(v2)
    assert st is not None, (lay.state(), dev.log_tail())
    assert st.changed == ("station[c]: added", "station[b]: removed")
    assert wait_for(lambda: not _alive(pids["b"]), 15)
    assert "b" not in (dev.supervisor().get("stations") or {})
    assert dev.station("a")["pid"] == pids["a"] and dev.station("c")["pid"] == pid_c
    assert dev.status("b")["state"] == "STOPPED"  # b wrote its final status: a graceful stop
    assert keeps_inspecting(dev, "a") and keeps_inspecting(dev, "c")
    ids = lay.verdict_ids("a")
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    # the device's answer and the registry's record, for the device-level document
    (row,) = lay.cli("config", "status", DEV)
    assert (row["device"], row["version"], row["pushed_to_device"], row["trial"]) == (DEV, v2, v2, None)
    assert [p["version"] for p in lay.cli("config", "history", f"device:{DEV}")] == [v2, v1]


def _tables(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A station's table as render_stations takes it (its own keys under "", dotted sub-tables)."""
    out: dict[str, dict[str, Any]] = {"": {k: v for k, v in entry.items() if k not in ("name", "source", "sinks")}}
    out["source"] = entry["source"]
    out["sinks.jsonl"] = entry["sinks"]["jsonl"]
    return out


def test_layouts_refused_replayed_and_rolled_back(layouts: Layouts) -> None:
    lay, dev = layouts, layouts.dev
    pids = {n: dev.station(n)["pid"] for n in ("a", "b")}

    # a corrupted payload on the device's config topic: refused, reported, nothing changes
    lay.link.publish_sync(lay.topics.device_config(DEV), b'{"body": {"version": 1', 1, False)
    st = wait_for(lambda: (s := lay.state()) is not None and s.last_refusal is not None and s)
    assert st is not None and st.last_refusal is not None and st.last_refusal.reason == "bad_document"

    # no working station: the only station's folder does not exist
    v_bad = lay.push(lay.entry("z", frames=lay.workdir / "no-such-folder"))
    st = lay.refused(v_bad)
    assert st is not None, (lay.state(), dev.log_tail())
    assert st.last_refusal is not None and st.last_refusal.reason == "no_station"
    assert "the layout leaves no working station" in st.last_refusal.detail
    assert "station[z]" in st.last_refusal.detail and "no such image folder" in st.last_refusal.detail
    assert st.version == 0

    # a clash between stations is refused by the file's own checks, naming both
    v_clash = lay.push(lay.entry("a"), lay.entry("b", sinks={"jsonl": {"path": str(lay.workdir / "logs" / "a.jsonl")}}))
    st = lay.refused(v_clash)
    assert st is not None and st.last_refusal is not None and st.last_refusal.reason == "invalid"
    assert "would write the same file" in st.last_refusal.detail

    # a good layout, then the older one replayed live: refused as a replay
    v1 = lay.push(lay.entry("a"), lay.entry("b"), lay.entry("c"))
    assert lay.committed(v1) is not None, (lay.state(), dev.log_tail())
    stale = lay.store.config_pushes(f"device:{DEV}", limit=10)[-1]  # the first push (v_bad)
    assert stale.version == v_bad
    lay.link.publish_sync(lay.topics.device_config(DEV), canonical_json(stale.envelope), 1, False)
    st = wait_for(
        lambda: (s := lay.state()) is not None and (r := s.last_refusal) is not None and r.reason == "replay" and s
    )
    assert st is not None and st.last_refusal is not None, (lay.state(), dev.log_tail())
    assert st.version == v1 and f"config version {v_bad} is not above version {v1}" in st.last_refusal.detail

    # a new station that cannot run (its video file is not a video): its status says FAILED, and the
    # whole layout goes back to v1; a, b and c never stop
    junk = lay.workdir / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    pid_c = dev.station("c")["pid"]
    d = lay.entry("d")
    d["source"] = {"kind": "file", "path": str(junk)}
    v2 = lay.push(lay.entry("a"), lay.entry("b"), lay.entry("c"), d)
    st = lay.rolled_back(v2)
    assert st is not None and st.last_rollback is not None, (lay.state(), dev.log_tail())
    assert st.last_rollback.reason == "trial_failed" and "station[d] cannot run with it" in st.last_rollback.detail
    assert st.version == v1 and st.trial is None
    assert wait_for(lambda: "d" not in (dev.supervisor().get("stations") or {}), 15)

    # a new station whose process dies twice in its trial (killed as soon as it is started, twice):
    # the whole layout goes back to v1, and a changed station (c: another sink) is back in its v1 form
    e = lay.entry("e")
    c2 = lay.entry("c", sinks={"jsonl": {"path": str(lay.workdir / "logs" / "c2.jsonl")}})
    v3 = lay.push(lay.entry("a"), lay.entry("b"), c2, e)
    for n in (1, 2):

        def started(n: int = n) -> Any:
            st = dev.station("e")
            return st.get("state") == "running" and st.get("restarts") == n - 1 and st.get("pid")

        pid = wait_for(started, 30)
        assert pid, dev.supervisor()
        os.kill(int(pid), signal.SIGKILL)
    st = lay.rolled_back(v3)
    assert st is not None and st.last_rollback is not None, (lay.state(), dev.log_tail())
    assert st.last_rollback.reason == "trial_failed"
    assert st.last_rollback.detail == f"station[e] died 2 times during its trial, last exit {-signal.SIGKILL}"
    assert st.version == v1 and st.trial is None
    assert wait_for(lambda: "e" not in (dev.supervisor().get("stations") or {}), 15)
    assert wait_for(lambda: dev.station("c").get("state") == "running" and dev.station("c")["pid"] != pid_c, 15)
    assert {n: dev.station(n)["pid"] for n in ("a", "b")} == pids
    layout = json.loads((dev.state_dir / "stations" / "layout.json").read_text())
    assert layout["version"] == v1 and [e["name"] for e in layout["station"]] == ["a", "b", "c"]
    assert layout["station"][2] == lay.entry("c")
    assert wait_for(lambda: keeps_inspecting(dev, "c"), 30) and keeps_inspecting(dev, "a")


def test_a_supervisor_killed_during_a_layout_trial_starts_with_the_previous_layout(layouts: Layouts) -> None:
    lay, dev = layouts, layouts.dev
    assert dev.proc is not None
    # a slow trial (many frames) so the kill lands inside it
    v = lay.push(lay.entry("a"), lay.entry("b"), lay.entry("c", source={**lay.entry("c")["source"], "max_fps": 1.0}))
    assert wait_for(lambda: (s := lay.state()) is not None and s.trial == v, 30), (lay.state(), dev.log_tail())
    assert wait_for(lambda: dev.station("c").get("state") == "running", 30)
    pids = {n: dev.station(n)["pid"] for n in ("a", "b", "c")}
    os.kill(dev.proc.pid, signal.SIGKILL)  # the supervisor dies; its stations get SIGTERM (parent death)
    dev.proc.wait(10)
    assert wait_for(lambda: not any(_alive(p) for p in pids.values()), 20)

    dev.start()  # the same file, the same state dir
    st = wait_for(
        lambda: (s := lay.state()) is not None and (r := s.last_rollback) is not None and r.version == v and s
    )
    assert st is not None and st.last_rollback is not None, (lay.state(), dev.log_tail())
    assert st.last_rollback.reason == "crashed" and st.version == 0 and st.trial is None
    assert "the supervisor stopped while station layout version" in st.last_rollback.detail
    assert wait_for(lambda: dev.inspected("a") > 0 and dev.inspected("b") > 0, 60), dev.log_tail()
    assert sorted(dev.supervisor()["stations"]) == ["a", "b"]
    assert not (dev.state_dir / "stations" / "layout.json").exists()
    # the retained document (the one rolled back) is not tried again
    time.sleep(2.0)
    assert "c" not in dev.supervisor()["stations"]
    last = lay.state()
    assert last is not None and last.version == 0 and last.trial is None
