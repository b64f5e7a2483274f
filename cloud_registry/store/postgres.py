"""PostgreSQL backend (psycopg 3). ``postgresql://user@host:5432/db?schema=name`` keeps the tables in
their own schema (created if missing), which is how tests use a throwaway schema."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from cloud_registry.errors import BackendError
from cloud_registry.store.sql import SqlStore

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def split_schema(url: str) -> tuple[str, str | None]:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    schema = query.pop("schema", None)
    if schema is not None and not _SCHEMA_NAME.match(schema):
        raise BackendError(f"invalid schema name {schema!r}: lowercase letters, digits and '_'")
    return urlunsplit(parts._replace(query=urlencode(query))), schema


class PostgresStore(SqlStore):
    def __init__(self, url: str) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError as exc:
            raise BackendError("PostgreSQL needs psycopg: pip install 'edgeline[postgres]'") from exc
        self._psycopg = psycopg
        self.url = url
        self._dsn, self.schema = split_schema(url)
        self._db = self._connect()
        self._depth = 0
        self._init_schema()

    def _connect(self, timeout: int = 10) -> Any:
        psycopg = self._psycopg
        db = None
        try:
            db = psycopg.connect(self._dsn, autocommit=True, connect_timeout=timeout)
            if self.schema:
                db.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                db.execute(f'SET search_path TO "{self.schema}"')
        except psycopg.Error as exc:
            if db is not None:
                db.close()
            raise BackendError(f"cannot connect to PostgreSQL ({self._dsn.split('@')[-1]}): {exc}") from exc
        return db

    def _reconnect_if_lost(self) -> None:
        """A connection the server or the network dropped is opened again at the next statement
        outside a transaction (a long-running reader such as the console outlives an outage)."""
        if self._depth == 0 and (self._db.closed or self._db.broken):
            with self._lock:
                if self._db.closed or self._db.broken:
                    self._db.close()
                    self._db = self._connect(timeout=3)

    def _failed(self, exc: Exception) -> None:
        """An operational error (the server or the network) leaves the connection to be opened again."""
        if isinstance(exc, self._psycopg.OperationalError) and not self._db.closed:
            self._db.close()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._reconnect_if_lost()
        try:
            cur = self._db.execute(sql.replace("?", "%s"), tuple(params))
            return list(cur.fetchall()) if cur.description is not None else []
        except self._psycopg.IntegrityError:
            raise
        except self._psycopg.Error as exc:
            self._failed(exc)
            raise BackendError(f"PostgreSQL error: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            if self._depth:
                yield
                return
            self._reconnect_if_lost()
            self._depth = 1
            try:
                with self._db.transaction():
                    # serialise writers across processes, like SQLite's BEGIN IMMEDIATE
                    self._db.execute("SELECT pg_advisory_xact_lock(7146001)")
                    yield
            except self._psycopg.Error as exc:
                if isinstance(exc, self._psycopg.IntegrityError):
                    raise
                self._failed(exc)
                raise BackendError(f"PostgreSQL transaction failed: {exc}") from exc
            finally:
                self._depth = 0

    def _is_integrity_error(self, exc: Exception) -> bool:
        return isinstance(exc, self._psycopg.IntegrityError)

    def drop_schema(self) -> None:
        """Remove the store's schema and everything in it (tests)."""
        if self.schema:
            self._db.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def close(self) -> None:
        self._db.close()
