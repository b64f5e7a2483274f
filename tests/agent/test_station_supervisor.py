"""The station supervisor with real (small) processes: a station that exits 0 has finished and is
not started again; one that dies is started again after its backoff while the others run on; one
whose program cannot be started waits and retries without holding the others up; stop() ends every
running station (SIGTERM) and the file says what happened."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from edge_agent.stations.restart_policy import RestartPolicy
from edge_agent.stations.supervisor import Supervisor, read_supervisor
from tests.agent.helpers import wait_for


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_finished_died_and_unstartable_stations(tmp_path: Path) -> None:
    marker = tmp_path / "died-once"
    dies_once = (
        f"import os, sys, time\nif not os.path.exists({str(marker)!r}):\n"
        f"    open({str(marker)!r}, 'w').close()\n    sys.exit(3)\ntime.sleep(60)"
    )
    status = tmp_path / "stations" / "supervisor.json"
    sup = Supervisor(
        {
            "done": ("dev~done", _py("pass")),
            "flaky": ("dev~flaky", _py(dies_once)),
            "steady": ("dev~steady", _py("import time; time.sleep(60)")),
            "broken": ("dev~broken", [str(tmp_path / "no-such-program")]),
        },
        status,
        RestartPolicy(min_s=0.1, max_s=0.4, healthy_after_s=60.0),
        poll_s=0.02,
        stop_timeout_s=5.0,
    )
    runner = threading.Thread(target=sup.run)
    runner.start()
    try:

        def st(name: str) -> dict[str, object]:
            return (read_supervisor(status).get("stations") or {}).get(name) or {}

        assert wait_for(lambda: st("done").get("state") == "finished" and st("done").get("last_exit") == 0, 10)
        assert wait_for(lambda: st("flaky").get("restarts") == 1 and st("flaky").get("state") == "running", 10)
        assert st("flaky")["last_exit"] == 3
        steady_pid = st("steady")["pid"]
        assert st("steady")["state"] == "running" and st("steady")["restarts"] == 0
        assert wait_for(lambda: int(str(st("broken").get("restarts"))) >= 3, 10)  # retried, backoff capped
        assert st("broken")["state"] == "waiting" and st("steady")["pid"] == steady_pid
        time.sleep(0.3)
        assert st("done")["state"] == "finished"  # never started again
    finally:
        sup.stop()
        runner.join(15)
    assert not runner.is_alive()
    final = read_supervisor(status)["stations"]
    assert {n: s["state"] for n, s in final.items()} == {
        "done": "finished",
        "flaky": "stopped",
        "steady": "stopped",
        "broken": "stopped",
    }
    assert final["steady"]["last_exit"] == -15 and final["steady"]["pid"] is None


def test_the_supervisor_returns_when_every_station_finished(tmp_path: Path) -> None:
    sup = Supervisor({"a": ("d~a", _py("pass")), "b": ("d~b", _py("import time; time.sleep(0.3)"))}, None, poll_s=0.02)
    assert sup.run() == 0
    assert {c.name: (c.state, c.last_exit) for c in sup.children.values()} == {
        "a": ("finished", 0),
        "b": ("finished", 0),
    }
