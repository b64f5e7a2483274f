"""The outbox's SQLite file: its schema (migrated in place), opening it in WAL mode with a
write-ahead log sized to the cap, moving a corrupt file aside, one write transaction, counters."""

from __future__ import annotations

import logging
import sqlite3
import time
from contextlib import AbstractContextManager
from pathlib import Path

from edge_agent.errors import OutboxError
from edge_agent.sqlite_tx import write_transaction

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    sends INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_order ON messages(priority, id);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state(name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""

SET_STATE = "INSERT INTO state(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value"


def disk_full(exc: BaseException) -> bool:
    """``exc`` (an :class:`OutboxError`) was caused by a full disk."""
    cause = exc.__cause__
    return isinstance(cause, sqlite3.OperationalError) and "full" in str(cause).lower()


def connect(path: Path, max_bytes: int) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    # keep the write-ahead log in proportion to the cap: by default it grows to 4 MB and stays
    # there, more than the whole queue of a small device
    pages = max(32, min(1000, max_bytes // (4 * 4096)))
    db.execute(f"PRAGMA wal_autocheckpoint={pages}")
    db.execute(f"PRAGMA journal_size_limit={pages * 4096 * 2}")
    db.executescript(SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
    if "sends" not in columns:  # an outbox written before the end-to-end acknowledgement
        db.execute("ALTER TABLE messages ADD COLUMN sends INTEGER NOT NULL DEFAULT 0")
    db.execute("PRAGMA quick_check").fetchone()
    return db


def open_db(path: Path, max_bytes: int) -> sqlite3.Connection:
    """Open (or create) the outbox at ``path``; a file that is not a database any more is moved
    aside (``<name>.corrupt-<time>``, counted as ``corrupt.replaced``) and a fresh one started."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return connect(path, max_bytes)
    except sqlite3.DatabaseError as exc:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        log.error("outbox %s is unreadable (%s); moved aside to %s, starting a new one", path, exc, aside)
        try:
            path.replace(aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            db = connect(path, max_bytes)
        except (OSError, sqlite3.Error) as exc2:
            raise OutboxError(f"cannot open the outbox {path}: {exc2}") from exc2
        bump(db, "corrupt.replaced", 1)
        return db
    except OSError as exc:
        raise OutboxError(f"cannot open the outbox {path}: {exc}") from exc


def bump(db: sqlite3.Connection, name: str, n: int) -> None:
    db.execute(
        "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
        (name, n, n),
    )


def transaction(db: sqlite3.Connection, what: str) -> AbstractContextManager[sqlite3.Connection]:
    """One write transaction; every SQLite failure (disk full, I/O error) becomes an OutboxError
    and nothing of the transaction stays."""
    return write_transaction(db, lambda exc: OutboxError(f"outbox {what} failed: {exc}"))
