"""The console's tables in the registry store: accounts (password hashes only), sessions (the hash of
the session token, never the token), the audit log of every action (who, what, when, outcome) and
the build reports of registered versions (their files are artifacts; the table holds their sha256).
One SQL implementation for SQLite and PostgreSQL, mixed into :class:`~cloud_registry.store.sql.SqlStore`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from cloud_registry.errors import BackendError, Conflict, NotFound
from cloud_registry.store.base import ROLES, AuditRow, SessionRow, UserRow

ACCOUNT_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS console_users(
        username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, role TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS console_sessions(
        token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, csrf TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS audit_log(
        ts DOUBLE PRECISION NOT NULL, username TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
        outcome TEXT NOT NULL, detail TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS audit_log_ts ON audit_log(ts)",
    """CREATE TABLE IF NOT EXISTS build_reports(
        name TEXT NOT NULL, version BIGINT NOT NULL, kind TEXT NOT NULL, sha256 TEXT NOT NULL,
        PRIMARY KEY(name, version, kind))""",
]
#: the files of a build report the registry keeps (BUNDLE/report/...), by kind
REPORT_KINDS = ("png", "json")


class AccountTables:
    """Users, sessions and the audit log; the backend hooks are :class:`SqlStore`'s."""

    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _is_integrity_error(self, exc: Exception) -> bool:
        raise NotImplementedError

    def _init_account_tables(self) -> None:
        for stmt in ACCOUNT_SCHEMA:
            self._execute(stmt)

    # -- users ---------------------------------------------------------------------------------------
    def add_user(self, user: UserRow) -> None:
        if user.role not in ROLES:
            raise Conflict(f"unknown role {user.role!r} (roles: {', '.join(ROLES)})")
        try:
            self._q(
                "INSERT INTO console_users(username, password_hash, role, created_at) VALUES (?, ?, ?, ?)",
                (user.username, user.password_hash, user.role, user.created_at),
            )
        except Exception as exc:
            if self._is_integrity_error(exc):
                raise Conflict(f"user {user.username} exists") from exc
            raise BackendError(f"cannot add user {user.username}: {exc}") from exc

    def get_user(self, username: str) -> UserRow:
        rows = self._q(
            "SELECT username, password_hash, role, created_at FROM console_users WHERE username = ?", (username,)
        )
        if not rows:
            raise NotFound(f"user {username} does not exist")
        u, h, r, c = rows[0]
        return UserRow(u, h, r, float(c))

    def list_users(self) -> list[UserRow]:
        rows = self._q("SELECT username, password_hash, role, created_at FROM console_users ORDER BY username")
        return [UserRow(u, h, r, float(c)) for u, h, r, c in rows]

    def remove_user(self, username: str) -> None:
        """Remove the account and end its sessions."""
        with self._transaction():
            if not self._execute("SELECT 1 FROM console_users WHERE username = ?", (username,)):
                raise NotFound(f"user {username} does not exist")
            self._execute("DELETE FROM console_sessions WHERE username = ?", (username,))
            self._execute("DELETE FROM console_users WHERE username = ?", (username,))

    # -- sessions ------------------------------------------------------------------------------------
    def put_session(self, s: SessionRow) -> None:
        self._q(
            "INSERT INTO console_sessions(token_hash, username, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
            (s.token_hash, s.username, s.csrf, s.created_at, s.expires_at),
        )

    def get_session(self, token_hash: str, now: float) -> SessionRow | None:
        """The live session with this token hash (None when unknown, expired or its user was removed)."""
        rows = self._q(
            "SELECT s.token_hash, s.username, s.csrf, s.created_at, s.expires_at FROM console_sessions s"
            " JOIN console_users u ON u.username = s.username WHERE s.token_hash = ? AND s.expires_at > ?",
            (token_hash, now),
        )
        if not rows:
            return None
        t, u, c, created, expires = rows[0]
        return SessionRow(t, u, c, float(created), float(expires))

    def delete_session(self, token_hash: str) -> None:
        self._q("DELETE FROM console_sessions WHERE token_hash = ?", (token_hash,))

    def purge_sessions(self, now: float) -> None:
        self._q("DELETE FROM console_sessions WHERE expires_at <= ?", (now,))

    # -- audit ---------------------------------------------------------------------------------------
    def add_audit(self, row: AuditRow) -> None:
        self._q(
            "INSERT INTO audit_log(ts, username, action, target, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (row.ts, row.username, row.action, row.target, row.outcome, json.dumps(row.detail, sort_keys=True)),
        )

    def list_audit(self, limit: int = 200) -> list[AuditRow]:
        rows = self._q(
            "SELECT ts, username, action, target, outcome, detail FROM audit_log ORDER BY ts DESC LIMIT ?", (limit,)
        )
        return [AuditRow(float(ts), u, a, t, o, json.loads(d)) for ts, u, a, t, o, d in rows]

    # -- build reports -------------------------------------------------------------------------------
    def put_build_report(self, name: str, version: int, kind: str, sha256: str) -> None:
        if kind not in REPORT_KINDS:
            raise Conflict(f"unknown report kind {kind!r} (kinds: {', '.join(REPORT_KINDS)})")
        self._q(
            "INSERT INTO build_reports(name, version, kind, sha256) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(name, version, kind) DO UPDATE SET sha256 = excluded.sha256",
            (name, version, kind, sha256),
        )

    def build_reports(self, name: str) -> dict[int, dict[str, str]]:
        """The report files kept for each version of ``name``: version -> kind -> sha256."""
        out: dict[int, dict[str, str]] = {}
        for version, kind, sha in self._q(
            "SELECT version, kind, sha256 FROM build_reports WHERE name = ? ORDER BY version", (name,)
        ):
            out.setdefault(int(version), {})[str(kind)] = str(sha)
        return out
