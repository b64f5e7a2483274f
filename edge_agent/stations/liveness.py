"""Telling a hung station from a slow or idle one (docs/stations.md, "Processes").

The station process side is :class:`Heartbeat`: the inspection loop counts its rounds (one per frame,
and one every half second while no frame or trigger comes, free-run and trigger mode alike), and the
status document carries the count (``heartbeat``), with how long the source reader has been inside a
single camera open or read. The status file is rewritten by its own thread every
``status.interval_s``, so a process that is stopped as a whole stops rewriting it, and a process
whose loop is stuck rewrites it with the same count.

The supervisor side is :class:`LivenessWatch`, pure bookkeeping with the clock handed in: it is fed
the station's status document now and then and says when the station is hung. Liveness is about the
loop running, not about frames arriving: a trigger station that gets no trigger, or a camera that
delivers nothing, still counts rounds.

- Before the process showed its first round (interpreter start, model load: 2-3 s, more on a slow
  box), and while it says it is starting or stopping (a station that ``exec``s itself to apply a
  remote config), it has ``start_timeout_s``.
- Once running (``RUNNING`` or ``NO_MODEL``), no new round for ``hang_timeout_s`` is a hang, and so is
  a reader blocked in one camera call for ``hang_timeout_s`` beyond the source's own timeouts.

A document is the station's only when its ``pid`` is the process's: a status file left by an earlier
process is not a sign of life.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the agent states in which the inspection loop runs and must count rounds
LOOP_STATES = frozenset({"RUNNING", "NO_MODEL"})


class Heartbeat:
    """The inspection loop's round counter (in the station process). :meth:`beat` is one integer
    increment, cheap enough for every frame; only the loop's thread calls it."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        #: when this process life began (wall clock): a process that ``exec``s itself starts a new life
        self.boot = clock()
        self.beats = 0

    def beat(self) -> None:
        self.beats += 1

    def to_dict(self, reader_blocked_s: float | None) -> dict[str, Any]:
        return {
            "boot": self.boot,
            "beats": self.beats,
            "reader_blocked_s": None if reader_blocked_s is None else round(reader_blocked_s, 3),
        }


@dataclass(frozen=True)
class LivenessPolicy:
    """``[supervisor]``: ``hang_timeout_s`` 0 turns the watch off."""

    hang_timeout_s: float = 30.0
    start_timeout_s: float = 120.0
    kill_after_s: float = 10.0

    def __post_init__(self) -> None:
        if self.hang_timeout_s < 0 or self.start_timeout_s <= 0 or self.kill_after_s <= 0:
            raise ValueError("liveness needs hang_timeout_s >= 0, start_timeout_s > 0 and kill_after_s > 0")

    @property
    def enabled(self) -> bool:
        return self.hang_timeout_s > 0


class LivenessWatch:
    """One station process's signs of life. ``reader_grace_s``: how long the station's own source
    timeouts let one camera open or read take (the open and read timeouts)."""

    def __init__(self, policy: LivenessPolicy, reader_grace_s: float = 0.0) -> None:
        self.policy = policy
        self.reader_grace_s = max(0.0, reader_grace_s)
        self.pid: int | None = None
        self._mark: tuple[Any, ...] | None = None
        self._progress_at = 0.0
        self._state = ""
        self._reader_blocked_s: float | None = None

    def started(self, pid: int, now: float) -> None:
        """A new process: nothing it has not shown yet counts."""
        self.pid, self._mark, self._progress_at, self._state = pid, None, now, ""
        self._reader_blocked_s = None

    def observe(self, doc: dict[str, Any] | None, now: float) -> None:
        """The station's status document as read now (None: missing or unreadable)."""
        if not doc or self.pid is None or doc.get("pid") != self.pid:
            return
        hb = doc.get("heartbeat")
        if not isinstance(hb, dict):
            return
        state = str(doc.get("state", ""))
        mark = (hb.get("boot"), hb.get("beats"), state)
        if mark != self._mark:
            self._mark, self._progress_at, self._state = mark, now, state
        blocked = hb.get("reader_blocked_s")
        self._reader_blocked_s = float(blocked) if isinstance(blocked, int | float) else None

    @property
    def running(self) -> bool:
        """The process showed a round of a running loop (not starting, not stopping)."""
        return self._mark is not None and self._state in LOOP_STATES

    def hung(self, now: float) -> str:
        """Why the station is hung, or ``""``."""
        p = self.policy
        if not p.enabled or self.pid is None:
            return ""
        quiet = now - self._progress_at
        if not self.running:
            if quiet < p.start_timeout_s:
                return ""
            limit = f"{p.start_timeout_s:g}"
            if self._mark is None:
                return f"no sign of its inspection loop {quiet:.1f} s after its start (start_timeout_s {limit})"
            return f"{self._state.lower() or 'not running'} for {quiet:.1f} s (start_timeout_s {limit})"
        if quiet >= p.hang_timeout_s:
            return f"its inspection loop made no round for {quiet:.1f} s (hang_timeout_s {p.hang_timeout_s:g})"
        blocked = self._reader_blocked_s
        if blocked is not None and blocked >= p.hang_timeout_s + self.reader_grace_s:
            return (
                f"its camera reader is blocked in one call for {blocked:.1f} s "
                f"(hang_timeout_s {p.hang_timeout_s:g} beyond the source's {self.reader_grace_s:g} s timeouts)"
            )
        return ""


class StatusProbe:
    """A station's status file, read only when it changed: one ``stat`` a look, a parse per rewrite."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._sig: tuple[int, int, int] | None = None

    def changed(self) -> dict[str, Any] | None:
        """The document when the file was rewritten since the last look; None otherwise (unchanged,
        missing, unreadable or not a JSON object)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        if sig == self._sig:
            return None
        self._sig = sig
        try:
            doc = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None
