"""Real station processes under the supervisor with a short hang timeout (3 s, less than a station
takes to start).

A station whose inspection loop is stuck in a plugin (its status file still rewritten, its count
frozen) is killed and restarted while its sibling keeps its process.

Station a inspects frames; station b is a trigger station whose camera never answers and to which
no trigger comes (no frame at all, which is normal). Neither is declared hung while starting or
idling. Station a's process is then frozen (SIGSTOP): the supervisor declares it hung, sends SIGTERM
(it cannot act on it while stopped), SIGKILL after kill_after_s, and starts it again; it inspects
again in a new process while b keeps its first process throughout."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from pathlib import Path

from click.testing import CliRunner

from converters.keys import KeyPaths
from edgeline.cli.main import cli
from edgeline.demo.devices import agent_command
from edgeline.demo.processes import spawn
from tests.agent.helpers import wait_for
from tests.agent.stuck_loop_plugin import MARKER
from tests.delivery.agent_proc import ROOT, write_frames
from tests.delivery.station_proc import StationDevice, keeps_inspecting
from tests.factories import tiny_frames


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_station_whose_loop_is_stuck_is_killed_and_restarted(
    tiny_bundle: Path, key_dir: Path, tmp_path: Path
) -> None:
    """The inspection loop stuck in a plugin (a deadlock): the process lives and its status file is
    rewritten, with a count that no longer moves."""
    frames = tiny_frames(8, seed=6)[0]
    folder = str(write_frames(tmp_path / "frames", frames))
    dev = StationDevice(
        "line",
        tmp_path / "line",
        sections={
            "model": {"bundle": str(tiny_bundle), "trust_file": str(KeyPaths(key_dir).trust)},
            "cloud": {"enabled": False},
            "updater": {"enabled": False},
            "supervisor": {"hang_timeout_s": 3.0, "start_timeout_s": 90.0, "kill_after_s": 2.0},
        },
        stations={n: {"source": {"kind": "folder", "path": folder, "loop": True, "max_fps": 20.0}} for n in ("a", "b")},
    )
    dev.write_config()
    argv = [*agent_command(dev.config_path), "--plugin", "tests.agent.stuck_loop_plugin"]
    dev.proc = spawn(argv, dev.log_path, {"PYTHONPATH": str(ROOT), "EDGELINE_LOG_LEVEL": "INFO"})
    try:
        assert wait_for(lambda: dev.inspected("a") > 0 and dev.inspected("b") > 0, 90), dev.log_tail()
        pid_a, pid_b = dev.station("a")["pid"], dev.station("b")["pid"]
        dev.station_dir("a").mkdir(parents=True, exist_ok=True)
        (dev.station_dir("a") / MARKER).touch()
        assert wait_for(lambda: (dev.station_dir("a") / f"{MARKER}.taken").exists(), 10)
        time.sleep(0.6)  # a status write or two after the loop stuck
        stuck = dev.status("a")["heartbeat"]["beats"]
        time.sleep(1.0)
        doc = dev.status("a")  # the writer goes on, the count does not
        assert doc["pid"] == pid_a and doc["heartbeat"]["beats"] == stuck and doc["updated_at"] > time.time() - 1
        assert wait_for(lambda: dev.station("a").get("hangs") == 1, 15), dev.station("a")
        assert "made no round" in dev.station("a")["last_hang"]["reason"]
        assert wait_for(
            lambda: dev.station("a").get("restarts") == 1 and dev.station("a").get("state") == "running", 30
        )
        assert dev.station("a")["pid"] != pid_a
        assert wait_for(lambda: dev.status("a").get("pid") == dev.station("a")["pid"], 90), dev.log_tail()
        assert keeps_inspecting(dev, "a") and keeps_inspecting(dev, "b")
        b = dev.station("b")
        assert (b["pid"], b["hangs"], b["restarts"]) == (pid_b, 0, 0)
    finally:
        rc = dev.stop()
    assert rc == 0, dev.log_tail()


def test_a_frozen_station_is_killed_and_restarted_an_idle_trigger_station_is_not(
    tiny_bundle: Path, key_dir: Path, tmp_path: Path
) -> None:
    frames = tiny_frames(8, seed=5)[0]
    dev = StationDevice(
        "cell",
        tmp_path / "cell",
        sections={
            "model": {"bundle": str(tiny_bundle), "trust_file": str(KeyPaths(key_dir).trust)},
            "cloud": {"enabled": False},
            "updater": {"enabled": False},
            "supervisor": {"hang_timeout_s": 3.0, "start_timeout_s": 90.0, "kill_after_s": 2.0},
        },
        stations={
            "a": {"source": {"kind": "folder", "path": str(write_frames(tmp_path / "frames", frames)), "loop": True}},
            "b": {
                "source": {
                    "kind": "url",
                    "url": f"http://127.0.0.1:{_closed_port()}/stream.mjpg",
                    "mode": "trigger",
                    "reconnect_min_s": 0.2,
                    "reconnect_max_s": 0.5,
                }
            },
        },
    )
    dev.start()
    frozen = 0
    try:
        assert wait_for(lambda: dev.inspected("a") > 0 and dev.status("b").get("state") == "RUNNING", 90), (
            dev.log_tail()
        )
        pid_a, pid_b = dev.station("a")["pid"], dev.station("b")["pid"]
        for name in ("a", "b"):  # each started slower than the hang timeout: neither was declared hung
            assert (dev.station(name)["hangs"], dev.station(name)["restarts"]) == (0, 0), dev.station(name)
        beats_b = dev.status("b")["heartbeat"]["beats"]
        time.sleep(4.0)  # b idles past the hang timeout: no frame, no trigger, rounds counted
        idle = dev.status("b")
        assert idle["frames"]["in"] == 0 and idle["heartbeat"]["beats"] > beats_b
        assert dev.station("b")["hangs"] == 0 and dev.station("b")["pid"] == pid_b

        frozen = pid_a
        os.kill(pid_a, signal.SIGSTOP)
        assert wait_for(lambda: dev.station("a").get("hangs") == 1, 15), dev.station("a")
        hang = dev.station("a")["last_hang"]
        assert hang["pid"] == pid_a and "made no round" in hang["reason"]
        assert wait_for(
            lambda: dev.station("a").get("restarts") == 1 and dev.station("a").get("state") == "running", 20
        )
        assert dev.station("a")["last_exit"] == -signal.SIGKILL and dev.station("a")["pid"] != pid_a
        frozen = 0
        assert f"station a (cell~a, pid {pid_a}) is hung" in dev.log_path.read_text("utf-8")
        assert wait_for(lambda: dev.status("a").get("pid") == dev.station("a")["pid"], 90), dev.log_tail()
        assert keeps_inspecting(dev, "a")
        b = dev.station("b")
        assert (b["pid"], b["hangs"], b["restarts"], b["state"]) == (pid_b, 0, 0, "running")

        shown = CliRunner().invoke(cli, ["agent", "status", "--config", str(dev.config_path)])
        assert "station a (cell~a): process running" in shown.output and "hangs 1" in shown.output
        doc = json.loads(
            CliRunner().invoke(cli, ["agent", "status", "--config", str(dev.config_path), "--json"]).output
        )
        assert doc["stations"]["a"]["process"]["hangs"] == 1 and doc["stations"]["b"]["process"]["hangs"] == 0
    finally:
        if frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen, signal.SIGCONT)
        rc = dev.stop()
    assert rc == 0, dev.log_tail()
