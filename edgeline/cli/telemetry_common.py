"""Options shared by the telemetry commands (``ingest``, ``drift``, ``retrain``) beyond the ones every
registry or broker command takes (:mod:`edgeline.cli.options`: ``--home``/``--store``/
``--artifacts`` and the broker options)."""

from __future__ import annotations

from pathlib import Path

import click

DB = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Telemetry database (default: telemetry.db in HOME).",
)


def db_path(home: Path, db: Path | None) -> Path:
    return db if db is not None else home / "telemetry.db"
