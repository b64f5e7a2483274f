"""Where telemetry windows live in the cloud: one SQLite database (WAL), windows keyed by their
idempotency key, indexed by model, version, group and time.

Only what the window carries is stored: the device is its pseudonym, never the id in the MQTT topic.
The database also keeps the ingest counters and the alert episodes (see :mod:`.alerts`), so a
restarted ingest service neither stores a window twice nor fires an alert twice.

The deployment events of the devices (``edgeline.event/1``, keyed by ``event_id``) are kept in their
own table, so the ingest can confirm them end to end as it confirms windows. An event names its device
(the fleet view knows it anyway) and carries no inspection data.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cloud_registry.errors import BackendError
from edge_agent.errors import ProtocolError
from edgeline.core.protocol.canonical import canonical_json
from edgeline.core.protocol.delivery import DeviceEvent
from edgeline.core.protocol.telemetry import STAT_NAMES, TelemetryWindow, parse_window

_SCHEMA = """
CREATE TABLE IF NOT EXISTS windows(
    key TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    grp TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    start REAL NOT NULL,
    end_ REAL NOT NULL,
    frames INTEGER NOT NULL,
    input_drifted INTEGER NOT NULL,
    body TEXT NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS windows_by_model ON windows(model, version, grp, start);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS episodes(
    kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    active INTEGER NOT NULL,
    opened REAL NOT NULL,
    closed REAL,
    state TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (kind, scope)
);
CREATE TABLE IF NOT EXISTS seen(device TEXT PRIMARY KEY, last REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events(
    event_id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    ts REAL NOT NULL,
    body TEXT NOT NULL,
    received REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_device ON events(device_id, sequence, ts);
"""

_INSERT = "INSERT OR IGNORE INTO windows VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
_INSERT_EVENT = "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?)"


@dataclass(frozen=True)
class StoredWindow:
    window: TelemetryWindow
    received: float


def _input_drifted(w: TelemetryWindow) -> int:
    return int(any(d.drifted for k, d in w.drift.items() if k in (*STAT_NAMES, "confidence", "anomaly_score")))


class TelemetryStore:
    """Thread-safe; one connection guarded by a lock (writes are short)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise BackendError(f"cannot open the telemetry store {self.path}: {exc}") from exc
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _row(self, w: TelemetryWindow, received: float, raw: bytes | None = None) -> tuple[object, ...]:
        body = (raw if raw is not None else canonical_json(w.to_body())).decode("utf-8")
        m = w.model
        head = (w.key, w.device, w.group or "", m.name, m.version, m.sha256, w.start, w.end, w.frames)
        return (*head, _input_drifted(w), body, received)

    def add(self, window: TelemetryWindow, received: float | None = None, raw: bytes | None = None) -> bool:
        """Store a window; False when its key is already stored (a redelivery). ``raw``: the payload
        the window was validated from, stored as is (it parses to the same window). One statement in
        autocommit: durable (WAL) when it returns, the cheapest write SQLite offers per window."""
        row = self._row(window, time.time() if received is None else received, raw)
        with self._lock:
            try:
                new = self._db.execute(_INSERT, row).rowcount == 1
                if not new:
                    self._bump(self._db, "duplicates", 1)
            except sqlite3.Error as exc:
                raise BackendError(f"telemetry store write failed: {exc}") from exc
        return new

    def add_event(self, event: DeviceEvent, raw: bytes, received: float | None = None) -> bool:
        """Store a deployment event; False when its ``event_id`` is already stored (a redelivery)."""
        row = (event.event_id, event.device_id, event.kind.value, event.sequence, event.ts)
        body = raw.decode("utf-8")
        with self._lock:
            try:
                cur = self._db.execute(_INSERT_EVENT, (*row, body, time.time() if received is None else received))
                new = cur.rowcount == 1
                if not new:
                    self._bump(self._db, "events.duplicates", 1)
            except sqlite3.Error as exc:
                raise BackendError(f"event store write failed: {exc}") from exc
        return new

    def event_ids(self, device_id: str | None = None) -> set[str]:
        with self._lock:
            if device_id is None:
                return {r[0] for r in self._db.execute("SELECT event_id FROM events")}
            return {r[0] for r in self._db.execute("SELECT event_id FROM events WHERE device_id = ?", (device_id,))}

    def add_many(
        self, windows: Iterable[TelemetryWindow | tuple[TelemetryWindow, bytes | None]], received: float | None = None
    ) -> list[bool]:
        """Store windows in one transaction; returns, per window, whether it was new."""
        now = time.time() if received is None else received
        out: list[bool] = []
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                for item in windows:
                    w, raw = item if isinstance(item, tuple) else (item, None)
                    row = self._row(w, now, raw)
                    cur = db.execute(_INSERT, row)
                    out.append(cur.rowcount == 1)
                self._bump(db, "duplicates", len(out) - sum(out))
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise BackendError(f"telemetry store write failed: {exc}") from exc
        return out

    @staticmethod
    def _bump(db: sqlite3.Connection, name: str, n: int) -> None:
        if n:
            db.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
                (name, n, n),
            )

    def bump(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._bump(self._db, name, n)

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT name, value FROM counters").fetchall())

    def count(self, model: str | None = None) -> int:
        with self._lock:
            if model is None:
                return int(self._db.execute("SELECT COUNT(*) FROM windows").fetchone()[0])
            return int(self._db.execute("SELECT COUNT(*) FROM windows WHERE model = ?", (model,)).fetchone()[0])

    def keys(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT key FROM windows")}

    def models(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT model FROM windows ORDER BY model")]

    def versions(self, model: str) -> list[int]:
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT version FROM windows WHERE model = ? ORDER BY version", (model,))
            return [int(r[0]) for r in rows]

    def windows(
        self,
        model: str,
        version: int | None = None,
        group: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> Iterator[StoredWindow]:
        """Windows of a model (optionally one version, group and time range), oldest first."""
        sql = "SELECT body, received FROM windows WHERE model = ?"
        args: list[object] = [model]
        for clause, value in (
            ("version = ?", version),
            ("grp = ?", group),
            ("start >= ?", since),
            ("end_ <= ?", until),
        ):
            if value is not None:
                sql += f" AND {clause}"
                args.append(value)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY start, key", args).fetchall()
        for body, received in rows:
            try:
                yield StoredWindow(parse_window(body.encode("utf-8")), float(received))
            except ProtocolError as exc:  # a row the current schema cannot read: say so clearly
                raise BackendError(f"stored window does not parse any more: {exc}") from exc

    # -- small tables for alerts --------------------------------------------------------------------------
    def execute(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return list(self._db.execute(sql, args).fetchall())
            except sqlite3.Error as exc:
                raise BackendError(f"telemetry store query failed: {exc}") from exc
