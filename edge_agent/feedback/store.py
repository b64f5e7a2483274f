"""The durable feedback store: one SQLite file in the device's state directory (WAL), holding

* ``results``: the recent-results index, the last ``keep_results`` triggered results (result id, part
  id, verdict, label, confidence, model name and version, state, time), fed by an outlet of the result
  bus (:mod:`.service`), so feedback can name a result after a restart;
* ``feedback``: one row per result (the latest feedback wins; ``replaced`` counts the earlier ones),
  holding a copy of the verdict it corrects, the truth given, the channel, who and when;
* ``feedback_log``: every write, for :meth:`FeedbackStore.confusion_since`;
* ``models``: the labels of the models seen, to check a class label given as truth.

Feedback commits are fsync'd (``synchronous=FULL``: a feedback survives a power cut); index inserts
use ``NORMAL`` (they survive a crash of the process, and the next result is never far). A file that is
not a database any more is moved aside (``<name>.corrupt-<time>``) and a fresh one started, counted."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.feedback.rules import (
    ConfusionCounts,
    FeedbackError,
    FeedbackRequest,
    LogEntry,
    ModelLabels,
    confusion,
    resolve_truth,
)
from edge_agent.sqlite_tx import write_transaction

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS results(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    result_id TEXT NOT NULL UNIQUE,
    part_id TEXT NOT NULL,
    verdict TEXT, label TEXT, confidence REAL, model TEXT, model_version INTEGER,
    state TEXT NOT NULL, ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_part ON results(part_id, seq);
CREATE TABLE IF NOT EXISTS feedback(
    result_id TEXT PRIMARY KEY,
    part_id TEXT NOT NULL,
    verdict TEXT NOT NULL, label TEXT, confidence REAL, model TEXT NOT NULL, model_version INTEGER NOT NULL,
    state TEXT NOT NULL, ts REAL NOT NULL,
    truth TEXT NOT NULL, source TEXT NOT NULL, by TEXT NOT NULL, given_at REAL NOT NULL,
    replaced INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_seq ON feedback(seq);
CREATE TABLE IF NOT EXISTS feedback_log(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    result_id TEXT NOT NULL, model TEXT NOT NULL, model_version INTEGER NOT NULL,
    verdict TEXT NOT NULL, truth TEXT NOT NULL, prev TEXT
);
CREATE TABLE IF NOT EXISTS models(
    name TEXT NOT NULL, version INTEGER NOT NULL, labels TEXT NOT NULL, ok_label TEXT NOT NULL,
    PRIMARY KEY(name, version)
);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

_RESULT_COLS = "result_id, part_id, verdict, label, confidence, model, model_version, state, ts"


@dataclass(frozen=True, slots=True)
class Stored:
    """What a feedback did: the result it names, the truth stored, how often it replaced one before."""

    result_id: str
    part_id: str
    verdict: str
    truth: str
    #: the truth it replaced (None: the first feedback for this result)
    previous: str | None
    replaced: int


class FeedbackStore:
    """Thread-safe; every method takes the one lock. ``clock`` is injectable."""

    def __init__(
        self,
        path: Path,
        *,
        keep_results: int = 2000,
        max_feedback: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.keep_results = keep_results
        self.max_feedback = max_feedback
        self.clock = clock
        self._lock = threading.RLock()
        self._db = _open(self.path)
        #: the counters when closed (None while open)
        self._closed: dict[str, int] | None = None
        #: rows in ``results`` and ``feedback``, kept here (a COUNT per write or status read is a table scan)
        self._n_results = int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
        self._n_rows = int(self._db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])
        self._models: dict[tuple[str, int], ModelLabels] = {
            (str(n), int(v)): ModelLabels(tuple(json.loads(labels)), str(ok))
            for n, v, labels, ok in self._db.execute("SELECT name, version, labels, ok_label FROM models")
        }

    def close(self) -> None:
        """Close the file; :meth:`counters` keeps answering with the last figures (the final status)."""
        with self._lock:
            if self._closed is None:
                self._closed = self.counters()
                self._db.close()

    # -- the index (the bus outlet's thread) --------------------------------------------------------------
    def note_model(self, name: str, version: int, labels: tuple[str, ...], ok_label: str) -> None:
        key = (name, int(version))
        if key in self._models:
            return
        with self._lock, self._tx("noting a model", full=False) as db:
            db.execute(
                "INSERT OR IGNORE INTO models(name, version, labels, ok_label) VALUES (?, ?, ?, ?)",
                (name, int(version), json.dumps(list(labels)), ok_label),
            )
            self._models[key] = ModelLabels(tuple(labels), ok_label)

    def add_results(self, recs: list[dict[str, Any]]) -> int:
        """Index triggered results (records with a ``result_id``) in one transaction; returns how many
        were new (a record replayed is indexed once)."""
        rows = [
            (
                str(rec["result_id"]),
                str(rec.get("part_id") or ""),
                rec.get("verdict"),
                rec.get("label"),
                rec.get("confidence"),
                rec.get("model"),
                rec.get("model_version"),
                str(rec.get("state") or "ok"),
                float(rec.get("ts") or self.clock()),
            )
            for rec in recs
        ]
        new = forgotten = 0
        with self._lock:
            with self._tx("indexing results", full=False) as db:
                last = 0
                for row in rows:
                    cur = db.execute(
                        f"INSERT OR IGNORE INTO results({_RESULT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row
                    )
                    if cur.rowcount:
                        new += 1
                        last = int(cur.lastrowid or 0)
                if last:
                    forgotten = db.execute("DELETE FROM results WHERE seq <= ?", (last - self.keep_results,)).rowcount
            self._n_results += new - forgotten  # committed
        return new

    # -- feedback (any channel's thread) --------------------------------------------------------------------
    def give(self, req: FeedbackRequest, source: str) -> Stored:
        """Store ``req`` for the result it names (refused with :class:`FeedbackError` and its reason)."""
        with self._lock:
            with self._tx("storing a feedback", full=True) as db:
                stored, rows = self._write(db, req, source)
            self._n_rows = rows  # committed
        return stored

    def _write(self, db: sqlite3.Connection, req: FeedbackRequest, source: str) -> tuple[Stored, int]:
        rid, part, verdict, label, conf, model, version, state, ts = self._find(db, req)
        known = None if model is None or version is None else self._models.get((str(model), int(version)))
        truth = resolve_truth(req.truth, verdict, known)
        old = db.execute("SELECT truth, replaced FROM feedback WHERE result_id = ?", (rid,)).fetchone()
        previous, replaced = (None, 0) if old is None else (str(old[0]), int(old[1]) + 1)
        model, version = str(model or ""), int(version or 0)
        seq = db.execute(
            "INSERT INTO feedback_log(result_id, model, model_version, verdict, truth, prev) VALUES (?, ?, ?, ?, ?, ?)",
            (rid, model, version, verdict, truth, previous),
        ).lastrowid
        tail = (replaced, seq)
        db.execute(
            "INSERT INTO feedback(result_id, part_id, verdict, label, confidence, model, model_version, state, ts, "
            "truth, source, by, given_at, replaced, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(result_id) DO UPDATE SET truth = excluded.truth, source = excluded.source, "
            "by = excluded.by, given_at = excluded.given_at, replaced = excluded.replaced, seq = excluded.seq",
            (rid, part, verdict, label, conf, model, version, state, ts, truth, source, req.by, self.clock(), *tail),
        )
        _bump(db, "feedback.replaced" if previous is not None else "feedback.stored", 1)
        rows = self._n_rows + (previous is None)
        rows -= self._prune(db, int(seq or 0), rows)
        return Stored(rid, part, str(verdict), truth, previous, replaced), rows

    def _find(self, db: sqlite3.Connection, req: FeedbackRequest) -> tuple[Any, ...]:
        if req.result_id:
            row = db.execute(f"SELECT {_RESULT_COLS} FROM results WHERE result_id = ?", (req.result_id,)).fetchone()
            if row is None:  # forgotten by the index, but feedback on it is kept with its verdict
                row = db.execute(
                    f"SELECT {_RESULT_COLS} FROM feedback WHERE result_id = ?", (req.result_id,)
                ).fetchone()
            if row is None:
                raise FeedbackError(f"no result {req.result_id[:80]!r} on this device", reason="unknown_result")
            return tuple(row)
        row = db.execute(
            f"SELECT {_RESULT_COLS} FROM results WHERE part_id = ? ORDER BY seq DESC LIMIT 1", (req.part_id,)
        ).fetchone()
        if row is None:
            raise FeedbackError(f"no recent result of part {req.part_id[:80]!r} on this device", reason="unknown_part")
        return tuple(row)

    def _prune(self, db: sqlite3.Connection, seq: int, rows: int) -> int:
        """Drop the oldest rows beyond ``max_feedback`` (``rows`` now) and log entries beyond twice that;
        returns the rows dropped."""
        dropped = 0
        if rows > self.max_feedback:
            dropped = db.execute(
                "DELETE FROM feedback WHERE result_id IN (SELECT result_id FROM feedback ORDER BY seq LIMIT ?)",
                (rows - self.max_feedback,),
            ).rowcount
            _bump(db, "feedback.dropped", dropped)
        cut = seq - 2 * self.max_feedback  # the log keeps twice as many writes as there are rows
        if cut > 0 and db.execute("DELETE FROM feedback_log WHERE seq <= ?", (cut,)).rowcount:
            db.execute(
                "INSERT INTO counters(name, value) VALUES ('log.pruned_to', ?) "
                "ON CONFLICT(name) DO UPDATE SET value = MAX(value, excluded.value)",
                (cut,),
            )
        return dropped

    # -- reading -----------------------------------------------------------------------------------------
    def recent(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` indexed results, newest first, each with its feedback (``truth`` etc., or None)."""
        cols = [c.strip() for c in _RESULT_COLS.split(",")]
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join('r.' + c for c in cols)}, f.truth, f.source, f.by, f.given_at, f.replaced "
                "FROM results r LEFT JOIN feedback f ON f.result_id = r.result_id ORDER BY r.seq DESC LIMIT ?",
                (n,),
            ).fetchall()
        keys = [*cols, "truth", "source", "by", "given_at", "replaced"]
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def feedback_rows(self) -> list[dict[str, Any]]:
        """Every feedback row, as stored (oldest write first)."""
        with self._lock:
            cur = self._db.execute("SELECT * FROM feedback ORDER BY seq")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def counters(self) -> dict[str, int]:
        with self._lock:
            if self._closed is not None:
                return dict(self._closed)
            out = {str(k): int(v) for k, v in self._db.execute("SELECT name, value FROM counters")}
            out["results"], out["rows"] = self._n_results, self._n_rows
        return out

    def confusion_since(
        self, cursor: int, cell: Callable[[LogEntry, str], tuple[str, str]] | None = None
    ) -> tuple[ConfusionCounts, int]:
        """The (verdict, truth) counts per model version that the feedback written after ``cursor`` adds
        (counts only: no result id, part id or name), and the cursor to pass next time. Start at 0.
        ``cell``: the pair counted for an entry and a truth (see :func:`confusion`; entries carry the
        verdict's confidence)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT l.seq, l.result_id, l.model, l.model_version, l.verdict, l.truth, l.prev, f.confidence "
                "FROM feedback_log l LEFT JOIN feedback f ON f.result_id = l.result_id "
                "WHERE l.seq > ? ORDER BY l.seq",
                (int(cursor),),
            ).fetchall()
            pruned = self._db.execute("SELECT value FROM counters WHERE name = 'log.pruned_to'").fetchone()
        counts = confusion(
            (
                LogEntry(int(s), str(r), str(m), int(v), str(vd), str(t), p, None if c is None else float(c))
                for s, r, m, v, vd, t, p, c in rows
            ),
            cell,
        )
        counts.gap = pruned is not None and int(cursor) < int(pruned[0])
        return counts, int(rows[-1][0]) if rows else int(cursor)

    def log_position(self) -> int:
        """The highest feedback-log sequence number ever written to this file (0 for a new file): a
        reader whose cursor is beyond it is reading a store that was replaced (a corrupt file moved
        aside) and starts again from 0."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'feedback_log'").fetchone()
        return int(row[0]) if row is not None else 0

    # -- the file ----------------------------------------------------------------------------------------
    def _tx(self, what: str, *, full: bool) -> AbstractContextManager[sqlite3.Connection]:
        return write_transaction(
            self._db,
            lambda exc: FeedbackError(f"feedback store: {what} failed: {exc}", reason="store"),
            synchronous="FULL" if full else "NORMAL",
        )


def _bump(db: sqlite3.Connection, name: str, n: int) -> None:
    db.execute(
        "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
        (name, n, n),
    )


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    db.execute("PRAGMA quick_check").fetchone()
    return db


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _connect(path)
    except sqlite3.DatabaseError as exc:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        log.error("feedback store %s is unreadable (%s); moved aside to %s, starting a new one", path, exc, aside)
        try:
            path.replace(aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            db = _connect(path)
        except (OSError, sqlite3.Error) as exc2:
            raise FeedbackError(f"cannot open the feedback store {path}: {exc2}", reason="store") from exc2
        _bump(db, "corrupt.replaced", 1)
        return db
    except OSError as exc:
        raise FeedbackError(f"cannot open the feedback store {path}: {exc}", reason="store") from exc
