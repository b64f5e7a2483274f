"""The demo's field rates (pure parts and the operator's plumbing): camera truth beside operator
feedback, the operator's tally checked against what the cloud received, the sink log tailed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from edgeline.demo.field_view import camera_rates, field_block, given_counts
from edgeline.demo.line_operator import LineTally, OperatorLine, StoryOperator, _LineWork, _Tail
from edgeline.demo.report.html import render
from edgeline.demo.scoring import Scored


def _frame(device: str, version: int, truth: str, verdict: str) -> Scored:
    return Scored(device, version, truth, "x", "clean", 0.0, verdict)


def test_camera_rates_count_unknown_against_good_parts_and_passes_of_defects_as_escapes() -> None:
    frames = [_frame("l", 1, "ok", "ok")] * 8 + [_frame("l", 1, "ok", "unknown"), _frame("l", 1, "ok", "defect")]
    frames += [_frame("l", 1, "dent", "ok")] + [_frame("l", 1, "scratch", "defect")] * 3
    r = camera_rates(frames)
    assert (r["escape"]["events"], r["escape"]["n"]) == (1, 4)
    assert (r["false_reject"]["events"], r["false_reject"]["n"]) == (2, 10)
    assert r["escape"]["low"] < 0.25 < r["escape"]["high"]
    assert camera_rates([])["escape"]["value"] is None


def _row(value: str, version: int, counts: dict[str, int]) -> dict[str, object]:
    n = sum(counts.values())
    rate = {"status": "too_little", "text": f"too little feedback to tell: {n}"}
    row = {"scope": "line", "value": value, "version": version, "counts": counts, "feedback": n, "frames": 100}
    return row | {"escape": rate, "false_reject": rate}


def test_the_block_joins_lines_by_pseudonym_and_checks_the_counts_cell_by_cell() -> None:
    tally = LineTally(0.25)
    tally.said[1] = Counter({("defect", "ok"): 2, ("ok", "ok"): 5, ("ok", "unknown"): 1})
    given = given_counts(tally.said[1])
    assert given == {
        "pass_ok": 5, "pass_defect": 2, "reject_ok": 0, "reject_defect": 0, "unknown_ok": 1, "unknown_defect": 0
    }  # fmt: skip
    short = {**given, "pass_ok": 4}  # one feedback did not arrive
    report = {"min_parts": 30, "rows": [_row("abc123abc123", 1, given), _row("abc123abc123", 2, short)]}
    frames = [_frame("line-1", 1, "ok", "ok"), _frame("line-1", 2, "dent", "ok")]
    block = field_block(report, frames, {"line-1": tally}, {"abc123abc123": "line-1"})
    v1, v2 = block["rows"]
    assert (v1["device"], v1["version"], v1["counts_match"], v1["feedback_arrived"]) == ("line-1", 1, True, 8)
    # v2: the operator said nothing about it, yet 7 arrived: the counts disagree and the row says so
    assert (v2["version"], v2["feedback_given"], v2["counts_match"]) == (2, 0, False)
    assert block["feedback_given"] == 8 and block["feedback_arrived"] == 15
    assert v1["field"]["escape"]["text"].startswith("too little feedback")
    page = render({"ok": True, "field": block})
    assert 'id="field"' in page and "too little feedback to tell" in page and "line-1" in page


def test_the_report_says_so_when_there_are_no_field_rates() -> None:
    assert "No field rates" in render({"ok": False, "field": {}})


def test_the_tail_reads_complete_lines_only_and_starts_again_when_the_file_shrank(tmp_path: Path) -> None:
    path = tmp_path / "verdicts.jsonl"
    tail = _Tail(path)
    assert tail.read() == []  # no file yet
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c": ')  # the last line is still being written
    assert tail.read() == [{"a": 1}, {"b": 2}]
    with open(path, "ab") as fh:
        fh.write(b"3}\nnot json\n[1, 2]\n")
    assert tail.read() == [{"c": 3}]  # a broken line and a non-object are skipped
    path.write_bytes(b'{"d": 4}\n')  # rotated or truncated: read from the top again
    assert tail.read() == [{"d": 4}]


def test_the_operator_refuses_a_share_outside_0_1() -> None:
    line = OperatorLine("line-1", Path("v.jsonl"), Path("t.csv"), 1, 0.0)
    with pytest.raises(ValueError, match="share of parts"):
        StoryOperator([line], seed=7)


def test_verdicts_without_a_result_id_or_a_truth_row_are_never_posted(tmp_path: Path) -> None:
    """Nothing listens on the port: a post would be counted as refused; none may happen."""
    verdicts, truth = tmp_path / "v.jsonl", tmp_path / "t.csv"
    truth.write_text("conn,index,t,label,brightness,contrast\n1,0,100.000,ok,0.000,1.0000\n", "utf-8")
    recs = [
        {"type": "verdict", "frame_id": 0, "ref": "0", "ts": 100.01, "verdict": "ok", "model_version": 1},
        {"type": "verdict", "frame_id": 1, "ref": "1", "ts": 100.1, "verdict": "ok", "result_id": "r1"},
        {"type": "event", "kind": "x", "result_id": "r2"},
    ]
    verdicts.write_text("".join(json.dumps(r) + "\n" for r in recs), "utf-8")
    work = _LineWork(OperatorLine("line-1", verdicts, truth, 9, 1.0), seed=7)
    work.round(0.0)
    # the one verdict with a result id has no truth row yet (index 1): it waits, nothing is posted
    assert (work.tally.seen, work.tally.checked, len(work.pending)) == (1, 0, 1)
    work.round(100.0)  # long after: given up, counted
    assert (work.tally.checked, work.tally.unpaired, work.pending) == (0, 1, [])


def test_the_demo_tables_say_a_rate_in_few_words() -> None:
    from edgeline.demo.field_view import field_text

    measured = {"status": "measured", "events": 14, "n": 308, "low": 0.025, "high": 0.075, "text": "long"}
    assert field_text(measured) == "4.5% (14/308, 95% CI 2.5-7.5%)"
    assert field_text({"status": "too_little", "events": 2, "n": 13, "text": "long"}) == (
        "too little feedback to tell (2/13)"
    )
    assert field_text({"status": "none", "events": 0, "n": 0, "text": "no feedback on good parts"}) == (
        "no feedback on good parts"
    )
    assert field_text(None) == "no feedback arrived"
