"""Run each station of a device as its own agent process and keep them running.

Strong isolation: a station's camera, model, updater, trial, sinks and telemetry live in its own
process, so a station that crashes, hangs in a camera read or fails its trial cannot take another
down. The supervisor only starts, watches and restarts them (:mod:`restart_policy`), forwards a stop
(SIGTERM to every station, SIGKILL after ``stop_timeout_s``), and writes what it sees to a small JSON
file (``<state_dir>/stations/supervisor.json``: pid, state, restarts, last exit per station).

A station process is started in its own session (a Ctrl-C in a terminal reaches the supervisor,
which stops the stations in order) and, on Linux, receives SIGTERM if the supervisor dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.stations.restart_policy import RestartPolicy, RestartState
from edgeline.core.fsutil import write_atomic

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
SUPERVISOR_FILE = "supervisor.json"


def _die_with_parent() -> None:  # in the child, between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _popen(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
    )


@dataclass
class StationProcess:
    name: str
    unit: str
    argv: tuple[str, ...]
    restart: RestartState
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # on the supervisor's clock
    started_wall: float = 0.0
    start_at: float = 0.0  # when it may (re)start
    state: str = "starting"  # starting | running | waiting | finished | stopped
    last_exit: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "pid": self.proc.pid if self.proc is not None and self.state == "running" else None,
            "state": self.state,
            "restarts": self.restart.restarts,
            "last_exit": self.last_exit,
            "started_at": self.started_wall,
        }


class Supervisor:
    """``stations``: name -> (unit address, argv of its agent process)."""

    def __init__(
        self,
        stations: Mapping[str, tuple[str, Sequence[str]]],
        status_path: Path | None,
        policy: RestartPolicy | None = None,
        *,
        stop_timeout_s: float = 10.0,
        poll_s: float = 0.1,
        spawn: Callable[[Sequence[str]], subprocess.Popen[bytes]] = _popen,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        policy = policy or RestartPolicy()
        self.children = {
            name: StationProcess(name, unit, tuple(argv), RestartState(policy))
            for name, (unit, argv) in stations.items()
        }
        self.status_path = status_path
        self.stop_timeout_s = stop_timeout_s
        self.poll_s = poll_s
        self._spawn = spawn
        self._clock = clock
        self._stop = threading.Event()
        #: held while the loop looks at ``children``: a layout change (:mod:`.layout_apply`) edits them under it
        self.lock = threading.RLock()

    def stop(self) -> None:
        """Ask :meth:`run` to stop every station and return (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> int:
        """Start every station and keep them running until :meth:`stop`, or until every station
        finished (exit 0). Returns 0."""
        self._write()
        try:
            while not self._stop.is_set():
                with self.lock:
                    if self._step(self._clock()):
                        self._write()
                    if all(c.state == "finished" for c in self.children.values()):
                        log.info("every station finished")
                        return 0
                self._stop.wait(self.poll_s)
        finally:
            self._stop_all()
            self._write()
        return 0

    def _step(self, now: float) -> bool:
        changed = False
        for c in self.children.values():
            if c.state in ("starting", "waiting") and now >= c.start_at:
                self._start(c, now)
                changed = True
            elif c.state == "running" and c.proc is not None:
                rc = c.proc.poll()
                if rc is None:
                    continue
                changed = True
                c.last_exit = rc
                ran = now - c.started_at
                c.history.append({"exit": rc, "ran_s": round(ran, 3)})
                del c.history[:-20]
                if rc == 0:
                    c.state = "finished"
                    log.info("station %s finished (exit 0 after %.1f s)", c.name, ran)
                    continue
                c.start_at = c.restart.died(ran, now)
                c.state = "waiting"
                how = f"signal {-rc}" if rc < 0 else f"exit {rc}"
                log.warning(
                    "station %s died (%s after %.1f s): starting it again in %.1f s (restart %d); the other "
                    "stations go on",
                    c.name,
                    how,
                    ran,
                    c.start_at - now,
                    c.restart.restarts,
                )
        return changed

    def _start(self, c: StationProcess, now: float) -> None:
        try:
            c.proc = self._spawn(c.argv)
        except OSError as exc:
            c.start_at = c.restart.died(0.0, now)
            c.state = "waiting"
            log.error("station %s cannot be started: %s", c.name, exc)
            return
        c.started_at, c.started_wall = now, time.time()
        c.state = "running"
        log.info("station %s (%s) started: pid %d", c.name, c.unit, c.proc.pid)

    def _stop_all(self) -> None:
        running = [c for c in self.children.values() if c.state == "running" and c.proc is not None]
        for c in running:
            assert c.proc is not None
            with contextlib.suppress(ProcessLookupError):
                c.proc.terminate()
        deadline = time.monotonic() + self.stop_timeout_s
        for c in running:
            assert c.proc is not None
            try:
                c.last_exit = c.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("station %s did not stop within %.0f s: killed", c.name, self.stop_timeout_s)
                with contextlib.suppress(ProcessLookupError):
                    c.proc.kill()
                c.last_exit = c.proc.wait()
            c.state = "stopped"
        for c in self.children.values():
            if c.state in ("starting", "waiting"):
                c.state = "stopped"

    def write(self) -> None:
        with self.lock:
            self._write()

    def _write(self) -> None:
        if self.status_path is None:
            return
        doc = {"updated_at": time.time(), "stations": {n: c.to_dict() for n, c in self.children.items()}}
        try:
            self.status_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.status_path, json.dumps(doc, indent=1, sort_keys=True).encode())
        except OSError as exc:
            log.warning("cannot write %s: %s", self.status_path, exc)


def read_supervisor(path: Path) -> dict[str, Any]:
    """The supervisor's file, or ``{}`` when there is none (yet)."""
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}
