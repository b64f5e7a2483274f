"""The hang watch's bookkeeping (edge_agent.stations.liveness) with the clock handed in, its status
file probe on real files, the camera reader's time inside one call (a real reader thread), and the
``[supervisor]`` keys as a device file gives them."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.captures import MemoryCapture
from edge_agent.frame_queue import FrameQueue
from edge_agent.sources import Frame, SourceReader
from edge_agent.stations.liveness import Heartbeat, LivenessPolicy, LivenessWatch, StatusProbe
from firmware_configs.errors import ConfigError
from firmware_configs.stations import load_stations
from tests.agent.helpers import wait_for

POLICY = LivenessPolicy(hang_timeout_s=5.0, start_timeout_s=20.0)


def _doc(
    pid: int, beats: int, state: str = "RUNNING", boot: float = 1.0, blocked: float | None = None
) -> dict[str, Any]:
    return {"pid": pid, "state": state, "heartbeat": {"boot": boot, "beats": beats, "reader_blocked_s": blocked}}


def test_a_slow_start_is_not_a_hang_but_no_sign_of_life_at_all_is() -> None:
    w = LivenessWatch(POLICY)
    w.started(100, now=0.0)
    w.observe(None, 6.0)  # no status file yet: loading its model
    assert w.hung(19.9) == ""
    assert "no sign of its inspection loop 20.0 s after its start" in w.hung(20.0)


def test_a_running_loop_that_stops_counting_is_hung() -> None:
    w = LivenessWatch(POLICY)
    w.started(100, now=0.0)
    for t in range(1, 10):
        w.observe(_doc(100, t), float(t))
        assert w.hung(float(t)) == ""
    w.observe(_doc(100, 9), 12.0)  # rewritten, same count: the writer lives, the loop does not
    assert w.hung(13.9) == ""
    assert "no round for 5.0 s" in w.hung(14.0)


def test_an_idle_loop_counts_rounds_without_frames() -> None:
    w = LivenessWatch(POLICY)
    w.started(7, 0.0)
    for i in range(200):  # 100 s of an idle trigger station: no frame, a round every 0.5 s
        w.observe(_doc(7, i), i * 0.5)
        assert w.hung(i * 0.5) == ""


def test_a_document_of_another_process_is_no_sign_of_life() -> None:
    w = LivenessWatch(POLICY)
    w.started(200, 0.0)
    for t in range(0, 25):
        w.observe(_doc(199, t), float(t))  # the dead process's file, even if it looked alive
    assert "no sign" in w.hung(25.0)
    w.observe({"pid": 200, "state": "RUNNING"}, 25.0)  # no heartbeat section: not counted
    w.observe({"pid": 200, "state": "RUNNING", "heartbeat": "x"}, 25.0)
    assert "no sign" in w.hung(25.0)


def test_a_station_restarting_itself_gets_the_start_timeout() -> None:
    w = LivenessWatch(POLICY)
    w.started(5, 0.0)
    w.observe(_doc(5, 3), 1.0)
    w.observe(_doc(5, 4, state="STOPPED"), 2.0)  # it execs itself (same pid) to apply a config
    assert w.hung(21.9) == ""
    assert "stopped for 20.0 s" in w.hung(22.0)
    w.observe(_doc(5, 0, boot=2.0), 10.0)  # its new life: count from 0 again
    assert w.hung(14.9) == "" and w.running


def test_a_reader_blocked_in_one_call_beyond_its_timeouts_is_hung() -> None:
    w = LivenessWatch(POLICY, reader_grace_s=5.0)
    w.started(9, 0.0)
    w.observe(_doc(9, 1, blocked=9.9), 1.0)
    assert w.hung(1.0) == ""
    w.observe(_doc(9, 2, blocked=10.0), 2.0)
    assert "camera reader is blocked in one call for 10.0 s" in w.hung(2.0)


def test_off_and_bad_policies() -> None:
    w = LivenessWatch(LivenessPolicy(hang_timeout_s=0))
    w.started(1, 0.0)
    assert w.hung(1e9) == ""
    with pytest.raises(ValueError, match="hang_timeout_s >= 0"):
        LivenessPolicy(hang_timeout_s=-1)


def test_the_heartbeat_counts_and_says_so() -> None:
    hb = Heartbeat(clock=lambda: 42.0)
    for _ in range(3):
        hb.beat()
    assert hb.to_dict(None) == {"boot": 42.0, "beats": 3, "reader_blocked_s": None}
    assert hb.to_dict(1.23456)["reader_blocked_s"] == 1.235


def test_the_probe_reads_a_rewritten_file_once(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    probe = StatusProbe(path)
    assert probe.changed() is None  # missing
    path.write_text(json.dumps(_doc(1, 1)))
    assert probe.changed() == _doc(1, 1)
    assert probe.changed() is None  # unchanged: only a stat
    tmp = tmp_path / "new"
    tmp.write_text(json.dumps(_doc(1, 2)))
    os.replace(tmp, path)  # written atomically, as the agent does
    assert probe.changed() == _doc(1, 2)
    for bad in ('{"pid": 1, "heart', "[1, 2]", "\xff\xfe"):  # truncated, not an object, not text
        path.write_text(bad, "latin-1")
        os.utime(path, ns=(1, os.stat(path).st_mtime_ns + 1))
        assert probe.changed() is None


def _device_file(tmp_path: Path, supervisor: str, station_b: str = "") -> Path:
    path = tmp_path / "device.toml"
    path.write_text(
        f"""
