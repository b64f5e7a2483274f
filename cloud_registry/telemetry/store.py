"""Where telemetry windows live in the cloud, chosen by URL (:func:`open_telemetry_store`):
``sqlite:///path.db`` or a plain path (one SQLite database, WAL; the default) or
``postgresql://user@host/db[?schema=name]`` (:mod:`.store_pg`: windows in declarative range
partitions by window start, created as needed and dropped by the retention).

Windows are keyed by their idempotency key and indexed by model, version, group and time. Only what
the window carries is stored: the device is its pseudonym, never the id in the MQTT topic. The store
also keeps the ingest counters and the alert episodes (see :mod:`.alerts`), so a restarted ingest
service neither stores a window twice nor fires an alert twice.

The deployment events of the devices (``edgeline.event/1``, keyed by ``event_id``) are kept in their
own table, so the ingest can confirm them end to end as it confirms windows. An event names its device
(the fleet view knows it anyway) and carries no inspection data.

Both backends run the same statements (``?`` placeholders; the PostgreSQL store rewrites them), so the
drift report, the alerts and the retraining plan read either through this one interface.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cloud_registry.errors import BackendError, RegistryError
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

INSERT_WINDOW = "INSERT INTO windows VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING"
INSERT_EVENT = "INSERT INTO events VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING"
BUMP = "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = counters.value + ?"
#: a window further ahead of the ingest's clock than this is refused (it would open a partition years out)
MAX_FUTURE_S = 86400.0
#: on PostgreSQL without a retention, a window older than this is refused: every day of window starts
#: is a partition there, and a device must not make the store create thousands of them
MAX_AGE_S = 366 * 86400.0


class StoreRefused(RegistryError):
    """The store refused a value of the batch (not a store failure: retrying the same batch fails
    again). The ingest then stores the batch's messages apart and refuses the one at fault."""

    default_reason = "store_refused"


WindowItem = TelemetryWindow | tuple[TelemetryWindow, bytes | None]
Row = tuple[Any, ...]
T = TypeVar("T")


@dataclass(frozen=True)
class StoredWindow:
    window: TelemetryWindow
    received: float


_INPUT_DRIFT = frozenset((*STAT_NAMES, "confidence", "anomaly_score"))


def _input_drifted(w: TelemetryWindow) -> int:
    return int(any(d.drifted for k, d in w.drift.items() if k in _INPUT_DRIFT))


def window_row(w: TelemetryWindow, received: float, raw: bytes | None = None) -> Row:
    """The stored row of a window. ``raw``: the payload it was validated from, kept as is."""
    body = (raw if raw is not None else canonical_json(w.to_body())).decode("utf-8")
    m = w.model
    head = (w.key, w.device, w.group or "", m.name, m.version, m.sha256, w.start, w.end, w.frames)
    return (*head, _input_drifted(w), body, received)


def event_row(event: DeviceEvent, raw: bytes, received: float) -> Row:
    head = (event.event_id, event.device_id, event.kind.value, event.sequence, event.ts)
    return (*head, raw.decode("utf-8"), received)


