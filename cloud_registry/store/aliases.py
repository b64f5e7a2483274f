"""Aliases (MLflow-style names for versions: ``champion``, ``challenger``, ``staging``, ``production``,
any name) and the record of every move of one (who, when, from which version to which). The current
aliases live in the ``stages`` table (the two stages were the first aliases); every move is appended
to ``alias_moves`` and never changed. Mixed into :class:`~cloud_registry.store.sql.SqlStore`."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from cloud_registry.errors import NotFound, RegistryError

ALIAS_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS alias_moves(
        name TEXT NOT NULL, alias TEXT NOT NULL, version BIGINT, previous BIGINT,
        at DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL, note TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS alias_moves_name ON alias_moves(name, at)",
]
#: lower-case letters, digits, '_' and '-', starting with a letter; ``latest`` is the newest version
ALIAS_PATTERN = r"[a-z][a-z0-9_-]{0,31}"
_ALIAS = re.compile(ALIAS_PATTERN)
RESERVED = frozenset({"latest"})


@dataclass(frozen=True)
class AliasMove:
    """One move of an alias: set to ``version`` (from ``previous``), or removed (``version`` None)."""

    name: str
    alias: str
    version: int | None
    previous: int | None
    at: float
    actor: str
    note: str = ""


def check_alias(alias: str) -> str:
    if not _ALIAS.fullmatch(alias) or alias in RESERVED:
        raise RegistryError(
            f"bad alias {alias[:40]!r}: 1-32 of a-z, 0-9, '_' and '-', starting with a letter, not 'latest'",
            reason="bad_alias",
        )
    return alias


class AliasTables:
    """Aliases and their moves; the backend hooks are :class:`SqlStore`'s."""

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _locked(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def get_version(self, name: str, version: int) -> Any:
        raise NotImplementedError

    def _init_alias_tables(self) -> None:
        for stmt in ALIAS_SCHEMA:
            self._execute(stmt)

    def set_alias(self, name: str, alias: str, version: int, actor: str = "", note: str = "") -> int | None:
        """Point ``alias`` at ``name`` v``version``; returns the version it pointed at before (or None)."""
        check_alias(alias)
        self.get_version(name, version)  # NotFound for a version that is not registered
        now = time.time()
        with self._locked(), self._transaction():
            rows = self._execute("SELECT version FROM stages WHERE name = ? AND stage = ?", (name, alias))
            previous = int(rows[0][0]) if rows else None
            self._execute("DELETE FROM stages WHERE name = ? AND stage = ?", (name, alias))
            self._execute(
                "INSERT INTO stages(name, stage, version, updated_at) VALUES (?, ?, ?, ?)", (name, alias, version, now)
            )
            self._execute(
                "INSERT INTO alias_moves(name, alias, version, previous, at, actor, note) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, alias, version, previous, now, actor, note),
            )
        return previous

    def delete_alias(self, name: str, alias: str, actor: str = "", note: str = "") -> int:
        """Remove ``alias`` from ``name``; returns the version it pointed at."""
        check_alias(alias)
        with self._locked(), self._transaction():
            rows = self._execute("SELECT version FROM stages WHERE name = ? AND stage = ?", (name, alias))
            if not rows:
                raise NotFound(f"model {name} has no alias {alias!r}")
            previous = int(rows[0][0])
            self._execute("DELETE FROM stages WHERE name = ? AND stage = ?", (name, alias))
            self._execute(
                "INSERT INTO alias_moves(name, alias, version, previous, at, actor, note) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, alias, None, previous, time.time(), actor, note),
            )
        return previous

    def aliases(self, name: str) -> dict[str, int]:
        return {a: int(v) for a, v in self._q("SELECT stage, version FROM stages WHERE name = ?", (name,))}

    def alias_moves(self, name: str, alias: str | None = None) -> list[AliasMove]:
        """Every move of ``name``'s aliases (or of one), oldest first."""
        sql = "SELECT name, alias, version, previous, at, actor, note FROM alias_moves WHERE name = ?"
        params: tuple[Any, ...] = (name,)
        if alias is not None:
            sql += " AND alias = ?"
            params += (alias,)
        rows = self._q(sql + " ORDER BY at", params)
        return [
            AliasMove(
                str(n), str(a), None if v is None else int(v), None if p is None else int(p), float(t), str(w), str(x)
            )
            for n, a, v, p, t, w, x in rows
        ]
