"""The feedback store on a real SQLite file: the recent-results index (bounded, durable), feedback
stored once with the latest winning and a counter of replacements, unknown ids refused, what a row
holds (nothing of a frame), a corrupt file moved aside, and the confusion counts matching the rows."""

from __future__ import annotations

import random
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from edge_agent.feedback.rules import RESULT_FIELDS, FeedbackError, FeedbackRequest
from edge_agent.feedback.store import FeedbackStore


def result(n: int, part: str | None = None, verdict: str | None = "ok", version: int = 3) -> dict[str, Any]:
    return {
        "type": "verdict",
        "result_id": f"dev-1-6a-{n}",
        "part_id": part or f"P-{n}",
        "verdict": verdict,
        "label": None if verdict is None else ("good" if verdict == "ok" else "scratch"),
        "confidence": None if verdict is None else 0.9,
        "model": "gasket",
        "model_version": version,
        "state": "ok" if verdict is not None else "missed",
        "ts": 1_764_750_000.0 + n,
        # what a record carries beyond the index's fields: none of it may be stored
        "region": {"x": 1, "y": 2, "w": 3, "h": 4, "score": 0.5},
        "anomaly_score": 1.25,
        "sha256": "ab" * 32,
        "times": {"wait_ms": 1.0},
    }


@pytest.fixture
def store(tmp_path: Path) -> FeedbackStore:
    s = FeedbackStore(tmp_path / "feedback.db", keep_results=50, max_feedback=1000)
    s.note_model("gasket", 3, ("good", "scratch", "dent"), "good")
    s.add_results([result(n) for n in range(1, 11)])
    return s


def test_stored_once_the_latest_wins_and_a_counter_says_it_was_replaced(store: FeedbackStore) -> None:
    first = store.give(FeedbackRequest(truth="confirm", result_id="dev-1-6a-3", by="anna"), "api")
    assert (first.truth, first.previous, first.replaced) == ("ok", None, 0)
    again = store.give(FeedbackRequest(truth="scratch", result_id="dev-1-6a-3", by="ben"), "mqtt")
    assert (again.truth, again.previous, again.replaced) == ("scratch", "ok", 1)
    rows = store.feedback_rows()
    assert len(rows) == 1
    row = rows[0]
    assert (row["truth"], row["source"], row["by"], row["replaced"]) == ("scratch", "mqtt", "ben", 1)
    assert row["verdict"] == "ok" and row["part_id"] == "P-3"
    assert store.counters()["feedback.stored"] == 1 and store.counters()["feedback.replaced"] == 1


def test_by_part_id_the_most_recent_result_of_the_part(store: FeedbackStore) -> None:
    store.add_results([result(11, part="P-2", verdict="defect")])  # P-2 inspected again
    got = store.give(FeedbackRequest(truth="ok", part_id="P-2"), "tcp")
    assert got.result_id == "dev-1-6a-11" and got.verdict == "defect"


def test_unknown_ids_and_results_without_a_verdict_are_refused(store: FeedbackStore) -> None:
    store.add_results([result(12, verdict=None)])
    for req, reason in (
        (FeedbackRequest(truth="ok", result_id="dev-1-6a-999"), "unknown_result"),
        (FeedbackRequest(truth="ok", part_id="NOPE"), "unknown_part"),
        (FeedbackRequest(truth="ok", result_id="dev-1-6a-12"), "no_verdict"),
        (FeedbackRequest(truth="crack", result_id="dev-1-6a-1"), "bad_truth"),
    ):
        with pytest.raises(FeedbackError) as err:
            store.give(req, "api")
        assert err.value.reason == reason
    assert store.feedback_rows() == []


def test_the_index_is_bounded_and_survives_a_reopen_and_feedback_outlives_the_index(tmp_path: Path) -> None:
    path = tmp_path / "feedback.db"
    s = FeedbackStore(path, keep_results=20)
    assert s.add_results([result(1)]) == 1
    assert s.add_results([result(1)]) == 0  # a record replayed is indexed once
    s.give(FeedbackRequest(truth="defect", result_id="dev-1-6a-1"), "api")
    s.add_results([result(n) for n in range(2, 60)])
    assert [r["result_id"] for r in s.recent(100)] == [f"dev-1-6a-{n}" for n in range(59, 39, -1)]
    s.close()
    s = FeedbackStore(path, keep_results=20)
    assert len(s.recent(100)) == 20
    assert s.recent(1)[0]["result_id"] == "dev-1-6a-59"
    # dev-1-6a-1 left the index; its feedback kept the verdict it corrects, so it can be replaced
    again = s.give(FeedbackRequest(truth="ok", result_id="dev-1-6a-1"), "api")
    assert (again.previous, again.replaced, again.verdict) == ("defect", 1, "ok")
    s.close()