class TelemetryStore:
    """The SQLite store (and the statements both backends share). Thread-safe: one connection behind
    a lock (writes are short). ``retention_s``: windows whose end is older are removed by
    :meth:`retain` and refused by the ingest (None: kept for ever)."""

    backend = "sqlite"

    def __init__(self, path: Path | str, *, retention_s: float | None = None) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.retention_s = retention_s
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise BackendError(f"cannot open the telemetry store {self.path}: {exc}") from exc
        self._lock = threading.RLock()

    # -- backend hooks (the PostgreSQL store overrides these) -------------------------------------------
    def _run(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        """One statement, its rows; inside :meth:`_tx` when one is open, else autocommitted."""
        return list(self._db.execute(sql, tuple(args)).fetchall())

    @contextmanager
    def _tx(self) -> Iterator[None]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _insert(self, sql: str, rows: list[Row], key_of: int = 0) -> list[bool]:
        """Insert rows (ignoring those whose key is stored); per row, whether it was new."""
        return [self._db.execute(sql, row).rowcount == 1 for row in rows]

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)

    def _data_errors(self) -> tuple[type[BaseException], ...]:
        """Errors of the values themselves (a number out of the column's range), not of the store."""
        return (OverflowError, sqlite3.DataError)

    def _wrap(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            try:
                return fn(*args)
            except BackendError:
                raise
            except self._data_errors() as exc:
                raise StoreRefused(f"telemetry store {what} refused a value: {exc}") from exc
            except self._errors() as exc:
                raise BackendError(f"telemetry store {what} failed: {exc}") from exc

    # -- writes -------------------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, window: TelemetryWindow, received: float | None = None, raw: bytes | None = None) -> bool:
        """Store a window; False when its key is already stored (a redelivery). ``raw``: the payload
        the window was validated from, stored as is (it parses to the same window)."""
        return self.add_many([(window, raw)], received)[0]

    def add_event(self, event: DeviceEvent, raw: bytes, received: float | None = None) -> bool:
        """Store a deployment event; False when its ``event_id`` is already stored (a redelivery)."""
        return self.store_batch([], [(event, raw)], received=received)[1][0]

    def add_many(self, windows: Iterable[WindowItem], received: float | None = None) -> list[bool]:
        """Store windows in one transaction; returns, per window, whether it was new."""
        items = [item if isinstance(item, tuple) else (item, None) for item in windows]
        return self.store_batch(items, [], received=received)[0]

    def store_batch(
        self,
        windows: Sequence[tuple[TelemetryWindow, bytes | None]],
        events: Sequence[tuple[DeviceEvent, bytes]],
        counters: dict[str, int] | None = None,
        received: float | None = None,
    ) -> tuple[list[bool], list[bool]]:
        """Windows, events and counter increments in ONE transaction: when it returns, all of it is
        durable (the ingest acknowledges a batch only then); per window and per event, whether it was
        new (duplicates are counted too)."""
        now = time.time() if received is None else received
        wrows = [window_row(w, now, raw) for w, raw in windows]
        erows = [event_row(e, raw, now) for e, raw in events]
        bumps = dict(counters or {})

        def write() -> tuple[list[bool], list[bool]]:
            self._prepare(wrows)
            with self._tx():
                new_w = self._insert(INSERT_WINDOW, wrows, 0) if wrows else []
                new_e = self._insert(INSERT_EVENT, erows, 0) if erows else []
                bumps["duplicates"] = bumps.get("duplicates", 0) + len(new_w) - sum(new_w)
                bumps["events.duplicates"] = bumps.get("events.duplicates", 0) + len(new_e) - sum(new_e)
                for name, n in sorted(bumps.items()):
                    if n:
                        self._run(BUMP, (name, n, n))
            return new_w, new_e

        return self._wrap("write", write)

    def _prepare(self, rows: list[Row]) -> None:
        """Before a batch's transaction (the PostgreSQL store creates the partitions it needs)."""

    def bump(self, name: str, n: int = 1) -> None:
        if n:
            self._wrap("write", self._run, BUMP, (name, n, n))

    def retain(self, now: float | None = None) -> int:
        """Remove the windows that started before the retention's cutoff; returns how many. A scan of
        the table: run it now and then (the ingest does, hourly), not per window."""
        if self.retention_s is None:
            return 0
        cutoff = (time.time() if now is None else now) - self.retention_s

        def delete() -> int:  # by window start, as the PostgreSQL store's partitions and the ingest's check
            n = int(self._run("SELECT COUNT(*) FROM windows WHERE start < ?", (cutoff,))[0][0])
            self._run("DELETE FROM windows WHERE start < ?", (cutoff,))
            return n

        return self._wrap("retention", delete)

    # -- reads --------------------------------------------------------------------------------------------
    def execute(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        """One statement of the small tables (alerts, console); ``?`` placeholders on both backends."""
        return self._wrap("query", self._run, sql, args)

    def event_ids(self, device_id: str | None = None) -> set[str]:
        if device_id is None:
            return {r[0] for r in self.execute("SELECT event_id FROM events")}
        return {r[0] for r in self.execute("SELECT event_id FROM events WHERE device_id = ?", (device_id,))}

    def counters(self) -> dict[str, int]:
        return {str(n): int(v) for n, v in self.execute("SELECT name, value FROM counters")}

    def count(self, model: str | None = None) -> int:
        if model is None:
            return int(self.execute("SELECT COUNT(*) FROM windows")[0][0])
        return int(self.execute("SELECT COUNT(*) FROM windows WHERE model = ?", (model,))[0][0])

    def keys(self) -> set[str]:
        return {str(r[0]) for r in self.execute("SELECT key FROM windows")}

    def models(self) -> list[str]:
        return [str(r[0]) for r in self.execute("SELECT DISTINCT model FROM windows ORDER BY model")]

    def versions(self, model: str) -> list[int]:
        rows = self.execute("SELECT DISTINCT version FROM windows WHERE model = ? ORDER BY version", (model,))
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
        rows = self.execute(sql + " ORDER BY start, key", tuple(args))
        for body, received in rows:
            try:
                yield StoredWindow(parse_window(str(body).encode("utf-8")), float(received))
            except ProtocolError as exc:  # a row the current schema cannot read: say so clearly
                raise BackendError(f"stored window does not parse any more: {exc}") from exc


def open_telemetry_store(url: str | Path, *, retention_s: float | None = None) -> TelemetryStore:
    """The telemetry store at ``url``: ``sqlite:///path.db``, a plain path, or ``postgresql://...``."""
    text = str(url)
    if text.startswith(("postgresql://", "postgres://")):
        from cloud_registry.telemetry.store_pg import PostgresTelemetryStore

        return PostgresTelemetryStore(text, retention_s=retention_s)
    if text.startswith("sqlite:///"):
        return TelemetryStore(Path(text[len("sqlite:///") :]), retention_s=retention_s)
    if "://" in text:
        raise BackendError(f"unsupported telemetry store URL {text!r}: use sqlite:///path.db or postgresql://...")
    return TelemetryStore(Path(text), retention_s=retention_s)
