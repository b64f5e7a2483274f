"""Run each station of a device as its own agent process and keep them running.

Strong isolation: a station's camera, model, updater, trial, sinks and telemetry live in its own
process, so a station that crashes, hangs in a camera read or fails its trial cannot take another
down. The supervisor only starts, watches and restarts them (:mod:`restart_policy`), forwards a stop
(SIGTERM to every station, SIGKILL after ``stop_timeout_s``), and writes what it sees to a small JSON
file (``<state_dir>/stations/supervisor.json``: pid, state, restarts, hangs, last exit per station).

A station that hangs (alive, its inspection loop stuck) is noticed from its status file
(:mod:`liveness`): the supervisor logs it, marks it ``hung``, sends SIGTERM, SIGKILL after
``kill_after_s``, and starts it again under the same backoff as a death.

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

from edge_agent.stations.liveness import LivenessPolicy, LivenessWatch, StatusProbe
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
    state: str = "starting"  # starting | running | hung | waiting | finished | stopped
    last_exit: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    #: the hang watch (None: not watched) and the status file it reads
    watch: LivenessWatch | None = None
    probe: StatusProbe | None = None
    next_look: float = 0.0
    hangs: int = 0
    last_hang: dict[str, Any] | None = None
    kill_at: float | None = None  # a hung process still alive then gets SIGKILL

    def to_dict(self) -> dict[str, Any]:
        alive = self.proc is not None and self.state in ("running", "hung")
        return {
            "unit": self.unit,
            "pid": self.proc.pid if alive and self.proc is not None else None,
            "state": self.state,
            "restarts": self.restart.restarts,
            "hangs": self.hangs,
            "last_hang": self.last_hang,
            "last_exit": self.last_exit,
            "started_at": self.started_wall,
        }


class Supervisor:
    """``stations``: name -> (unit address, argv of its agent process). ``watch``: name -> (its status
    file, how long its source's own timeouts let one camera call take) for the stations whose hangs
    ``liveness`` watches."""

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
        liveness: LivenessPolicy | None = None,
        watch: Mapping[str, tuple[Path, float]] | None = None,
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
        self.liveness = liveness or LivenessPolicy()
        for name, (status_file, reader_grace_s) in (watch or {}).items():
            self.watch_station(self.children[name], status_file, reader_grace_s)
        #: held while the loop looks at ``children``: a layout change (:mod:`.layout_apply`) edits them under it
        self.lock = threading.RLock()

    def watch_station(self, c: StationProcess, status_file: Path, reader_grace_s: float = 0.0) -> None:
        """Watch ``c`` for hangs through its status file (nothing when ``liveness`` is off)."""
        if self.liveness.enabled:
            c.watch, c.probe = LivenessWatch(self.liveness, reader_grace_s), StatusProbe(status_file)

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
            elif c.state in ("running", "hung") and c.proc is not None:
                rc = c.proc.poll()
                if rc is None:
                    changed |= self._look(c, now)
                    continue
                changed = True
                c.last_exit = rc
                ran = now - c.started_at
                hung, c.kill_at = c.state == "hung", None
                c.history.append({"exit": rc, "ran_s": round(ran, 3), **({"hung": True} if hung else {})})
                del c.history[:-20]
                if hung:  # whatever its exit code: it was killed, not finished
                    c.start_at = c.restart.died(ran, now)
                    c.state = "waiting"
                    log.warning(
                        "station %s (hung) ended (exit %s): starting it again in %.1f s (restart %d)",
                        c.name,
                        rc,
                        c.start_at - now,
                        c.restart.restarts,
                    )
                    continue
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

    def _look(self, c: StationProcess, now: float) -> bool:
        """A live process: kill a hung one that outlived its SIGTERM; look at a running one's status
        file now and then and declare it hung when its loop stopped. True when its state changed."""
        if c.state == "hung":
            if c.kill_at is not None and now >= c.kill_at and c.proc is not None:
                log.warning(
                    "station %s (hung) did not end on SIGTERM within %.0f s: SIGKILL",
                    c.name,
                    self.liveness.kill_after_s,
                )
                c.kill_at = None
                with contextlib.suppress(ProcessLookupError):
                    c.proc.kill()
            return False
        if c.watch is None or c.probe is None or now < c.next_look:
            return False
        c.next_look = now + min(1.0, self.liveness.hang_timeout_s / 4)
        c.watch.observe(c.probe.changed(), now)
        reason = c.watch.hung(now)
        if not reason or c.proc is None:
            return False
        c.hangs += 1
        c.last_hang = {"at": time.time(), "pid": c.proc.pid, "reason": reason}
        c.state, c.kill_at = "hung", now + self.liveness.kill_after_s
        log.error(
            "station %s (%s, pid %d) is hung: %s; SIGTERM now, SIGKILL after %.0f s (hang %d); the other "
            "stations go on",
            c.name,
            c.unit,
            c.proc.pid,
            reason,
            self.liveness.kill_after_s,
            c.hangs,
        )
        with contextlib.suppress(ProcessLookupError):
            c.proc.terminate()
        return True

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
        if c.watch is not None:
            c.watch.started(c.proc.pid, now)
            c.next_look = now
        log.info("station %s (%s) started: pid %d", c.name, c.unit, c.proc.pid)

    def _stop_all(self) -> None:
        running = [c for c in self.children.values() if c.state in ("running", "hung") and c.proc is not None]
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
