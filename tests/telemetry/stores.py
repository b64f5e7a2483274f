"""The telemetry store on both backends: SQLite in the test's directory, PostgreSQL at
127.0.0.1:5432 database ``test`` (trust auth) in a throwaway schema per test, so tests never collide."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cloud_registry.telemetry.store import TelemetryStore, open_telemetry_store

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", "postgresql"]


def pg_url() -> str:
    """A URL with a fresh schema; fails the test (never skips it) when PostgreSQL is not there."""
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            pass
    except Exception as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL}: {exc}")
    return f"{PG_URL}?schema=tel_{uuid.uuid4().hex[:12]}"


def store_url(backend: str, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'telemetry.db'}" if backend == "sqlite" else pg_url()


def drop(store: TelemetryStore) -> None:
    drop_schema = getattr(store, "drop_schema", None)
    if drop_schema is not None:
        drop_schema()
    store.close()


@contextmanager
def opened(url: str, **kw: float) -> Iterator[TelemetryStore]:
    """Open (and at the end drop, on PostgreSQL) the store at ``url``."""
    s = open_telemetry_store(url, **kw)
    try:
        yield s
    finally:
        drop(s)
