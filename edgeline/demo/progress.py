"""Live progress of the demo on stderr: every stage with its state, time and what is happening now.

On a terminal it is a live table (rich); otherwise (a CI log, a pipe) one line when a stage starts and
one when it ends, so logs stay readable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

ICONS = {"pending": ("·", "dim"), "running": ("▶", "bold cyan"), "passed": ("✔", "green"), "failed": ("✘", "bold red")}
ICONS["skipped"] = ("-", "dim")


@dataclass
class _Row:
    name: str
    title: str
    state: str = "pending"
    started: float = 0.0
    seconds: float = 0.0
    text: str = ""


class StageProgress:
    def __init__(self, stages: Sequence[tuple[str, str]], console: Console, header: str) -> None:
        self.console = console
        self.header = header
        self.rows = {name: _Row(name, title) for name, title in stages}
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._current: _Row | None = None

    def __enter__(self) -> StageProgress:
        if self.console.is_terminal:
            self._live = Live(self._render(), console=self.console, refresh_per_second=6, transient=True)
            self._live.__enter__()
        else:
            self.console.print(self.header, highlight=False, markup=False, soft_wrap=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(None, None, None)
            self._live = None

    def _render(self) -> Group:
        t = Table.grid(padding=(0, 1))
        t.add_column(width=1)
        t.add_column(min_width=44)
        t.add_column(justify="right", width=7)
        t.add_column(overflow="ellipsis", no_wrap=True, max_width=80)
        now = time.monotonic()
        for r in self.rows.values():
            icon, style = ICONS[r.state]
            secs = now - r.started if r.state == "running" else r.seconds
            t.add_row(
                Text(icon, style=style),
                Text(r.title, style="bold" if r.state == "running" else ""),
                Text(f"{secs:5.1f}s" if r.state != "pending" else "", style="dim"),
                Text(r.text, style="red" if r.state == "failed" else "dim"),
            )
        return Group(Text(self.header, style="bold"), t)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def start(self, name: str) -> None:
        with self._lock:
            row = self.rows[name]
            row.state, row.started, row.text = "running", time.monotonic(), ""
            self._current = row
            self._refresh()
        if self._live is None:
            self.console.print(f"[{name}] {row.title} ...", highlight=False, markup=False, soft_wrap=True)

    def detail(self, text: str) -> None:
        with self._lock:
            if self._current is not None:
                self._current.text = text
                self._refresh()

    def end(self, name: str, ok: bool, summary: str, seconds: float) -> None:
        with self._lock:
            row = self.rows[name]
            row.state, row.seconds, row.text = ("passed" if ok else "failed"), seconds, summary
            self._current = None
            self._refresh()
        if self._live is None:
            self.console.print(
                f"[{name}] {'passed' if ok else 'FAILED'} in {seconds:.1f}s: {summary}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )

    def skip(self, name: str, why: str) -> None:
        with self._lock:
            row = self.rows[name]
            row.state, row.text = "skipped", why
            self._refresh()
        if self._live is None:
            self.console.print(f"[{name}] skipped: {why}", highlight=False, markup=False, soft_wrap=True)
