"""Feedback through the local API (``POST /feedback``) against a real agent in trigger mode: stored
once, a replacement counted, unknown ids and results without a verdict refused, hostile input refused,
the rows holding only the fields they should; feedback surviving an agent restart, and a failing store
answered with its reason while the channel carries on."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from edge_agent.feedback.rules import RESULT_FIELDS
from tests.agent.helpers import wait_for
from tests.feedback.conftest import FeedbackAgent, post_feedback, request, triggered


def test_api_feedback_is_stored_once_and_replacements_are_counted(feedback_agent: FeedbackAgent) -> None:
    agent = feedback_agent()
    r = triggered(agent, "A-1")
    assert r["verdict"] in ("ok", "defect") and r["result_id"].startswith("dev-1-")
    code, doc = post_feedback(agent, {"result_id": r["result_id"], "truth": "confirm", "by": "anna"})
    assert code == 200 and doc["ok"] and doc["truth"] == r["verdict"] and doc["replaced"] == 0
    other = "ok" if r["verdict"] == "defect" else "defect"
    code, doc = post_feedback(agent, {"result_id": r["result_id"], "truth": other, "by": "ben"})
    assert code == 200 and doc["previous"] == r["verdict"] and doc["replaced"] == 1
    code, doc = post_feedback(agent, {"part_id": "A-1", "truth": other})
    assert code == 200 and doc["result_id"] == r["result_id"] and doc["replaced"] == 2
    rows = agent.feedback.store.feedback_rows()
    assert len(rows) == 1
    row = rows[0]
    assert (row["truth"], row["source"], row["replaced"], row["verdict"]) == (other, "api", 2, r["verdict"])
    fb = agent.counters()["line"]["feedback"]
    assert fb["accepted"] == {"api": 3}
    assert fb["store"]["feedback.stored"] == 1 and fb["store"]["feedback.replaced"] == 2


def test_unknown_ids_missing_verdicts_and_hostile_input_are_refused(feedback_agent: FeedbackAgent) -> None:
    agent = feedback_agent()
    r = triggered(agent, "B-1")
    missed = triggered(agent, "B-OLD", ts=time.time() - 30)  # no frame that old: missed, no verdict
    assert missed["state"] == "missed" and missed["verdict"] is None
    cases = [
        ({"result_id": "dev-1-0-99999", "truth": "ok"}, 404, "unknown_result"),
        ({"part_id": "NEVER-SEEN", "truth": "ok"}, 404, "unknown_part"),
        ({"result_id": missed["result_id"], "truth": "ok"}, 422, "no_verdict"),
        ({"result_id": r["result_id"], "truth": "unknown"}, 400, "bad_truth"),
        ({"result_id": r["result_id"], "truth": "no-such-class"}, 400, "bad_truth"),
        ({"result_id": r["result_id"], "truth": "ok", "by": "<img src=x onerror=alert(1)>"}, 400, "bad_by"),
        ({"result_id": r["result_id"], "truth": "ok", "by": "x'); DELETE FROM feedback; --"}, 400, "bad_by"),
        ({"result_id": r["result_id"], "truth": "ok", "image": "iVBORw0KGgo="}, 400, "bad_request"),
        (b'{"result_id": ', 400, "bad_request"),
        (json.dumps({"result_id": r["result_id"], "truth": "ok", "by": "a" * 3000}).encode(), 413, "too_large"),
    ]
    for body, code, reason in cases:
        got, doc = post_feedback(agent, body)
        assert (got, doc["reason"]) == (code, reason), (body, doc)
    assert request(agent, "GET", "/feedback")[0] == 405
    assert agent.feedback.store.feedback_rows() == []
    refused = agent.counters()["line"]["feedback"]["refused"]
    assert sum(refused.values()) == len(cases) and refused["api.bad_by"] == 2
    # the channel is fine: a good feedback still goes in
    assert post_feedback(agent, {"result_id": r["result_id"], "truth": "ok"})[0] == 200


def test_nothing_of_a_frame_is_stored(feedback_agent: FeedbackAgent, tmp_path: Path) -> None:
    agent = feedback_agent()
    r = triggered(agent, "C-1")
    assert post_feedback(agent, {"result_id": r["result_id"], "truth": "defect", "by": "anna"})[0] == 200
    agent.stop()
    db = sqlite3.connect(tmp_path / "state" / "feedback.db")
    assert {c[1] for c in db.execute("PRAGMA table_info(results)")} == {"seq", *RESULT_FIELDS}
    feedback_cols = {c[1] for c in db.execute("PRAGMA table_info(feedback)")}
    assert feedback_cols == {"seq", *RESULT_FIELDS, "truth", "source", "by", "given_at", "replaced"}
    for table in ("results", "feedback", "feedback_log", "models"):
        for row in db.execute(f"SELECT * FROM {table}"):
            # numbers and short strings only: no pixels, features, regions or scores beyond the confidence
            assert all(v is None or isinstance(v, int | float) or len(v) <= 200 for v in row), (table, row)
    assert db.execute("SELECT COUNT(*) FROM results WHERE result_id = ?", (r["result_id"],)).fetchone()[0] == 1


def test_feedback_survives_an_agent_restart(feedback_agent: FeedbackAgent) -> None:
    first = feedback_agent()
    r = triggered(first, "D-1")
    assert post_feedback(first, {"result_id": r["result_id"], "truth": "defect", "by": "anna"})[0] == 200
    first.stop()
    second = feedback_agent()
    rows = second.feedback.store.feedback_rows()
    assert [(x["result_id"], x["truth"], x["by"]) for x in rows] == [(r["result_id"], "defect", "anna")]
    # the index came back too: the previous run's result can still be named, by id and by part
    code, doc = post_feedback(second, {"result_id": r["result_id"], "truth": "ok"})
    assert code == 200 and doc["previous"] == "defect" and doc["replaced"] == 1
    assert post_feedback(second, {"part_id": "D-1", "truth": "ok"})[1]["replaced"] == 2
    r2 = triggered(second, "D-2")
    assert r2["result_id"] != r["result_id"]
    assert post_feedback(second, {"result_id": r2["result_id"], "truth": "confirm"})[0] == 200
    assert len(second.feedback.store.feedback_rows()) == 2


def test_a_failing_store_is_answered_with_its_reason_and_the_channel_carries_on(
    feedback_agent: FeedbackAgent, tmp_path: Path
) -> None:
    agent = feedback_agent()
    r = triggered(agent, "E-1")
    store = agent.feedback.store
    good = store._db
    # the disk goes read-only under the store (as a failing card does)
    path = tmp_path / "state" / "feedback.db"
    store._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    try:
        code, doc = post_feedback(agent, {"result_id": r["result_id"], "truth": "ok"})
        assert (code, doc["reason"]) == (503, "store")
        agent.trigger("E-2", None, "test")  # the index cannot write either: counted, inspection goes on
        assert wait_for(lambda: agent.counters()["line"]["feedback"]["outlet"]["errors"] >= 1, 10.0)
    finally:
        store._db.close()
        store._db = good
    assert post_feedback(agent, {"result_id": r["result_id"], "truth": "ok"})[0] == 200
    assert triggered(agent, "E-3")["part_id"] == "E-3"
    assert agent.counters()["line"]["feedback"]["refused"] == {"api.store": 1}
