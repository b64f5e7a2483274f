"""The pure rules of feedback: what a request may say (hostile input refused with its reason), what
truth a result takes, and the confusion counts a stretch of the log adds up to."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from edge_agent.feedback.rules import (
    MAX_REQUEST_BYTES,
    FeedbackError,
    LogEntry,
    ModelLabels,
    confusion,
    parse_request,
    resolve_truth,
)


def _req(**doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_a_request_names_one_result_and_a_truth() -> None:
    r = parse_request(_req(result_id="dev-1-6a-3", truth="defect", by="Anna O'Neil"))
    assert (r.result_id, r.part_id, r.truth, r.by) == ("dev-1-6a-3", "", "defect", "Anna O'Neil")
    r = parse_request(_req(part_id="A-1042", truth="scratch", ref="q-9"))
    assert (r.part_id, r.truth, r.by, r.ref) == ("A-1042", "scratch", "", "q-9")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "bad_request"),
        (b"\xff\xfe", "bad_request"),
        (b"[1, 2]", "bad_request"),
        (b"null", "bad_request"),
        (_req(result_id="r-1"), "bad_truth"),
        (_req(truth="ok"), "bad_request"),
        (_req(result_id="r-1", part_id="p-1", truth="ok"), "bad_request"),
        (_req(result_id="r-1", truth="ok", frame="aGVsbG8="), "bad_request"),  # no room for a frame
        (_req(result_id="r 1", truth="ok"), "bad_request"),
        (_req(result_id="x" * 129, truth="ok"), "bad_request"),
        (_req(result_id=17, truth="ok"), "bad_request"),
        (_req(result_id="r-1", truth="unknown"), "bad_truth"),
        (_req(result_id="r-1", truth="<b>defect</b>"), "bad_truth"),
        (_req(result_id="r-1", truth=""), "bad_truth"),
        (_req(result_id="r-1", truth=1), "bad_truth"),
        (_req(result_id="r-1", truth="ok", by="<script>alert(1)</script>"), "bad_by"),
        (_req(result_id="r-1", truth="ok", by="x'; DROP TABLE feedback; --"), "bad_by"),
        (_req(result_id="r-1", truth="ok", by="anna\nforged log line"), "bad_by"),
        (_req(result_id="r-1", truth="ok", by="anna\x1b[2J"), "bad_by"),
        (_req(result_id="r-1", truth="ok", by=" padded"), "bad_by"),
        (_req(result_id="r-1", truth="ok", by="a" * 65), "bad_by"),
        (_req(result_id="r-1", truth="ok", by=["a"]), "bad_by"),
        (b"{" + b" " * MAX_REQUEST_BYTES + b"}", "too_large"),
    ],
)
def test_hostile_or_malformed_requests_are_refused_with_the_reason(body: bytes, reason: str) -> None:
    with pytest.raises(FeedbackError) as err:
        parse_request(body)
    assert err.value.reason == reason


def test_truth_against_the_result_and_its_model() -> None:
    model = ModelLabels(("good", "scratch", "dent"), "good")
    assert resolve_truth("confirm", "defect", model) == "defect"
    assert resolve_truth("confirm", "ok", None) == "ok"
    assert resolve_truth("good", "defect", model) == "ok"  # the model's ok label is "ok"
    assert resolve_truth("scratch", "ok", model) == "scratch"
    assert resolve_truth("scratch", "ok", None) == "scratch"  # labels unknown: taken as spelled
    for truth, verdict, reason in (
        ("crack", "ok", "bad_truth"),  # not a class of the model
        ("confirm", "unknown", "bad_truth"),  # an unknown verdict cannot be confirmed
        ("ok", None, "no_verdict"),  # missed, refused, error
    ):
        with pytest.raises(FeedbackError) as err:
            resolve_truth(truth, verdict, model)
        assert err.value.reason == reason


def _e(seq: int, rid: str, truth: str, prev: str | None, verdict: str = "ok", version: int = 3) -> LogEntry:
    return LogEntry(seq, rid, "gasket", version, verdict, truth, prev)


def test_confusion_counts_the_net_change_of_a_stretch() -> None:
    log = [
        _e(1, "a", "ok", None),
        _e(2, "b", "defect", None),
        _e(3, "b", "ok", "defect"),  # replaced within the stretch: only the last counts
        _e(4, "c", "scratch", None, "defect", 4),
    ]
    c = confusion(log)
    assert c.added == {("gasket", 3): Counter({("ok", "ok"): 2}), ("gasket", 4): Counter({("defect", "scratch"): 1})}
    assert c.retracted == {}
    # a later stretch replaces one counted before: the old pair is retracted, the new one added
    later = confusion([_e(5, "a", "defect", "ok"), _e(6, "a", "defect", "defect"), _e(7, "c", "scratch", "scratch")])
    assert later.added == {("gasket", 3): Counter({("ok", "defect"): 1})}
    assert later.retracted == {("gasket", 3): Counter({("ok", "ok"): 1})}
    total: Counter[tuple[str, str]] = Counter()
    for part in (c, later):
        for counts in part.net().values():
            total.update(counts)
    assert +total == Counter({("ok", "ok"): 1, ("ok", "defect"): 1, ("defect", "scratch"): 1})