[device]
id = "cell"
[source]
kind = "folder"
path = "{tmp_path}"
[status]
path = "{tmp_path}/status.json"
interval_s = 2
[updater]
state_dir = "{tmp_path}/state"
{supervisor}
[[station]]
name = "a"
[[station]]
name = "b"
{station_b}
""",
        "utf-8",
    )
    return path


def test_the_supervisor_keys_default_and_are_checked(tmp_path: Path) -> None:
    device, _ = load_stations(str(_device_file(tmp_path, "")))
    s = device.supervisor
    assert (s.hang_timeout_s, s.start_timeout_s, s.kill_after_s) == (30.0, 120.0, 10.0)
    device, _ = load_stations(str(_device_file(tmp_path, "[supervisor]\nhang_timeout_s = 0")))
    assert device.supervisor.hang_timeout_s == 0  # off

    cases = {
        "[supervisor]\nhang_timeout_s = 1": "supervisor.hang_timeout_s = 1: must be 0 (off) or at least 2 s",
        "[supervisor]\nhang_timeout_s = -3": "supervisor.hang_timeout_s = -3",
        "[supervisor]\nstart_timeout_s = 1": "supervisor.start_timeout_s = 1",
        "[supervisor]\nkill_after_s = 0": "supervisor.kill_after_s = 0",
        '[supervisor]\nhang_timeout_s = "soon"': "supervisor.hang_timeout_s = 'soon'",
        "[supervisor]\nwatch = true": "supervisor.watch: unknown key",
    }
    for table, message in cases.items():
        with pytest.raises(ConfigError) as err:
            load_stations(str(_device_file(tmp_path, table)))
        assert message in str(err.value), (table, str(err.value))


def test_a_hang_timeout_under_three_status_writes_names_the_station(tmp_path: Path) -> None:
    path = _device_file(tmp_path, "[supervisor]\nhang_timeout_s = 10", "[station.status]\ninterval_s = 5")
    with pytest.raises(ConfigError) as err:
        load_stations(str(path))
    text = str(err.value)
    assert "station[b].status.interval_s = 5.0: the supervisor reads the station's loop rounds" in text
    assert "must be at least 3x status.interval_s (15 s)" in text and "station[a]" not in text


def test_a_station_cannot_set_the_supervisor(tmp_path: Path) -> None:
    path = _device_file(tmp_path, "", "[station.supervisor]\nhang_timeout_s = 5")
    with pytest.raises(ConfigError, match="supervisor"):
        load_stations(str(path))


class _BlockingRead(MemoryCapture):
    """Frames from memory until ``block`` is set: then a read stays inside the capture (as a read
    blocked in C would) until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__([np.zeros((4, 4, 3), np.uint8)] * 1000)
        self.block, self.release, self.inside = threading.Event(), threading.Event(), threading.Event()

    def read(self) -> tuple[np.ndarray, str] | None:
        if self.block.is_set():
            self.inside.set()
            self.release.wait(10)
            return None  # the end of the stream once released
        time.sleep(0.01)
        return super().read()


def test_the_reader_says_how_long_it_is_inside_one_camera_call() -> None:
    cap = _BlockingRead()
    queue: FrameQueue[Frame] = FrameQueue(4, "drop_oldest")
    reader = SourceReader(cap, queue)
    reader.start()
    try:
        assert wait_for(lambda: reader.frames_read > 3, 5)
        assert (reader.blocked_s() or 0.0) < 0.5  # between calls, or briefly inside one
        cap.block.set()
        assert cap.inside.wait(5)
        time.sleep(0.5)
        blocked = reader.blocked_s()
        assert blocked is not None and 0.5 <= blocked < 5.0
        assert reader.blocked_s(now=time.monotonic() + 100) == pytest.approx(blocked + 100, abs=1.0)
    finally:
        cap.release.set()
        reader.stop()
    assert reader.blocked_s() is None  # the call ended (and the reader with it)
