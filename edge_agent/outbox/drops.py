"""The outbox's drop policy, inside the store's write transactions: over the cap the oldest
droppable messages go (``dropped.<kind>.cap``); on a full disk the oldest quarter of them
(``dropped.<kind>.disk_full``). Deployment events are never dropped here."""

from __future__ import annotations

import logging
import sqlite3

from edge_agent.outbox.messages import DROPPABLE
from edge_agent.outbox.sqlite import bump

log = logging.getLogger(__name__)

_MARKS = ",".join("?" * len(DROPPABLE))


class Shedder:
    """Keeps the queued bytes under ``max_bytes``; logs the 1st, 10th, 100th, ... time it drops."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.times = 0

    def shed(self, db: sqlite3.Connection, total: int) -> int:
        """Drop the oldest droppable rows until ``total`` fits the cap; returns the bytes freed."""
        freed = 0
        while total - freed > self.max_bytes:
            rows = db.execute(
                f"SELECT id, size, kind FROM messages WHERE kind IN ({_MARKS}) ORDER BY id LIMIT 64", DROPPABLE
            ).fetchall()
            if not rows:
                log.warning("outbox holds %d bytes of never-dropped events, over its cap of %d", total, self.max_bytes)
                break
            for row_id, size, kind in rows:
                if total - freed <= self.max_bytes:
                    break
                db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
                bump(db, f"dropped.{kind}.cap", 1)
                freed += size
        if freed:
            self.times += 1
            n = self.times
            if n == 1 or (n % 10 == 0 and str(n).rstrip("0") == "1"):  # 1st, 10th, 100th, ... time
                cap = self.max_bytes
                log.warning("outbox over its cap of %d bytes: dropping oldest telemetry (%d times so far)", cap, n)
        return freed


def drop_oldest_quarter(db: sqlite3.Connection) -> list[tuple[int, int, str]]:
    """The disk is full: delete the oldest quarter of the droppable rows (at least one); returns
    the (id, size, kind) of those deleted, none when there is nothing to drop."""
    rows = db.execute(f"SELECT id, size, kind FROM messages WHERE kind IN ({_MARKS}) ORDER BY id", DROPPABLE).fetchall()
    drop = rows[: max(1, len(rows) // 4)] if rows else []
    for row_id, _, kind in drop:
        db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
        bump(db, f"dropped.{kind}.disk_full", 1)
    return [(int(r[0]), int(r[1]), str(r[2])) for r in drop]