def test_rows_hold_only_the_result_and_feedback_fields(store: FeedbackStore, tmp_path: Path) -> None:
    store.give(FeedbackRequest(truth="defect", result_id="dev-1-6a-4", by="anna"), "station")
    store.close()
    db = sqlite3.connect(tmp_path / "feedback.db")
    tables = ("results", "feedback", "feedback_log")
    cols = {t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")] for t in tables}
    assert set(cols["results"]) == {"seq", *RESULT_FIELDS}
    assert set(cols["feedback"]) == {"seq", *RESULT_FIELDS, "truth", "source", "by", "given_at", "replaced"}
    blob = b"".join(
        repr(row).encode()
        for t in ("results", "feedback", "feedback_log", "models")
        for row in db.execute(f"SELECT * FROM {t}")
    )
    assert b"score" not in blob and b"ab" * 32 not in blob and b"1.25" not in blob


def test_a_corrupt_file_is_moved_aside_and_a_fresh_store_started(tmp_path: Path) -> None:
    path = tmp_path / "feedback.db"
    path.write_bytes(b"this is not a database" * 100)
    s = FeedbackStore(path)
    assert s.counters()["corrupt.replaced"] == 1
    assert len(list(tmp_path.glob("feedback.db.corrupt-*"))) == 1
    assert s.add_results([result(1)]) == 1


def test_confusion_since_matches_the_rows(tmp_path: Path) -> None:
    """Random feedback with replacements, read in stretches: the net of every stretch adds up to the
    (verdict, truth) pairs the rows hold, per model version, and a stretch carries counts only."""
    s = FeedbackStore(tmp_path / "feedback.db", keep_results=500)
    s.note_model("gasket", 3, ("good", "scratch", "dent"), "good")
    rng = random.Random(7)
    s.add_results([result(n, verdict=rng.choice(["ok", "defect"]), version=rng.choice([3, 4])) for n in range(200)])
    total: dict[tuple[str, int], Counter[tuple[str, str]]] = {}
    cursor = 0
    for _ in range(12):
        for _ in range(rng.randrange(1, 40)):
            truth = rng.choice(["ok", "defect", "confirm", "scratch"])
            # "scratch" is a class of version 3, and taken as spelled for version 4 (its labels unknown)
            s.give(FeedbackRequest(truth=truth, result_id=f"dev-1-6a-{rng.randrange(60)}"), "api")
        counts, cursor = s.confusion_since(cursor)
        assert not counts.gap
        for key, pairs in counts.net().items():
            total.setdefault(key, Counter()).update(pairs)
    from_rows: dict[tuple[str, int], Counter[tuple[str, str]]] = {}
    for row in s.feedback_rows():
        from_rows.setdefault((row["model"], row["model_version"]), Counter())[(row["verdict"], row["truth"])] += 1
    assert {k: +v for k, v in total.items()} == from_rows
    nothing, same = s.confusion_since(cursor)
    assert same == cursor and nothing.added == {} and nothing.retracted == {}
    everything, _ = s.confusion_since(0)
    assert {k: +v for k, v in everything.net().items()} == from_rows and everything.retracted == {}


def test_old_rows_and_log_are_pruned_and_a_reader_behind_the_log_is_told(tmp_path: Path) -> None:
    s = FeedbackStore(tmp_path / "feedback.db", keep_results=100, max_feedback=10)
    s.add_results([result(n) for n in range(60)])
    for n in range(40):
        s.give(FeedbackRequest(truth="ok", result_id=f"dev-1-6a-{n}"), "api")
    assert s.counters()["rows"] == 10 and s.counters()["feedback.dropped"] == 30
    counts, cursor = s.confusion_since(0)
    assert counts.gap and cursor == 40
    counts, _ = s.confusion_since(30)
    assert not counts.gap


def test_the_row_counts_follow_the_tables_through_pruning_a_failed_write_and_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "feedback.db"

    def counted(s: FeedbackStore) -> tuple[int, int]:
        db = sqlite3.connect(path)
        try:
            results, rows = (
                int(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in ("results", "feedback")
            )
            return results, rows
        finally:
            db.close()

    s = FeedbackStore(path, keep_results=30, max_feedback=12)
    s.add_results([result(n) for n in range(50)])
    for n in range(20, 40):
        s.give(FeedbackRequest(truth="ok", result_id=f"dev-1-6a-{n}"), "api")
    s.give(FeedbackRequest(truth="defect", result_id="dev-1-6a-39"), "api")  # a replacement adds no row
    with pytest.raises(FeedbackError):
        s.give(FeedbackRequest(truth="ok", result_id="dev-1-6a-1"), "api")  # forgotten by the index
    c = s.counters()
    assert (c["results"], c["rows"]) == counted(s) == (30, 12)
    s.close()
    s = FeedbackStore(path, keep_results=30, max_feedback=12)
    assert (s.counters()["results"], s.counters()["rows"]) == (30, 12)
