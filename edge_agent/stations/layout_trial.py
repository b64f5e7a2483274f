"""The trial of a station layout, pure: every station the layout starts (added or changed) must run
healthily, or the whole layout goes back to the previous one.

A tried station passes when its process has run ``trial_s`` and its status file (written by that
process) shows it RUNNING (or NO_MODEL: its updater waits for a model) with ``trial_frames`` frames
read, or when it finished (exit 0: a file or folder read to its end). The layout fails at once when a
tried station died ``max_deaths`` times or its status says FAILED, and at ``trial_timeout_s`` when a
tried station has not passed yet. A layout that only removes stations passes at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: a tried station dying this often during its trial fails the layout
MAX_DEATHS = 2
#: a station's own states that count as serving: with a model, or reading frames while its updater
#: waits for one (a station whose model slot is the updater's)
SERVING = ("RUNNING", "NO_MODEL")


@dataclass(frozen=True)
class StationRun:
    """What the trial sees of one tried station: the supervisor's view and its status file."""

    state: str  # the supervisor's: starting | running | waiting | finished | stopped
    deaths: int
    ran_s: float
    last_exit: int | None = None
    #: the station's own status, when it was written by this run of the process
    status_state: str | None = None
    frames_in: int = 0


@dataclass(frozen=True)
class LayoutTrial:
    version: int
    stations: tuple[str, ...]
    started: float
    trial_s: float
    trial_frames: int
    trial_timeout_s: float
    max_deaths: int = MAX_DEATHS

    def _passed(self, run: StationRun) -> bool:
        if run.state == "finished":
            return True
        return (
            run.state == "running"
            and run.ran_s >= self.trial_s
            and run.status_state in SERVING
            and run.frames_in >= self.trial_frames
        )

    def judge(self, now: float, runs: Mapping[str, StationRun]) -> tuple[bool, str] | None:
        """None while undecided; (True, "") passed; (False, why) failed."""
        for name in self.stations:
            run = runs.get(name)
            if run is None:
                return False, f"station[{name}] is not under the supervisor"
            if run.deaths >= self.max_deaths:
                how = "" if run.last_exit is None else f", last exit {run.last_exit}"
                return False, f"station[{name}] died {run.deaths} times during its trial{how}"
            if run.status_state == "FAILED":
                return False, f"station[{name}] cannot run with it (its status says FAILED)"
        if all(self._passed(runs[n]) for n in self.stations):
            return True, ""
        elapsed = now - self.started
        if elapsed < self.trial_timeout_s:
            return None
        late = [n for n in self.stations if not self._passed(runs[n])]
        shown = "; ".join(
            f"station[{n}]: {runs[n].state}, {runs[n].frames_in} of {self.trial_frames} frames" for n in late
        )
        return False, f"not healthy within {self.trial_timeout_s:.0f} s ({shown})"
