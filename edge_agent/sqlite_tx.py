"""One write transaction on a device's SQLite file (the outbox, the feedback store): ``BEGIN
IMMEDIATE`` ... ``COMMIT``; on any failure a rollback, and an SQLite error (disk full, I/O error)
raised as the store's own error, so nothing of a failed transaction stays and callers see one type."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress


@contextmanager
def write_transaction(
    db: sqlite3.Connection, error: Callable[[sqlite3.Error], Exception], *, synchronous: str | None = None
) -> Iterator[sqlite3.Connection]:
    """``synchronous``: ``FULL`` or ``NORMAL`` for this transaction (None: the connection's)."""
    try:
        if synchronous is not None:
            db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("BEGIN IMMEDIATE")
        yield db
        db.execute("COMMIT")
    except BaseException as exc:
        if db.in_transaction:
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise error(exc) from exc
        raise
