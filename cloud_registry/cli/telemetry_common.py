"""Options and helpers shared by the telemetry commands (``ingest``, ``drift``, ``retrain``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

HOME = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="EDGELINE_HOME",
    default=Path(".edgeline"),
    show_default=True,
    help="edgeline home: registry.db, artifacts/ and telemetry.db live here (env EDGELINE_HOME).",
)
DB = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Telemetry database (default: telemetry.db in HOME).",
)


def db_path(home: Path, db: Path | None) -> Path:
    return db if db is not None else home / "telemetry.db"


@contextmanager
def registry_at(home: Path) -> Iterator[Any]:
    """The registry under HOME, or None when there is none yet."""
    if not (home / "registry.db").exists():
        yield None
        return
    from cloud_registry.registry import Registry, RegistryPaths

    paths = RegistryPaths(home)
    reg = Registry.open(paths.store_url, paths.artifacts_url)
    try:
        yield reg
    finally:
        reg.close()
