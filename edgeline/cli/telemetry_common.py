"""Options shared by the telemetry commands (``ingest``, ``drift``, ``retrain``) beyond the ones every
registry or broker command takes (:mod:`edgeline.cli.options`: ``--home``/``--store``/
``--artifacts`` and the broker options).

The telemetry store is chosen by URL like the registry's: ``--db`` takes a path or
``sqlite:///path.db`` or ``postgresql://user@host/db[?schema=name]``. Without ``--db``, a
PostgreSQL registry (``--store postgresql://...``) keeps the telemetry in the same database, in the
schema ``<schema>_telemetry`` (``telemetry`` when the registry has none); otherwise it is
``HOME/telemetry.db``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import click

DB = click.option(
    "--db",
    "db",
    envvar="EDGELINE_TELEMETRY",
    default=None,
    metavar="PATH|URL",
    help="Telemetry store: a path, sqlite:///path.db or postgresql://user@host/db[?schema=name] "
    "(default: beside a PostgreSQL registry, else telemetry.db in HOME; env EDGELINE_TELEMETRY).",
)


def db_path(home: Path, db: str | Path | None) -> Path:
    """The SQLite file of a path-like ``--db`` (or the default in HOME)."""
    if db is None:
        return home / "telemetry.db"
    text = str(db)
    return Path(text[len("sqlite:///") :]) if text.startswith("sqlite:///") else Path(text)


def is_url(db: str | Path | None) -> bool:
    return db is not None and str(db).startswith(("postgresql://", "postgres://"))


def telemetry_url(home: Path, db: str | Path | None, store_url: str | None = None) -> str:
    """The telemetry store's URL from ``--db`` and the registry's ``--store``."""
    if is_url(db):
        return str(db)
    if db is None and store_url is not None and store_url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(store_url)
        query = dict(parse_qsl(parts.query))
        query["schema"] = f"{query['schema']}_telemetry" if query.get("schema") else "telemetry"
        return urlunsplit(parts._replace(query=urlencode(query)))
    return f"sqlite:///{db_path(home, db)}"


def telemetry_exists(url: str) -> bool:
    """False for a SQLite file that is not there (a PostgreSQL store is asked when opened)."""
    return not url.startswith("sqlite:///") or Path(url[len("sqlite:///") :]).exists()
