"""One SQL implementation of :class:`RegistryStore` for SQLite and PostgreSQL. Statements are written
with ``?`` placeholders; the PostgreSQL adapter rewrites them. JSON columns are TEXT (portable)."""

from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from cloud_registry.errors import BackendError, Conflict, NotFound
from cloud_registry.store.accounts import AccountTables
from cloud_registry.store.aliases import AliasTables
from cloud_registry.store.base import STAGES, DeviceRow, ModelSummary, ModelVersion, RolloutRow
from cloud_registry.store.config_pushes import ConfigPushTables

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS versions(
        name TEXT NOT NULL, version BIGINT NOT NULL, sha256 TEXT NOT NULL, size BIGINT NOT NULL,
        envelope TEXT NOT NULL, artifact_uri TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        parent BIGINT, lineage TEXT NOT NULL, metrics TEXT NOT NULL, note TEXT NOT NULL,
        PRIMARY KEY(name, version))""",
    """CREATE TABLE IF NOT EXISTS stages(
        name TEXT NOT NULL, stage TEXT NOT NULL, version BIGINT NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY(name, stage))""",
    "CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS rollouts(
        id TEXT PRIMARY KEY, status TEXT NOT NULL, doc TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL, control TEXT, runner_seen DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS devices(
        device_id TEXT PRIMARY KEY, state TEXT NOT NULL, last_seen DOUBLE PRECISION NOT NULL, last_event TEXT)""",
]


def _j(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=False)


