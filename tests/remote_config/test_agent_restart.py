"""Configs that need a restart: the agent restarts itself in the same process (same pid), tries the
config and commits it; one it cannot run with (a source that delivers nothing) is rolled back by
itself to the previous config; an agent killed while trying one starts again on the previous."""

from __future__ import annotations

import os
import signal

import cv2
import numpy as np

from edgeline.core.protocol.canonical import canonical_json
from tests.remote_config.conftest import GROUP, Fleet, wait_for


def test_restart_configs_commit_roll_back_and_survive_a_crash(fleet: Fleet) -> None:
    a = fleet.agent
    a.start()
    assert fleet.watch.wait(lambda s: s.version == 0, 20), a.log_tail()
    pid = wait_for(a.pid, 10)  # the status file is written every 0.1 s
    assert pid is not None, a.log_tail()

    # a good one, to the device's group: the agent restarts with it and commits it
    other = a.workdir / "allowed" / "frames-b"
    other.mkdir()
    rng = np.random.default_rng(1)
    for i in range(8):
        cv2.imwrite(str(other / f"g{i}.png"), rng.integers(0, 255, (40, 40), dtype=np.uint8))
    v1 = fleet.push({"source": {"kind": "folder", "path": str(other), "loop": True}}, target=f"group:{GROUP}")
    s = fleet.watch.wait(lambda s: s.version == v1 and s.trial is None, 30)
    assert s is not None, a.log_tail()
    assert s.changed == ("source.path",)
    assert wait_for(lambda: (a.status() or {}).get("camera", {}).get("source") == str(other), 10), a.status()
    assert a.pid() == pid and a.proc.poll() is None, "restarted in the same process"
    assert "restarting: config version" in a.log_tail()

    # one it cannot run with: every image unreadable, no frame comes; rolled back to v1 by itself
    broken = a.workdir / "allowed" / "frames-broken"
    broken.mkdir()
    for i in range(3):
        (broken / f"x{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    v2 = fleet.push({"source": {"kind": "folder", "path": str(broken), "loop": True}}, target=f"group:{GROUP}")
    s = fleet.watch.wait(lambda s: s.last_rollback is not None and s.last_rollback.version == v2, 40)
    assert s is not None and s.last_rollback is not None, a.log_tail()
    assert s.last_rollback.reason == "trial_failed", s.last_rollback
    assert s.version == v1
    assert wait_for(lambda: (a.status() or {}).get("camera", {}).get("source") == str(other), 15), a.status()
    n = a.frames_in()
    assert wait_for(lambda: a.frames_in() >= n + 10, 15), a.log_tail()
    assert a.pid() == pid

    # killed while trying one: the next start goes back to v1 (the record survived the kill)
    v3 = fleet.push({"source": {"kind": "folder", "path": str(broken), "loop": True}})
    assert fleet.watch.wait(lambda s: s.trial == v3, 20), a.log_tail()
    assert wait_for(lambda: (a.status() or {}).get("camera", {}).get("source") == str(broken), 15), a.status()
    os.kill(a.proc.pid, signal.SIGKILL)
    a.proc.wait(10)
    a.start()
    s = fleet.watch.wait(lambda s: s.last_rollback is not None and s.last_rollback.version == v3, 30)
    assert s is not None and s.last_rollback is not None, a.log_tail()
    assert s.last_rollback.reason == "crashed" and s.version == v1 and s.trial is None
    assert wait_for(lambda: (a.status() or {}).get("camera", {}).get("source") == str(other), 15), a.status()
    # a replay of the version that failed is refused too: it was tried
    (failed,) = [p for p in fleet.store.config_pushes(f"group:{GROUP}") if p.version == v2]
    fleet.link.publish_sync(fleet.topics.group_config(GROUP), canonical_json(failed.envelope), 1, False)
    s = fleet.watch.refused(v2)
    assert s is not None and s.last_refusal is not None and s.last_refusal.reason == "replay"


def test_a_config_the_agent_cannot_start_with_is_rolled_back(fleet: Fleet) -> None:
    a = fleet.agent
    a.start()
    assert fleet.watch.wait(lambda s: s.version == 0, 20), a.log_tail()
    pid = wait_for(a.pid, 10)  # the status file is written every 0.1 s
    assert pid is not None, a.log_tail()
    missing = a.workdir / "allowed" / "no-such-password"
    v = fleet.push({"inference": {"stats_every": 7}, "sinks": {"mqtt": {"port": 1, "password_file": str(missing)}}})
    s = fleet.watch.wait(lambda s: s.last_rollback is not None and s.last_rollback.version == v, 30)
    assert s is not None and s.last_rollback is not None, a.log_tail()
    assert s.last_rollback.reason == "trial_failed" and "cannot start with it" in s.last_rollback.detail
    assert s.version == 0
    n = a.frames_in()
    assert wait_for(lambda: a.frames_in() >= n + 10, 20), a.log_tail()
    assert a.pid() == pid and a.proc.poll() is None
