"""Apply a station layout to the running :class:`~edge_agent.stations.supervisor.Supervisor`: stop
the removed and changed stations (SIGTERM, SIGKILL after the supervisor's stop timeout), then start
the added and changed ones; the others keep their process (same pid) and are never signalled.

The supervisor's children are edited under its lock and never left empty: a new or changed station
is put in place first, held (``waiting``) until the processes it replaces have stopped, so the two
never share a state dir, a camera or a port.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edge_agent.stations.layout import LayoutPlan
from edge_agent.stations.layout_trial import StationRun
from edge_agent.stations.restart_policy import RestartPolicy, RestartState
from edge_agent.stations.supervisor import StationProcess, Supervisor
from firmware_configs.schema import DeviceConfig

log = logging.getLogger(__name__)

HELD = float("inf")


class LayoutApplier:
    def __init__(
        self,
        sup: Supervisor,
        argv_of: Callable[[str], Sequence[str]],
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        grace_of: Callable[[DeviceConfig], float] = lambda _cfg: 0.0,
    ) -> None:
        self.sup = sup
        self.argv_of = argv_of
        self.grace_of = grace_of  # how long one camera call of a station may block (its hang watch)
        self.policy = policy or RestartPolicy()
        self.clock = clock  # the supervisor's (monotonic)

    def apply(self, plan: LayoutPlan, stations: Mapping[str, DeviceConfig]) -> None:
        """Blocks until the stations it replaces have stopped (at most the stop timeout)."""
        sup = self.sup
        old: list[StationProcess] = []
        held: list[StationProcess] = []
        with sup.lock:
            for name in plan.removed:
                c = sup.children.pop(name, None)
                if c is not None:
                    old.append(c)
            for name in plan.changed + plan.added:
                c = sup.children.get(name)
                if c is not None:
                    old.append(c)
                new = StationProcess(
                    name, stations[name].device.id, tuple(self.argv_of(name)), RestartState(self.policy)
                )
                new.state, new.start_at = "waiting", HELD
                sup.watch_station(new, Path(stations[name].status.path), self.grace_of(stations[name]))
                sup.children[name] = new
                held.append(new)
            sup.write()
        self._stop(old)
        with sup.lock:
            for c in held:
                c.start_at = float("-inf")  # the supervisor's next step starts it
        for name in plan.added:
            log.info("layout: station %s added", name)
        for name in plan.changed:
            log.info("layout: station %s changed: restarting it", name)

    def _stop(self, old: Sequence[StationProcess]) -> None:
        running = [c for c in old if c.state == "running" and c.proc is not None]
        for c in running:
            assert c.proc is not None
            log.info("layout: stopping station %s (pid %d)", c.name, c.proc.pid)
            with contextlib.suppress(ProcessLookupError):
                c.proc.terminate()
        deadline = time.monotonic() + self.sup.stop_timeout_s
        for c in running:
            assert c.proc is not None
            try:
                c.last_exit = c.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("layout: station %s did not stop within %.0f s: killed", c.name, self.sup.stop_timeout_s)
                with contextlib.suppress(ProcessLookupError):
                    c.proc.kill()
                c.last_exit = c.proc.wait()
        for c in old:
            c.state = "stopped"

    def runs(self, names: Sequence[str], stations: Mapping[str, DeviceConfig]) -> dict[str, StationRun]:
        """What a layout trial looks at: each station's process (the supervisor's view) and its own
        status file, when this run of the process wrote it."""
        now = self.clock()
        out: dict[str, StationRun] = {}
        with self.sup.lock:
            procs = {n: self.sup.children.get(n) for n in names}
            seen = {
                n: (c.state, c.restart.restarts, now - c.started_at, c.last_exit, c.started_wall, c.proc)
                for n, c in procs.items()
                if c is not None
            }
        for name, (state, deaths, ran, last_exit, since, proc) in seen.items():
            status_state, frames = None, 0
            cfg = stations.get(name)
            doc = _status(Path(cfg.status.path)) if cfg is not None and state == "running" else None
            fresh = doc is not None and proc is not None and doc.get("pid") == proc.pid
            if doc is not None and fresh and float(doc.get("updated_at", 0)) >= since:
                status_state = str(doc.get("state", ""))
                frames = int((doc.get("frames") or {}).get("in", 0))
            out[name] = StationRun(state, deaths, ran if state == "running" else 0.0, last_exit, status_state, frames)
        return out


def _status(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
