"""Several inspection stations on one device (docs/stations.md), with real agent processes under the
station supervisor and the test's own Mosquitto: each station is its own unit (``<device>~<station>``)
with its own slots, updater and trial, so one is updated while the others are not, and a station whose
trial fails, or whose process dies in its trial, rolls back alone while the others keep serving their
model in the same process as before; each sends its own telemetry stream (its own topic, its own
pseudonym)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from converters.keys import KeyPaths
from edgeline.core.protocol.delivery import parse_state
from edgeline.core.protocol.telemetry import parse_window
from tests.delivery.agent_proc import write_frames
from tests.delivery.conftest import BuiltBundle, Cloud, wait_for
from tests.delivery.station_proc import StationDevice, keeps_inspecting

UPDATER: dict[str, Any] = {
    "trial_frames": 3,
    "trial_timeout_s": 30.0,
    "trial_latency_budget_ms": 2000.0,
    "min_free_bytes": 0,
}


def _device(cloud: Cloud, tmp_path: Path, frames: list[Any], stations: dict[str, Any]) -> StationDevice:
    trust = KeyPaths(cloud.key_dir).trust
    work = tmp_path / "twin"
    return StationDevice(
        "twin",
        work,
        sections={
            "source": {"kind": "folder", "path": str(write_frames(tmp_path / "frames", frames)), "loop": True},
            "model": {"bundle": str(work / "state" / "slots" / "current"), "trust_file": str(trust)},
            "cloud": {"port": cloud.broker.port, "heartbeat_s": 1.0},
            "updater": {"trust_file": str(trust), **UPDATER},
            "telemetry": {"enabled": True, "window_s": 1.0, "min_frames": 3, "tick_s": 0.2},
        },
        stations=stations,
    )


def _install(cloud: Cloud, dev: StationDevice, name: str, bundle: BuiltBundle, frames: list[Any]) -> None:
    """Commit ``bundle`` in the station's own state dir (in-process, fast), as a previous update would."""
    sim = cloud.device(dev.unit(name), frames=frames, state_dir=dev.station_dir(name), **UPDATER)
    cloud.deploy(bundle, dev.unit(name))
    assert wait_for(lambda: sim.version() == bundle.manifest.version and sim.plugin.state == "COMMITTED"), sim.kinds()
    sim.stop()
    cloud.devices.remove(sim)


def test_stations_update_independently_and_a_failed_trial_leaves_the_others_serving(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any], tmp_path: Path
) -> None:
    # station b's trials cannot pass (a latency budget no model meets); station c's process dies in the
    # middle of its trial (SIGKILL, as a model crashing the runtime would): their own [station.updater]
    stations = {
        "a": {"source": {"max_fps": 30.0}},
        "b": {"updater": {"trial_latency_budget_ms": 1e-4}},
        "c": {"updater.faults": {"crash_at": "TRIAL"}},
    }
    dev = _device(cloud, tmp_path, frames, stations)
    for name in stations:
        _install(cloud, dev, name, bundles[1], frames)
    units = {dev.unit(n) for n in stations}
    states: dict[str, Any] = {}
    cloud.link.subscribe(
        cloud.topics.all_device_states(),
        lambda t, p, _r: states.__setitem__(cloud.topics.device_id_from(t), parse_state(p)) if p else None,
    )
    windows: dict[str, set[str]] = {}  # unit -> the pseudonyms its windows carry
    cloud.link.subscribe(
        cloud.topics.all_device_telemetry(),
        lambda t, p, _r: windows.setdefault(cloud.topics.device_id_from(t), set()).add(parse_window(p).device),
    )
    dev.start()
    try:
        for name in stations:
            assert wait_for(lambda n=name: dev.model_version(n) == 1 and dev.inspected(n) > 0, 60), dev.log_tail()
        pids = {n: dev.station(n)["pid"] for n in stations}
        assert None not in pids.values() and len(set(pids.values())) == 3
        assert wait_for(lambda: units <= set(states)), states  # each its own unit on the wire
        assert "twin" not in states
        # each station its own telemetry stream: its own topic and its own pseudonym
        assert wait_for(lambda: units <= set(windows), 30), windows
        assert set(windows) == units and len(set().union(*windows.values())) == 3, windows

        # v2 for station a only: a commits it, b and c are not touched
        cloud.deploy(bundles[2], dev.unit("a"))
        assert wait_for(lambda: dev.record("a").get("state") == "COMMITTED" and dev.model_version("a") == 2, 60), (
            dev.record("a"),
            dev.log_tail(),
        )
        for n in ("b", "c"):
            assert dev.model_version(n) == 1 and dev.record(n).get("state") == "COMMITTED"
        assert wait_for(lambda: (s := states.get("twin~a")) is not None and s.model and s.model.version == 2)

        # v2 for b and c: b's trial fails, c's process dies in its trial; each rolls back to v1 and
        # serves on (c in the process the supervisor started again); a serves v2 throughout
        failing_since = time.time()
        cloud.deploy(bundles[2], dev.unit("b"))
        cloud.deploy(bundles[2], dev.unit("c"))
        assert wait_for(lambda: dev.record("b").get("state") == "ROLLED_BACK", 60), (dev.record("b"), dev.log_tail())
        assert (dev.record("b").get("last") or {}).get("reason") == "trial_latency"
        assert wait_for(lambda: (dev.fresh_status("b", failing_since + 0.5).get("model") or {}).get("version") == 1, 20)
        assert wait_for(lambda: dev.station("c").get("restarts") == 1 and dev.station("c").get("state") == "running")
        assert dev.station("c")["last_exit"] == -9 and dev.station("c")["pid"] != pids["c"]
        assert wait_for(lambda: (dev.record("c").get("last") or {}).get("reason") == "crashed", 60), dev.record("c")
        assert dev.record("c")["state"] == "ROLLED_BACK"
        assert wait_for(lambda: (dev.fresh_status("c", failing_since + 1).get("model") or {}).get("version") == 1, 30)
        assert keeps_inspecting(dev, "c") and keeps_inspecting(dev, "b") and keeps_inspecting(dev, "a")
        assert dev.station("c")["restarts"] == 1  # the deployment that killed it is not tried again
        assert dev.model_version("a") == 2 and dev.record("a").get("state") == "COMMITTED"
        assert {n: dev.station(n)["pid"] for n in ("a", "b")} == {n: pids[n] for n in ("a", "b")}
        assert all(dev.station(n)["restarts"] == 0 for n in ("a", "b"))
        a_events = [e for e in cloud.seen_events if e.device_id == "twin~a" and e.ts >= failing_since]
        assert not [e for e in a_events if e.kind in ("rolled_back", "rejected")], a_events
    finally:
        rc = dev.stop()
    assert rc == 0, dev.log_tail()
    assert all(dev.station(n)["state"] == "stopped" for n in stations), dev.supervisor()
