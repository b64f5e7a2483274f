"""The telemetry store on PostgreSQL (psycopg 3): ``postgresql://user@host:5432/db[?schema=name]``
(the registry's URL scheme; ``schema`` keeps the tables in their own schema, created if missing).

Windows live in a table partitioned by range of window start (declarative partitioning), one
partition per ``partition_s`` (a day by default), created as a batch first needs it. The retention
drops whole partitions once all they can hold is older than ``retention_s``: a window is kept at
least the retention and at most one partition span longer. Dropping a partition is instant and
leaves no dead rows to vacuum, which is why the windows are partitioned at all.

The key of a partitioned table must include the partition column, so a window is unique by
``(key, start)``: a redelivered window (same payload) is stored once; a device that reused a key
for a window with another start would have both stored.

Batches are one ``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING RETURNING key`` per
table: one round trip for any number of windows.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from cloud_registry.errors import BackendError
from cloud_registry.store.postgres import split_schema
from cloud_registry.telemetry.store import INSERT_EVENT, INSERT_WINDOW, Row, TelemetryStore

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS windows(
        key TEXT NOT NULL, device TEXT NOT NULL, grp TEXT NOT NULL DEFAULT '', model TEXT NOT NULL,
        version BIGINT NOT NULL, sha256 TEXT NOT NULL, start DOUBLE PRECISION NOT NULL,
        end_ DOUBLE PRECISION NOT NULL, frames BIGINT NOT NULL, input_drifted INTEGER NOT NULL,
        body TEXT NOT NULL, received DOUBLE PRECISION NOT NULL, PRIMARY KEY (key, start))
        PARTITION BY RANGE (start)""",
    "CREATE INDEX IF NOT EXISTS windows_by_model ON windows(model, version, grp, start)",
    "CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS episodes(
        kind TEXT NOT NULL, scope TEXT NOT NULL, active INTEGER NOT NULL, opened DOUBLE PRECISION NOT NULL,
        closed DOUBLE PRECISION, state TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (kind, scope))""",
    "CREATE TABLE IF NOT EXISTS seen(device TEXT PRIMARY KEY, last DOUBLE PRECISION NOT NULL)",
    """CREATE TABLE IF NOT EXISTS events(
        event_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, kind TEXT NOT NULL, sequence BIGINT NOT NULL,
        ts DOUBLE PRECISION NOT NULL, body TEXT NOT NULL, received DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_by_device ON events(device_id, sequence, ts)",
]
_WINDOW_TYPES = ("text", "text", "text", "text", "int8", "text", "float8", "float8", "int8", "int4", "text", "float8")
_EVENT_TYPES = ("text", "text", "text", "int8", "float8", "text", "float8")
_PART = re.compile(r"^windows_p(\d+)$")
#: serialises partition DDL between workers (any constant; the registry uses 7146001)
_DDL_LOCK = 7146002


def _bulk(sql: str, types: Sequence[str]) -> str:
    """``INSERT INTO t VALUES (?,..) ON CONFLICT DO NOTHING`` as one statement over arrays."""
    table = sql.split()[2]
    arrays = ", ".join(f"%b::{t}[]" for t in types)  # binary: no per-character escaping of the JSON bodies
    key = "key" if table == "windows" else "event_id"
    return f"INSERT INTO {table} SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING RETURNING {key}"


