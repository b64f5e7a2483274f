"""The durable outbox: everything the device must tell the cloud waits here until the ingest has stored it.

paho keeps QoS 1 messages only in memory while disconnected, and a restart loses them, so the agent
holds its own copy: one SQLite database in WAL mode. Delivery is end to end (see :mod:`.pump` and
:mod:`.acks`): the broker's PUBACK only marks a message *sent*; it is deleted when the ingest's
acknowledgement names its idempotency key (the ingest has stored it), because a broker that saves its
database periodically can acknowledge a message and then crash without it. A sent message that is
not confirmed goes again after every reconnect and after ``resend_s`` (doubling up to
``resend_max_s``); the receiver stores it once.

An ingest older than the acknowledgement never confirms anything. Until the device knows that its
ingest confirms (the ingest's retained capabilities message said so, or an acknowledgement came; kept
in the database), a message is therefore deleted after ``unconfirmed_sends`` PUBACKs without a
confirmation (counted as ``delivered.unconfirmed``): the guarantee of an old ingest, no worse.

Bounded, with a named drop policy:

* ``max_bytes`` caps the queued bytes (payload + topic + key + a fixed per-row overhead);
* ``ttl_s`` expires old telemetry;
* ``oldest-telemetry-first`` (default): when full, the oldest telemetry windows go first;
  ``refuse-new-telemetry``: when full, a new telemetry window is refused instead;
* deployment events (kind ``event``) are NEVER dropped, by the cap or the TTL: the updater's
  history matters more than any window. If events alone exceed the cap the outbox grows past it
  and says so in the log.

Every drop is counted per kind and reason (``dropped.telemetry.cap``, ``dropped.telemetry.ttl``, ...)
in the database itself, and the telemetry windows report the total. A database that is not a
database any more (a corrupt file) is moved aside and a fresh one started: the line keeps running.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_agent.errors import OutboxError

log = logging.getLogger(__name__)

DropPolicy = Literal["oldest-telemetry-first", "refuse-new-telemetry"]
#: kind -> (droppable, priority). Lower priority numbers are sent first.
KINDS: dict[str, tuple[bool, int]] = {"event": (False, 0), "telemetry": (True, 1)}
ROW_OVERHEAD = 64
MAX_KEY_CHARS = 128

_SCHEMA = """
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

#: state row set once the device has received an acknowledgement from an ingest
STATE_PEER_CONFIRMS = "acks.peer"

_SET_STATE = "INSERT INTO state(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value"


def _disk_full(exc: BaseException) -> bool:
    cause = exc.__cause__
    return isinstance(cause, sqlite3.OperationalError) and "full" in str(cause).lower()


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    key: str
    kind: str
    topic: str
    payload: bytes
    created: float
    attempts: int


@dataclass(frozen=True)
class OutboxStats:
    messages: int
    bytes: int
    by_kind: dict[str, int]
    counters: dict[str, int]

    @property
    def dropped(self) -> int:
        return sum(v for k, v in self.counters.items() if k.startswith("dropped."))


