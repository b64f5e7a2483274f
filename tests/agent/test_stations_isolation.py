"""One device, two stations, real agent processes under the station supervisor (no broker: the model
is the initial bundle): station a's network camera dies and comes back while station b's verdicts
never stop; station b's process is SIGKILLed and the supervisor starts it again while a's process
and verdicts go on untouched; SIGTERM stops both."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from click.testing import CliRunner

from converters.keys import KeyPaths
from edgeline.cli.main import cli
from tests.agent.helpers import MjpegCamera, wait_for
from tests.delivery.agent_proc import write_frames
from tests.delivery.station_proc import StationDevice, keeps_inspecting
from tests.factories import tiny_frames


def test_a_dead_camera_or_process_of_one_station_never_stops_the_other(
    tiny_bundle: Path, key_dir: Path, tmp_path: Path
) -> None:
    frames = tiny_frames(8, seed=3)[0]
    camera = MjpegCamera(frames, fps=30.0)
    camera.start()
    dev = StationDevice(
        "press",
        tmp_path / "press",
        sections={
            "model": {"bundle": str(tiny_bundle), "trust_file": str(KeyPaths(key_dir).trust)},
            "cloud": {"enabled": False},
            "updater": {"enabled": False},
        },
        stations={
            "a": {"source": {"kind": "url", "url": camera.url, "reconnect_min_s": 0.2, "reconnect_max_s": 0.5}},
            "b": {"source": {"kind": "folder", "path": str(write_frames(tmp_path / "frames", frames)), "loop": True}},
        },
    )
    dev.start()
    try:
        assert wait_for(lambda: dev.inspected("a") > 0 and dev.inspected("b") > 0, 60), dev.log_tail()
        pid_a, pid_b = dev.station("a")["pid"], dev.station("b")["pid"]
        shown = CliRunner().invoke(cli, ["agent", "status", "--config", str(dev.config_path), "--json"])
        doc = json.loads(shown.output)["stations"]
        assert {n: (d["unit"], d["process"]["pid"]) for n, d in doc.items()} == {
            "a": ("press~a", pid_a),
            "b": ("press~b", pid_b),
        }
        assert doc["b"]["status"]["device"]["id"] == "press~b"

        # a's camera dies: a reconnects, b's verdicts go on; no process is restarted
        camera.stop()
        assert wait_for(lambda: dev.status("a")["camera"]["state"] in ("RECONNECTING", "CONNECTING"), 20)
        assert keeps_inspecting(dev, "b", 1.5)
        assert dev.station("a")["pid"] == pid_a and dev.station("a")["restarts"] == 0
        camera.start()
        assert wait_for(lambda: dev.status("a")["camera"]["state"] == "STREAMING", 20), dev.status("a")
        assert keeps_inspecting(dev, "a")

        # b's process dies: the supervisor starts it again; a is untouched
        os.kill(pid_b, signal.SIGKILL)
        assert wait_for(
            lambda: dev.station("b").get("restarts") == 1 and dev.station("b").get("state") == "running", 20
        )
        assert dev.station("b")["last_exit"] == -signal.SIGKILL and dev.station("b")["pid"] != pid_b
        assert keeps_inspecting(dev, "a", 1.5)
        assert dev.station("a")["pid"] == pid_a and dev.station("a")["restarts"] == 0
        assert wait_for(lambda: dev.status("b").get("state") == "RUNNING" and keeps_inspecting(dev, "b"), 60)
    finally:
        rc = dev.stop()
        camera.stop()
    assert rc == 0, dev.log_tail()
    assert {n: dev.station(n)["state"] for n in ("a", "b")} == {"a": "stopped", "b": "stopped"}
