"""The supervisor's hang watch with small real processes that write a status file the way a station
does (a loop thread counting rounds, a writer thread rewriting the file): a station whose loop gets
stuck while its writer goes on is declared hung, killed (SIGTERM; SIGKILL when it ignores SIGTERM) and
started again under the backoff, even though it exits 0 on the SIGTERM; a station slow to show its
first round and a steady one keep their process; supervisor.json says what happened."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

from edge_agent.stations.liveness import LivenessPolicy
from edge_agent.stations.restart_policy import RestartPolicy
from edge_agent.stations.supervisor import Supervisor, read_supervisor
from tests.agent.helpers import wait_for

#: a fake station: argv status_path marker start_delay_s on_term (exit | ignore)
STATION = r"""
import json, os, signal, sys, threading, time
status, marker, delay, on_term = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
if on_term == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
time.sleep(delay)  # an interpreter and a model loading: no status file yet
beats, boot = 0, time.time()
def loop():
    global beats
    while True:
        if os.path.exists(marker):  # the loop gets stuck (once: the marker is taken)
            os.replace(marker, marker + ".taken")
            threading.Event().wait()
        beats += 1
        time.sleep(0.1)
threading.Thread(target=loop, daemon=True).start()
while True:  # the status writer goes on whatever the loop does
    beat = {"boot": boot, "beats": beats, "reader_blocked_s": None}
    doc = {"pid": os.getpid(), "state": "RUNNING", "heartbeat": beat}
    with open(status + ".tmp", "w") as f:
        json.dump(doc, f)
    os.replace(status + ".tmp", status)
    time.sleep(0.1)
"""


def test_a_stuck_loop_is_killed_and_restarted_the_others_keep_their_process(tmp_path: Path) -> None:
    def station(name: str, delay: float = 0.0, on_term: str = "exit") -> tuple[str, list[str]]:
        argv = [sys.executable, "-c", STATION, str(tmp_path / f"{name}.json"), str(tmp_path / f"{name}.hang")]
        return (f"dev~{name}", [*argv, str(delay), on_term])

    sup_file = tmp_path / "stations" / "supervisor.json"
    names = {"stuck": station("stuck"), "stubborn": station("stubborn", on_term="ignore")}
    names |= {"slow": station("slow", delay=3.5), "steady": station("steady")}
    sup = Supervisor(
        names,
        sup_file,
        RestartPolicy(min_s=0.2, max_s=1.0),
        poll_s=0.02,
        stop_timeout_s=5.0,
        liveness=LivenessPolicy(hang_timeout_s=2.0, start_timeout_s=10.0, kill_after_s=1.0),
        watch={n: (tmp_path / f"{n}.json", 0.0) for n in names},
    )
    runner = threading.Thread(target=sup.run)
    runner.start()
    try:

        def st(name: str) -> dict[str, Any]:
            return (read_supervisor(sup_file).get("stations") or {}).get(name) or {}

        # 'slow' shows its first round 3.5 s after its start, past the 2 s hang timeout: not hung
        assert wait_for(lambda: (tmp_path / "slow.json").exists(), 15)
        assert wait_for(lambda: all(st(n).get("state") == "running" for n in names), 5)
        pids = {n: st(n)["pid"] for n in names}

        (tmp_path / "stuck.hang").touch()
        (tmp_path / "stubborn.hang").touch()
        assert wait_for(lambda: st("stuck").get("hangs") == 1, 10), st("stuck")
        assert "made no round" in st("stuck")["last_hang"]["reason"]
        assert st("stuck")["last_hang"]["pid"] == pids["stuck"]
        # it exits 0 on its SIGTERM, yet it was killed: started again, not 'finished'
        assert wait_for(lambda: st("stuck").get("restarts") == 1 and st("stuck").get("state") == "running", 10)
        assert st("stuck")["last_exit"] == 0 and st("stuck")["pid"] != pids["stuck"]
        # the one that ignores SIGTERM gets SIGKILL after kill_after_s
        assert wait_for(lambda: st("stubborn").get("restarts") == 1 and st("stubborn").get("state") == "running", 15)
        assert st("stubborn")["last_exit"] == -signal.SIGKILL and st("stubborn")["hangs"] == 1
        assert sup.children["stubborn"].history[-1]["hung"] is True

        # the new lives count again and are left alone; the others never moved
        assert wait_for(lambda: (tmp_path / "stuck.hang.taken").exists(), 1)
        threading.Event().wait(3.0)
        for n in ("stuck", "stubborn"):
            assert st(n)["hangs"] == 1 and st(n)["restarts"] == 1 and st(n)["state"] == "running"
        for n in ("slow", "steady"):
            assert (st(n)["pid"], st(n)["hangs"], st(n)["restarts"]) == (pids[n], 0, 0)
    finally:
        sup.stop()
        runner.join(20)
    assert not runner.is_alive()
    assert {n: s["state"] for n, s in read_supervisor(sup_file)["stations"].items()} == dict.fromkeys(names, "stopped")


def test_a_station_that_never_shows_a_round_is_hung_after_its_start_timeout(tmp_path: Path) -> None:
    sup_file = tmp_path / "supervisor.json"
    sup = Supervisor(
        {"mute": ("dev~mute", [sys.executable, "-c", "import time; time.sleep(60)"])},
        sup_file,
        RestartPolicy(min_s=5.0, max_s=5.0),
        poll_s=0.02,
        liveness=LivenessPolicy(hang_timeout_s=2.0, start_timeout_s=5.0, kill_after_s=1.0),
        watch={"mute": (tmp_path / "never-written.json", 0.0)},
    )
    runner = threading.Thread(target=sup.run)
    runner.start()
    try:

        def st() -> dict[str, Any]:
            return (read_supervisor(sup_file).get("stations") or {}).get("mute") or {}

        assert wait_for(lambda: st().get("state") == "running", 5)
        threading.Event().wait(3.5)
        assert st()["hangs"] == 0  # past the hang timeout, inside the start timeout
        assert wait_for(lambda: st().get("hangs") == 1, 5), st()
        assert "no sign of its inspection loop" in st()["last_hang"]["reason"]
        assert wait_for(lambda: st().get("state") == "waiting", 5)
        assert st()["last_exit"] == -signal.SIGTERM and st()["pid"] is None
    finally:
        sup.stop()
        runner.join(20)
    assert not runner.is_alive()
