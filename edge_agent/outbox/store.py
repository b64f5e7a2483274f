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
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path

from edge_agent.errors import OutboxError
from edge_agent.outbox.drops import Shedder, drop_oldest_quarter
from edge_agent.outbox.messages import (
    DROPPABLE,
    KINDS,
    MAX_KEY_CHARS,
    ROW_OVERHEAD,
    DropPolicy,
    OutboxMessage,
    OutboxStats,
)
from edge_agent.outbox.sqlite import SET_STATE, bump, disk_full, open_db, transaction

log = logging.getLogger(__name__)

__all__ = [
    "KINDS",
    "MAX_KEY_CHARS",
    "ROW_OVERHEAD",
    "STATE_PEER_CONFIRMS",
    "DropPolicy",
    "Outbox",
    "OutboxMessage",
    "OutboxStats",
]

#: state row set once the device has received an acknowledgement from an ingest
STATE_PEER_CONFIRMS = "acks.peer"


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
        self._shedder = Shedder(max_bytes)
        self._sync_mode = "NORMAL"
        self._db = open_db(self.path, max_bytes)
        self._bytes = int(self._db.execute("SELECT COALESCE(SUM(size), 0) FROM messages").fetchone()[0])
        self._peer_confirms = self.get_state(STATE_PEER_CONFIRMS) is not None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing -------------------------------------------------------------------------------------
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
                if not disk_full(exc) or not self._free_for_disk():
                    raise
            # the drop policy applies to the disk as well: oldest telemetry went, try once more
            return self._put(topic, bytes(payload), kind, key, droppable, priority, size, state or {})

    def _tx(self, what: str) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db, what)

    def _free_for_disk(self) -> bool:
        """The disk is full: drop the oldest quarter of the queued telemetry (counted as
        ``dropped.telemetry.disk_full``). False when there is none to drop."""
        try:
            with self._tx("freeing space") as db:
                drop = drop_oldest_quarter(db)
        except OutboxError:
            log.exception("outbox: the disk is full and nothing could be freed")
            return False
        self._bytes -= sum(size for _, size, _ in drop)
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
                db.execute(SET_STATE, (name, value))
            if droppable and self.policy == "refuse-new-telemetry" and self._bytes + size > self.max_bytes:
                bump(db, f"dropped.{kind}.cap", 1)
                log.warning("outbox full (%d bytes): refused a %s message", self._bytes, kind)
                return False
            db.execute(
                "INSERT INTO messages(key, kind, priority, topic, payload, size, created) VALUES (?,?,?,?,?,?,?)",
                (key, kind, priority, topic, payload, size, self.clock()),
            )
            total = self._bytes + size
            total -= self._shedder.shed(db, total)
        self._bytes = total
        return True

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
                bump(db, "sent", len(rows))
                bump(db, "resent", sum(1 for r in rows if int(r[1]) > 0))
                if gone:
                    bump(db, "delivered.unconfirmed", len(gone))
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
                    bump(db, "delivered", len(rows))
                else:
                    for kind, _ in rows:
                        bump(db, f"dropped.{kind}.{drop_reason}", 1)
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
                bump(db, "delivered", n)
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
                    bump(db, f"dropped.{kind}.refused", 1)
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
        droppable = DROPPABLE
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
                    bump(db, f"dropped.{kind}.ttl", int(n))
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
                self._db.execute(SET_STATE, (name, value))
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox state write failed: {exc}") from exc
