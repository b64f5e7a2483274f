"""A signed remote config for one station of a device (docs/stations.md), on real agent processes
under the station supervisor and a real Mosquitto: the document targets ``station:cell/a`` and is
laid over station a's own tables; a change that needs a restart restarts station a alone (the
process execs itself, so the supervisor sees no death), is tried and committed; station b runs its
own file throughout, in the same process."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from cloud_registry.remote_config import ConfigPusher, ConfigTarget
from cloud_registry.store import open_store
from converters.keys import KeyPaths, SigningKey
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.remote_config import ConfigState, parse_config_state
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker
from tests.delivery.station_proc import StationDevice, keeps_inspecting
from tests.remote_config.conftest import wait_for, write_frames


def test_a_config_for_one_station_restarts_only_that_station(
    mosquitto: MosquittoBroker, key_dir: Path, signing_key: SigningKey, tiny_bundle: Path, tmp_path: Path
) -> None:
    trust = KeyPaths(key_dir).trust
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    dev = StationDevice(
        "cell",
        tmp_path / "cell",
        sections={
            "source": {"kind": "folder", "path": str(write_frames(tmp_path / "frames")), "loop": True, "max_fps": 30.0},
            "model": {"bundle": str(bundle), "trust_file": str(trust)},
            "cloud": {"port": mosquitto.port, "heartbeat_s": 1.0},
            "updater": {"trust_file": str(trust), "min_free_bytes": 0},
            "remote_config": {"enabled": True, "trial_s": 1.0, "trial_frames": 3, "trial_timeout_s": 20.0},
        },
        stations={"a": {}, "b": {}},
    )
    topics = Topics()
    link = MqttLink(LinkSettings(port=mosquitto.port, client_id="test-station-config", clean_start=True))
    link.connect(10)
    states: dict[str, ConfigState] = {}
    link.subscribe(
        topics.all_device_config_states(),
        lambda t, p, _r: states.__setitem__(topics.device_id_from(t), parse_config_state(p)) if p else None,
    )
    store = open_store(f"sqlite:///{tmp_path / 'registry.db'}")
    dev.start()
    try:
        assert wait_for(lambda: dev.inspected("a") > 0 and dev.inspected("b") > 0, 60), dev.log_tail()
        assert wait_for(lambda: {"cell~a", "cell~b"} <= set(states), 20), states
        pids = {n: dev.station(n)["pid"] for n in ("a", "b")}
        since = time.time()
        pushed = ConfigPusher(link, topics, signing_key, store).push(
            ConfigTarget.parse("station:cell/a"), {"inference": {"stats_every": 5}}, actor="test"
        )

        def committed(unit: str) -> Any:
            st = states.get(unit)
            return st is not None and st.version == pushed.version and st.trial is None

        assert wait_for(lambda: committed("cell~a"), 60), (states.get("cell~a"), dev.log_tail())
        assert states["cell~a"].changed == ("inference.stats_every",)
        log = dev.log_path.read_text("utf-8", "replace")
        assert "[cell~a] edgeline.cli.agent: restarting: config version" in log
        assert "[cell~b] edgeline.cli.agent: restarting" not in log
        assert {n: dev.station(n)["pid"] for n in ("a", "b")} == pids  # a exec'd itself: same pid, no death
        assert all(dev.station(n)["restarts"] == 0 for n in ("a", "b"))
        assert states["cell~b"].version == 0 and states["cell~b"].trial is None
        assert wait_for(lambda: dev.fresh_status("a", since + 0.5).get("state") == "RUNNING", 30)
        assert keeps_inspecting(dev, "a") and keeps_inspecting(dev, "b")
    finally:
        rc = dev.stop()
        link.stop()
        store.close()
    assert rc == 0, dev.log_tail()