class Outbox:
    """Thread-safe durable queue on one SQLite file. ``clock`` is injectable (TTL, backoff)."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        ttl_s: float = 14 * 86400.0,
        max_message_bytes: int = 256 * 1024,
        policy: DropPolicy = "oldest-telemetry-first",
        max_refusals: int = 5,
        resend_s: float = 30.0,
        resend_max_s: float = 900.0,
        unconfirmed_sends: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes <= 0 or ttl_s <= 0 or max_message_bytes <= 0:
            raise OutboxError("outbox limits must be positive")
        if resend_s <= 0 or resend_max_s < resend_s or unconfirmed_sends < 1:
            raise OutboxError("resend_s must be positive, resend_max_s >= resend_s, unconfirmed_sends >= 1")
        if policy not in ("oldest-telemetry-first", "refuse-new-telemetry"):
            raise OutboxError(f"unknown drop policy {policy!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.max_message_bytes = max_message_bytes
        self.policy = policy
        self.max_refusals = max_refusals
        self.resend_s = resend_s
        self.resend_max_s = resend_max_s
        self.unconfirmed_sends = unconfirmed_sends
        self.clock = clock
        self._lock = threading.RLock()
        self._dropped_logged = 0
        self._sync_mode = "NORMAL"
        self._db = self._open()
        self._bytes = int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM messages").fetchone()[0])
        self._peer_confirms = self.get_state(STATE_PEER_CONFIRMS) is not None

    # -- opening -------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # keep the write-ahead log in proportion to the cap: by default it grows to 4 MB and stays
        # there, more than the whole queue of a small device
        pages = max(32, min(1000, self.max_bytes // (4 * 4096)))
        db.execute(f"PRAGMA wal_autocheckpoint={pages}")
        db.execute(f"PRAGMA journal_size_limit={pages * 4096 * 2}")
        db.executescript(_SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
        if "sends" not in columns:  # an outbox written before the end-to-end acknowledgement
            db.execute("ALTER TABLE messages ADD COLUMN sends INTEGER NOT NULL DEFAULT 0")
        db.execute("PRAGMA quick_check").fetchone()
        return db

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error("outbox %s is unreadable (%s); moved aside to %s, starting a new one", self.path, exc, aside)
            try:
                self.path.replace(aside)
                for suffix in ("-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                db = self._connect()
            except (OSError, sqlite3.Error) as exc2:
                raise OutboxError(f"cannot open the outbox {self.path}: {exc2}") from exc2
            self._bump(db, "corrupt.replaced", 1)
            return db
        except OSError as exc:
            raise OutboxError(f"cannot open the outbox {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing -------------------------------------------------------------------------------------
    @staticmethod
    def _bump(db: sqlite3.Connection, name: str, n: int) -> None:
        db.execute(
            "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
            (name, n, n),
        )

    def put(self, topic: str, payload: bytes, *, kind: str, key: str, state: dict[str, bytes] | None = None) -> bool:
        """Queue ``payload`` for ``topic``. Returns False when ``key`` is already queued (idempotent) or
        when the policy refused a telemetry window; raises :class:`OutboxError` on bad input or I/O.
        ``state`` entries (see :meth:`set_state`) are written in the same transaction."""
        if kind not in KINDS:
            raise OutboxError(f"unknown outbox kind {kind!r} (known: {', '.join(KINDS)})")
        if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS:
            raise OutboxError(f"idempotency key must be 1-{MAX_KEY_CHARS} characters")
        if not isinstance(payload, bytes | bytearray):
            raise OutboxError("outbox payloads are bytes")
        if len(payload) > self.max_message_bytes:
            raise OutboxError(f"message of {len(payload)} bytes exceeds the outbox limit of {self.max_message_bytes}")
        droppable, priority = KINDS[kind]
        size = len(payload) + len(topic) + len(key) + ROW_OVERHEAD
        with self._lock:
            try:
                return self._put(topic, bytes(payload), kind, key, droppable, priority, size, state or {})
            except OutboxError as exc:
                if not _disk_full(exc) or not self._free_for_disk():
                    raise
            # the drop policy applies to the disk as well: oldest telemetry went, try once more
            return self._put(topic, bytes(payload), kind, key, droppable, priority, size, state or {})

    @contextmanager
    def _tx(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction; every SQLite failure (disk full, I/O error) becomes an OutboxError
        and nothing of the transaction stays."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                with suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise OutboxError(f"outbox {what} failed: {exc}") from exc
            raise

    def _free_for_disk(self) -> bool:
        """The disk is full: drop the oldest quarter of the queued telemetry (counted as
        ``dropped.telemetry.disk_full``). False when there is none to drop."""
        droppable = tuple(k for k, (d, _) in KINDS.items() if d)
        marks = ",".join("?" * len(droppable))
        try:
            with self._tx("freeing space") as db:
                rows = db.execute(
                    f"SELECT id, size, kind FROM messages WHERE kind IN ({marks}) ORDER BY id", droppable
                ).fetchall()
                drop = rows[: max(1, len(rows) // 4)] if rows else []
                for row_id, _, kind in drop:
                    db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
                    self._bump(db, f"dropped.{kind}.disk_full", 1)
        except OutboxError:
            log.exception("outbox: the disk is full and nothing could be freed")
            return False
        self._bytes -= sum(int(r[1]) for r in drop)
        if drop:
            log.warning("disk full: dropped the %d oldest telemetry windows of the outbox", len(drop))
        return bool(drop)

    def _put(
        self,
        topic: str,
        payload: bytes,
        kind: str,
        key: str,
        droppable: bool,
        priority: int,
        size: int,
        state: dict[str, bytes],
    ) -> bool:
        mode = "NORMAL" if droppable else "FULL"  # an event survives a power cut, not just a crash
        if mode != self._sync_mode:
            try:
                self._db.execute(f"PRAGMA synchronous={mode}")
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox write failed: {exc}") from exc
            self._sync_mode = mode
        with self._tx("write") as db:
            if db.execute("SELECT 1 FROM messages WHERE key = ?", (key,)).fetchone():
                return False
            for name, value in state.items():
                db.execute(_SET_STATE, (name, value))
            if droppable and self.policy == "refuse-new-telemetry" and self._bytes + size > self.max_bytes:
                self._bump(db, f"dropped.{kind}.cap", 1)
                log.warning("outbox full (%d bytes): refused a %s message", self._bytes, kind)
                return False
            db.execute(
                "INSERT INTO messages(key, kind, priority, topic, payload, size, created) VALUES (?,?,?,?,?,?,?)",
                (key, kind, priority, topic, payload, size, self.clock()),
            )
            total = self._bytes + size
            total -= self._shed(db, total)
        self._bytes = total
        return True

    def _shed(self, db: sqlite3.Connection, total: int) -> int:
        """Drop the oldest droppable rows until ``total`` fits the cap; returns the bytes freed."""
        freed = 0
        droppable = tuple(k for k, (d, _) in KINDS.items() if d)
        marks = ",".join("?" * len(droppable))
        while total - freed > self.max_bytes:
            rows = db.execute(
                f"SELECT id, size, kind FROM messages WHERE kind IN ({marks}) ORDER BY id LIMIT 64", droppable
            ).fetchall()
            if not rows:
                log.warning("outbox holds %d bytes of never-dropped events, over its cap of %d", total, self.max_bytes)
                break
            for row_id, size, kind in rows:
                if total - freed <= self.max_bytes:
                    break
                db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
                self._bump(db, f"dropped.{kind}.cap", 1)
                freed += size
        if freed:
            self._dropped_logged += 1
            n = self._dropped_logged
            if n == 1 or (n % 10 == 0 and str(n).rstrip("0") == "1"):  # 1st, 10th, 100th, ... time
                cap = self.max_bytes
                log.warning("outbox over its cap of %d bytes: dropping oldest telemetry (%d times so far)", cap, n)
        return freed

    # -- reading and acknowledging -------------------------------------------------------------------
    def peek(
        self, limit: int = 32, exclude: Iterable[int] = (), *, include_unconfirmed: bool = False
    ) -> list[OutboxMessage]:
        """The next messages to send: events first, then oldest first; skips deferred ones (sent and
        waiting for their acknowledgement, or refused and backing off) unless ``include_unconfirmed``."""
        skip = set(exclude)
        until = float("inf") if include_unconfirmed else self.clock()
        with self._lock:
            rows = self._db.execute(
                "SELECT id, key, kind, topic, payload, created, attempts FROM messages "
                "WHERE not_before <= ? ORDER BY priority, id LIMIT ?",
                (until, limit + len(skip)),
            ).fetchall()
        out = [OutboxMessage(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6]) for r in rows if r[0] not in skip]
        return out[:limit]

    @property
    def peer_confirms(self) -> bool:
        """Whether the device's ingest confirms end to end (its capabilities message said so, or an
        acknowledgement came). Kept in the database."""
        return self._peer_confirms

    def sent(self, ids: Iterable[int]) -> int:
        """The broker acknowledged (PUBACK) these messages: they wait for the ingest's confirmation,
        and go again after ``resend_s`` doubling per send, at most ``resend_max_s``. While the ingest
        is not known to confirm (:attr:`peer_confirms`), a message sent ``unconfirmed_sends`` times is
        deleted (``delivered.unconfirmed``). Returns how many were deleted."""
        id_list = list(ids)
        if not id_list:
            return 0
        now = self.clock()
        marks = ",".join("?" * len(id_list))
        with self._lock:
            with self._tx("send bookkeeping") as db:
                rows = db.execute(f"SELECT id, sends, size FROM messages WHERE id IN ({marks})", id_list).fetchall()
                gone: list[tuple[int, int]] = []
                for row_id, sends, size in rows:
                    n = int(sends) + 1
                    if not self._peer_confirms and n >= self.unconfirmed_sends:
                        db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
                        gone.append((int(row_id), int(size)))
                        continue
                    delay = min(self.resend_max_s, self.resend_s * 2.0 ** min(n - 1, 30))
                    db.execute("UPDATE messages SET sends = ?, not_before = ? WHERE id = ?", (n, now + delay, row_id))
                self._bump(db, "sent", len(rows))
                self._bump(db, "resent", sum(1 for r in rows if int(r[1]) > 0))
                if gone:
                    self._bump(db, "delivered.unconfirmed", len(gone))
            self._bytes -= sum(size for _, size in gone)
        return len(gone)

    def rearm(self) -> int:
        """Make every sent, unconfirmed message due now (after a reconnect: the broker may have lost
        what it acknowledged). Returns how many."""
        with self._lock, self._tx("rearm") as db:
            n = db.execute("UPDATE messages SET not_before = 0 WHERE sends > 0 AND not_before > 0").rowcount
        return int(n)

    def confirm(self, keys: Iterable[str]) -> int:
        """The ingest stored the messages with these idempotency keys: delete them (``delivered``).
        Keys this outbox does not hold are ignored (another outbox's, or confirmed before)."""
        return self._settle(keys, None)

    def reject(self, keys: Iterable[str]) -> int:
        """The ingest refused these messages for good (its schema): delete them, counted as
        ``dropped.<kind>.rejected``, instead of sending them forever."""
        return self._settle(keys, "rejected")

    def set_peer_confirms(self, confirms: bool) -> None:
        """Whether the ingest confirms end to end (its capabilities message; an acknowledgement sets it
        too). Durable. While False, a message is deleted after ``unconfirmed_sends`` PUBACKs."""
        with self._lock:
            if confirms == self._peer_confirms:
                return
            if confirms:
                self.set_state(STATE_PEER_CONFIRMS, b"1")
            else:
                try:
                    self._db.execute("DELETE FROM state WHERE name = ?", (STATE_PEER_CONFIRMS,))
                except sqlite3.Error as exc:
                    raise OutboxError(f"outbox state write failed: {exc}") from exc
            self._peer_confirms = confirms
        log.info("the ingest %s end-to-end acknowledgements", "sends" if confirms else "no longer sends")

    def _settle(self, keys: Iterable[str], drop_reason: str | None) -> int:
        key_list = [k for k in dict.fromkeys(keys) if isinstance(k, str)]
        with self._lock:
            self.set_peer_confirms(True)
            if not key_list:
                return 0
            marks = ",".join("?" * len(key_list))
            with self._tx("confirmation") as db:
                rows = db.execute(f"SELECT kind, size FROM messages WHERE key IN ({marks})", key_list).fetchall()
                db.execute(f"DELETE FROM messages WHERE key IN ({marks})", key_list)
                if drop_reason is None:
                    self._bump(db, "delivered", len(rows))
                else:
                    for kind, _ in rows:
                        self._bump(db, f"dropped.{kind}.{drop_reason}", 1)
            self._bytes -= sum(int(r[1]) for r in rows)
        if rows and drop_reason is not None:
            log.error("the ingest refused %d outbox messages for good; deleted them", len(rows))
        return len(rows)

    def ack(self, ids: Iterable[int]) -> int:
        """Delete delivered messages by row id, without waiting for a confirmation (the transport
        itself confirms delivery). Returns how many went."""
        id_list = list(ids)
        if not id_list:
            return 0
        marks = ",".join("?" * len(id_list))
        with self._lock:
            with self._tx("acknowledgement") as db:
                freed = db.execute(f"SELECT COALESCE(SUM(size), 0) FROM messages WHERE id IN ({marks})", id_list)
                freed_bytes = int(freed.fetchone()[0])
                n = db.execute(f"DELETE FROM messages WHERE id IN ({marks})", id_list).rowcount
                self._bump(db, "delivered", n)
            self._bytes -= freed_bytes
            return int(n)

    def refused(self, msg_id: int, reason: str) -> None:
        """The broker refused a message (e.g. not authorised). Retry later with backoff; telemetry is
        dropped (and counted) after ``max_refusals`` refusals, events are kept and retried."""
        with self._lock:
            row = self._db.execute("SELECT kind, attempts, size FROM messages WHERE id = ?", (msg_id,)).fetchone()
            if row is None:
                return
            kind, attempts, size = row[0], int(row[1]) + 1, int(row[2])
            log.warning("broker refused outbox message %d (%s, attempt %d): %s", msg_id, kind, attempts, reason)
            drop = KINDS[kind][0] and attempts >= self.max_refusals
            with self._tx("refusal bookkeeping") as db:
                if drop:
                    db.execute("DELETE FROM messages WHERE id = ?", (msg_id,))
                    self._bump(db, f"dropped.{kind}.refused", 1)
                else:
                    delay = min(3600.0, 5.0 * 2 ** min(attempts, 10))
                    db.execute(
                        "UPDATE messages SET attempts = ?, not_before = ? WHERE id = ?",
                        (attempts, self.clock() + delay, msg_id),
                    )
            if drop:
                self._bytes -= size

    def expire(self) -> int:
        """Drop droppable messages older than the TTL; returns how many. Events never expire."""
        cutoff = self.clock() - self.ttl_s
        droppable = [k for k, (d, _) in KINDS.items() if d]
        marks = ",".join("?" * len(droppable))
        with self._lock:
            with self._tx("expiry") as db:
                rows = db.execute(
                    f"SELECT kind, COUNT(*), COALESCE(SUM(size), 0) FROM messages "
                    f"WHERE created < ? AND kind IN ({marks}) GROUP BY kind",
                    (cutoff, *droppable),
                ).fetchall()
                db.execute(f"DELETE FROM messages WHERE created < ? AND kind IN ({marks})", (cutoff, *droppable))
                for kind, n, _ in rows:
                    self._bump(db, f"dropped.{kind}.ttl", int(n))
            self._bytes -= sum(int(r[2]) for r in rows)
            n_total = sum(int(r[1]) for r in rows)
        if n_total:
            log.warning("outbox expired %d telemetry messages older than %.0f s", n_total, self.ttl_s)
        return n_total

    # -- figures and small state ---------------------------------------------------------------------
    def stats(self) -> OutboxStats:
        with self._lock:
            by_kind = dict(self._db.execute("SELECT kind, COUNT(*) FROM messages GROUP BY kind").fetchall())
            counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        return OutboxStats(sum(by_kind.values()), self._bytes, by_kind, counters)

    def dropped(self, kind: str = "telemetry") -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(value), 0) FROM counters WHERE name LIKE ?", (f"dropped.{kind}.%",)
            ).fetchone()
        return int(row[0])

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    def get_state(self, name: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_state(self, name: str, value: bytes) -> None:
        """Small device-local state that must survive restarts with the queue (pending windows)."""
        with self._lock:
            try:
                self._db.execute(_SET_STATE, (name, value))
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox state write failed: {exc}") from exc
