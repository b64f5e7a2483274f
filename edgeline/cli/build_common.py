"""Pieces the build commands (``dataset``, ``train``, ``import``) share: rich progress for the pipeline
hook and small option parsers. Errors are mapped once, by the root group (:mod:`edgeline.cli.errors`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from converters.pipeline import ProgressHook

err_console = Console(stderr=True)


class RichHook(ProgressHook):
    """Pipeline stages as rich progress bars on stderr (stdout stays clean for ``--json``)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None

    def stage(self, name: str, total: int | None = None) -> None:
        if self.task is not None:
            t = self.progress.tasks[self.task]
            self.progress.update(self.task, completed=t.total if t.total is not None else 1, total=t.total or 1)
        self.task = self.progress.add_task(name, total=total)

    def advance(self, n: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, n)

    def close(self) -> None:
        self.stage("done", 1)
        self.advance(1)


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[RichHook | None]:
    if not enabled:
        yield None
        return
    cols = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*cols, console=err_console, transient=False) as bars:
        hook = RichHook(bars)
        yield hook
        hook.close()


def validation_message(exc: ValueError) -> str:
    """The first problem of a pydantic ValidationError as 'field: message' (plain str otherwise)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ())) or "value"
        return f"{loc}: {first.get('msg', exc)}"
    return str(exc)


def parse_size(value: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT, e.g. 64x56") from exc
    if not (1 <= w <= 4096 and 1 <= h <= 4096):
        raise click.BadParameter("width and height must be between 1 and 4096")
    return w, h


def parse_floats(value: str, n: int | None = None, what: str = "values") -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value.split(","))
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: {what} must be comma-separated numbers") from exc
    if n is not None and len(out) != n:
        raise click.BadParameter(f"{value!r}: expected {n} comma-separated numbers")
    return out


def parse_params(items: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as JSON when they can be (``64``, ``[64, 32]``, ``true``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="--param")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = tuple(value) if isinstance(value, list) else value
    return out


def echo_json(doc: dict[str, Any]) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))


def bundle_summary(result: Any, **extra: Any) -> dict[str, Any]:
    """What ``train --json`` and ``import --json`` print for a written bundle (``extra``: their own)."""
    return {
        "ok": True,
        "bundle": str(result.bundle_dir),
        "report": str(result.report_json),
        "quantization": result.quantization.to_dict(),
        "gate": result.gate.to_dict(),
        "metrics": result.metrics,
        **extra,
    }
