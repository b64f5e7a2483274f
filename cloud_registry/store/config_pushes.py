"""The record of every remote config pushed (docs/remote-config.md): the version, the target, who
and when, and the signed document as published. Appended, never changed. Mixed into
:class:`~cloud_registry.store.sql.SqlStore`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from cloud_registry.errors import BackendError, Conflict

CONFIG_PUSH_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS config_pushes(
        version BIGINT PRIMARY KEY, target TEXT NOT NULL, actor TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL, note TEXT NOT NULL, envelope TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS config_pushes_target ON config_pushes(target, version)",
]

_INSERT = "INSERT INTO config_pushes(version, target, actor, at, note, envelope) VALUES (?, ?, ?, ?, ?, ?)"


@dataclass(frozen=True)
class ConfigPush:
    version: int
    #: ``device:ID`` or ``group:NAME``
    target: str
    actor: str
    at: float
    note: str
    #: the signed envelope as published (its body is the config document)
    envelope: dict[str, Any]

    @property
    def overlay(self) -> dict[str, Any]:
        config = self.envelope.get("body", {}).get("config", {})
        return config if isinstance(config, dict) else {}


class ConfigPushTables:
    """Pushed configs; the backend hooks are :class:`SqlStore`'s."""

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _locked(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _is_integrity_error(self, exc: Exception) -> bool:
        raise NotImplementedError

    def _init_config_push_tables(self) -> None:
        for stmt in CONFIG_PUSH_SCHEMA:
            self._execute(stmt)

    def record_config_push(self, push: ConfigPush) -> None:
        """Append ``push``; :class:`Conflict` when its version was recorded already."""
        row = (push.version, push.target, push.actor, push.at, push.note, json.dumps(push.envelope, sort_keys=True))
        try:
            with self._locked(), self._transaction():
                self._execute(_INSERT, row)
        except Exception as exc:
            if self._is_integrity_error(exc):
                raise Conflict(f"config version {push.version} is already recorded") from exc
            raise BackendError(f"cannot record config version {push.version}: {exc}") from exc

    def config_pushes(self, target: str | None = None, limit: int = 50) -> list[ConfigPush]:
        """The newest pushes first (to ``target`` only, when given)."""
        sql = "SELECT version, target, actor, at, note, envelope FROM config_pushes"
        params: tuple[Any, ...] = ()
        if target is not None:
            sql += " WHERE target = ?"
            params = (target,)
        rows = self._q(sql + " ORDER BY version DESC LIMIT ?", (*params, int(limit)))
        return [ConfigPush(int(v), str(t), str(a), float(at), str(n), json.loads(e)) for v, t, a, at, n, e in rows]