class SqlStore(AccountTables, AliasTables, ConfigPushTables, ABC):
    url: str

    def __init__(self) -> None:
        self._lock = threading.RLock()

    # -- backend hooks ----------------------------------------------------------------------------
    @abstractmethod
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement inside the current transaction and return its rows (if any)."""

    @abstractmethod
    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """Group statements atomically (and serialise writers)."""
        yield

    @abstractmethod
    def _is_integrity_error(self, exc: Exception) -> bool: ...

    def _init_schema(self) -> None:
        with self._transaction():
            for stmt in SCHEMA:
                self._execute(stmt)
            self._init_account_tables()
            self._init_alias_tables()
            self._init_config_push_tables()

    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock, self._transaction():
            return self._execute(sql, params)

    # -- models -------------------------------------------------------------------------------------
    def add_version(self, v: ModelVersion) -> None:
        try:
            with self._lock, self._transaction():
                latest = self._execute("SELECT MAX(version) FROM versions WHERE name = ?", (v.name,))[0][0]
                if latest is not None and v.version <= int(latest):
                    raise Conflict(f"{v.name} v{v.version} is not above the latest registered v{latest}")
                self._execute(
                    "INSERT INTO versions(name, version, sha256, size, envelope, artifact_uri, created_at, parent,"
                    " lineage, metrics, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        v.name,
                        v.version,
                        v.sha256,
                        v.size,
                        _j(v.envelope),
                        v.artifact_uri,
                        v.created_at,
                        v.parent,
                        _j(v.lineage),
                        _j(v.metrics),
                        v.note,
                    ),
                )
        except Conflict:
            raise
        except Exception as exc:
            if self._is_integrity_error(exc):
                raise Conflict(f"{v.name} v{v.version} is already registered") from exc
            raise BackendError(f"cannot register {v.name} v{v.version}: {exc}") from exc

    @staticmethod
    def _version(row: tuple[Any, ...]) -> ModelVersion:
        name, version, sha, size, env, uri, created, parent, lineage, metrics, note = row
        return ModelVersion(
            name,
            int(version),
            sha,
            int(size),
            json.loads(env),
            uri,
            float(created),
            None if parent is None else int(parent),
            json.loads(lineage),
            json.loads(metrics),
            note,
        )

    _COLS = "name, version, sha256, size, envelope, artifact_uri, created_at, parent, lineage, metrics, note"

    def get_version(self, name: str, version: int) -> ModelVersion:
        rows = self._q(f"SELECT {self._COLS} FROM versions WHERE name = ? AND version = ?", (name, version))
        if not rows:
            raise NotFound(f"model {name} v{version} is not registered")
        return self._version(rows[0])

    def list_versions(self, name: str) -> list[ModelVersion]:
        rows = self._q(f"SELECT {self._COLS} FROM versions WHERE name = ? ORDER BY version", (name,))
        return [self._version(r) for r in rows]

    def list_models(self) -> list[ModelSummary]:
        rows = self._q("SELECT name, COUNT(*), MAX(version) FROM versions GROUP BY name ORDER BY name")
        return [ModelSummary(n, int(c), int(mx), self.stages(n)) for n, c, mx in rows]

    def set_stage(self, name: str, stage: str, version: int, actor: str = "") -> None:
        """One of the two stages, an alias like any other (its moves recorded)."""
        if stage not in STAGES:
            raise Conflict(f"unknown stage {stage!r} (stages: {', '.join(STAGES)})")
        self.set_alias(name, stage, version, actor)

    def stages(self, name: str) -> dict[str, int]:
        """Every alias of ``name`` (the stages among them)."""
        return self.aliases(name)

    def _locked(self) -> threading.RLock:
        return self._lock

    # -- sequence ------------------------------------------------------------------------------------
    def next_sequence(self) -> int:
        """Strictly increasing. Floored by the clock in milliseconds, so a registry rebuilt from an
        empty database still issues sequences above what devices already accepted."""
        floor = int(time.time() * 1000)
        with self._lock, self._transaction():
            rows = self._execute("SELECT value FROM counters WHERE name = 'sequence'")
            current = int(rows[0][0]) if rows else 0
            nxt = max(current + 1, floor)
            if rows:
                self._execute("UPDATE counters SET value = ? WHERE name = 'sequence'", (nxt,))
            else:
                self._execute("INSERT INTO counters(name, value) VALUES ('sequence', ?)", (nxt,))
            return nxt

    # -- rollouts -------------------------------------------------------------------------------------
    @staticmethod
    def _rollout(row: tuple[Any, ...]) -> RolloutRow:
        rid, status, doc, created, updated, control, seen = row
        return RolloutRow(rid, status, json.loads(doc), float(created), float(updated), control, float(seen))

    _RCOLS = "id, status, doc, created_at, updated_at, control, runner_seen"

    def put_rollout(self, row: RolloutRow) -> None:
        try:
            self._q(
                f"INSERT INTO rollouts({self._RCOLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row.id, row.status, _j(row.doc), row.created_at, row.updated_at, row.control, row.runner_seen),
            )
        except Exception as exc:
            if self._is_integrity_error(exc):
                raise Conflict(f"rollout {row.id} exists") from exc
            raise BackendError(f"cannot store rollout {row.id}: {exc}") from exc

    def get_rollout(self, rollout_id: str) -> RolloutRow:
        rows = self._q(f"SELECT {self._RCOLS} FROM rollouts WHERE id = ?", (rollout_id,))
        if not rows:
            raise NotFound(f"rollout {rollout_id} does not exist")
        return self._rollout(rows[0])

    def list_rollouts(self, limit: int = 50) -> list[RolloutRow]:
        rows = self._q(f"SELECT {self._RCOLS} FROM rollouts ORDER BY created_at DESC LIMIT ?", (limit,))
        return [self._rollout(r) for r in rows]

    def save_rollout(
        self,
        rollout_id: str,
        status: str,
        doc: dict[str, Any],
        runner_seen: float | None = None,
        expect_updated_at: float | None = None,
    ) -> float | None:
        """Write the rollout; returns the ``updated_at`` written. With ``expect_updated_at``, only if the
        row is still the one the writer last read or wrote (a compare-and-set): None when another
        writer came between (the caller reloads)."""
        sets, params = "status = ?, doc = ?, updated_at = ?", [status, _j(doc), time.time()]
        if runner_seen is not None:
            sets += ", runner_seen = ?"
            params.append(runner_seen)
        where = "id = ?"
        params.append(rollout_id)
        if expect_updated_at is not None:
            where += " AND updated_at = ?"
            params.append(expect_updated_at)
        rows = self._q(f"UPDATE rollouts SET {sets} WHERE {where} RETURNING updated_at", params)
        return float(rows[0][0]) if rows else None

    def request_control(self, rollout_id: str, control: str) -> None:
        self.get_rollout(rollout_id)
        self._q("UPDATE rollouts SET control = ? WHERE id = ?", (control, rollout_id))

    def take_control(self, rollout_id: str) -> str | None:
        with self._lock, self._transaction():
            rows = self._execute("SELECT control FROM rollouts WHERE id = ?", (rollout_id,))
            if not rows or rows[0][0] is None:
                return None
            self._execute("UPDATE rollouts SET control = NULL WHERE id = ?", (rollout_id,))
            return str(rows[0][0])

    # -- fleet ------------------------------------------------------------------------------------------
    def upsert_device(self, device_id: str, state: dict[str, Any], last_seen: float) -> None:
        with self._lock, self._transaction():
            if self._execute("SELECT 1 FROM devices WHERE device_id = ?", (device_id,)):
                self._execute(
                    "UPDATE devices SET state = ?, last_seen = ? WHERE device_id = ?", (_j(state), last_seen, device_id)
                )
            else:
                self._execute(
                    "INSERT INTO devices(device_id, state, last_seen) VALUES (?, ?, ?)",
                    (device_id, _j(state), last_seen),
                )

    def record_event(self, device_id: str, event: dict[str, Any]) -> None:
        with self._lock, self._transaction():
            if self._execute("SELECT 1 FROM devices WHERE device_id = ?", (device_id,)):
                self._execute("UPDATE devices SET last_event = ? WHERE device_id = ?", (_j(event), device_id))
            else:
                self._execute(
                    "INSERT INTO devices(device_id, state, last_seen, last_event) VALUES (?, ?, ?, ?)",
                    (device_id, _j({}), 0.0, _j(event)),
                )

    def list_devices(self) -> list[DeviceRow]:
        rows = self._q("SELECT device_id, state, last_seen, last_event FROM devices ORDER BY device_id")
        return [DeviceRow(d, json.loads(s), float(ls), json.loads(le) if le else None) for d, s, ls, le in rows]