class PostgresTelemetryStore(TelemetryStore):
    backend = "postgresql"

    def __init__(self, url: str, *, retention_s: float | None = None, partition_s: float = 86400.0) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise BackendError("PostgreSQL needs psycopg: pip install 'edgeline[postgres]'") from exc
        import threading

        if not partition_s >= 60:
            raise BackendError(f"partition span {partition_s!r} s: at least 60 s")
        self._psycopg = psycopg
        self.url = url
        self.retention_s = retention_s
        self.partition_s = float(partition_s)
        self._lock = threading.RLock()
        dsn, self.schema = split_schema(url)
        self.path = None  # type: ignore[assignment]
        try:
            self._pg: Any = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
            if self.schema:
                self._pg.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                self._pg.execute(f'SET search_path TO "{self.schema}"')
            with self._pg.transaction():
                self._pg.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
                for stmt in _SCHEMA:
                    self._pg.execute(stmt)
        except psycopg.Error as exc:
            raise BackendError(f"cannot open the telemetry store on PostgreSQL ({dsn.split('@')[-1]}): {exc}") from exc
        self._parts: set[int] = set(self.partitions())
        self._bulk_windows = _bulk(INSERT_WINDOW, _WINDOW_TYPES)
        self._bulk_events = _bulk(INSERT_EVENT, _EVENT_TYPES)

    # -- backend hooks ------------------------------------------------------------------------------------
    def _run(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        cur = self._pg.execute(sql.replace("?", "%s"), tuple(args))
        return list(cur.fetchall()) if cur.description is not None else []

    @contextmanager
    def _tx(self) -> Iterator[None]:
        with self._pg.transaction():
            yield

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (self._psycopg.Error,)

    def _data_errors(self) -> tuple[type[BaseException], ...]:
        return (self._psycopg.DataError, OverflowError)

    def _insert(self, sql: str, rows: list[Row], key_of: int = 0) -> list[bool]:
        bulk = self._bulk_windows if sql == INSERT_WINDOW else self._bulk_events
        columns = [list(col) for col in zip(*rows, strict=True)]
        returned = {r[0] for r in self._pg.execute(bulk, columns).fetchall()}
        out = []
        for row in rows:  # a key twice in one batch: the first is the new one
            out.append(row[key_of] in returned)
            returned.discard(row[key_of])
        return out

    # -- partitions ---------------------------------------------------------------------------------------
    def _lower(self, start: float) -> int:
        return int(math.floor(start / self.partition_s) * self.partition_s)

    def partitions(self) -> list[int]:
        """The lower bounds (epoch seconds) of the window partitions that exist, oldest first."""
        rows = self._run(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'windows'::regclass"
        )
        found = (_PART.match(str(r[0])) for r in rows)
        return sorted(int(m.group(1)) for m in found if m)

    def _prepare(self, rows: list[Row]) -> None:
        need = {self._lower(float(r[6])) for r in rows} - self._parts
        if not need:
            return
        with self._pg.transaction():
            self._pg.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
            for lo in sorted(need):
                if lo < 0:
                    raise BackendError(f"window start {lo} before 1970: refused")
                hi = lo + int(self.partition_s)
                self._pg.execute(
                    f'CREATE TABLE IF NOT EXISTS "windows_p{lo}" PARTITION OF windows FOR VALUES FROM ({lo}) TO ({hi})'
                )
        self._parts |= need

    def store_batch(self, *args: Any, **kwargs: Any) -> tuple[list[bool], list[bool]]:
        try:
            return super().store_batch(*args, **kwargs)
        except BackendError as exc:
            if "no partition of relation" not in str(exc):
                raise
            self._parts = set(self._wrap("query", self.partitions))  # another worker's retention dropped one
            return super().store_batch(*args, **kwargs)

    def retain(self, now: float | None = None) -> int:
        """Drop the partitions whose every window started before the retention's cutoff; returns
        how many windows went with them."""
        if self.retention_s is None:
            return 0
        cutoff = (time.time() if now is None else now) - self.retention_s

        def drop() -> int:
            removed = 0
            with self._pg.transaction():
                self._pg.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
                for lo in self.partitions():
                    if lo + self.partition_s <= cutoff:
                        removed += int(self._run(f'SELECT COUNT(*) FROM "windows_p{lo}"')[0][0])
                        self._run(f'DROP TABLE "windows_p{lo}"')
                        self._parts.discard(lo)
            return removed

        return self._wrap("retention", drop)

    def close(self) -> None:
        with self._lock:
            self._pg.close()

    def drop_schema(self) -> None:
        """Remove the store's schema and everything in it (tests)."""
        if self.schema:
            self._wrap("query", self._run, f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
