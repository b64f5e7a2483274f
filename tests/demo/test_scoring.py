"""Joining verdicts to ground truth (pure): connections, reconnects, skew, lighting conditions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeline.demo.newkind import live_routes, routed, shares
from edgeline.demo.scoring import Scored, TruthRow, condition, confusion, load_truth, score_device

DRIFTED = (-70.0, 0.7)


def _truth(t0: float, labels: list[str], b: float = 0.0, c: float = 1.0) -> list[TruthRow]:
    return [TruthRow(t0 + i * 0.1, lab, b, c) for i, lab in enumerate(labels)]


def _verdict(frame_id: int, ref: int, ts: float, label: str, version: int = 1) -> dict[str, Any]:
    return {
        "type": "verdict",
        "frame_id": frame_id,
        "ref": str(ref),
        "ts": ts,
        "label": label,
        "model_version": version,
    }


def test_two_connections_are_told_apart_by_frame_id_minus_ref_and_time() -> None:
    truth = {1: _truth(100.0, ["ok", "dent", "ok"]), 2: _truth(200.0, ["scratch", "ok"], *DRIFTED)}
    records = [
        _verdict(0, 0, 100.01, "ok"),
        _verdict(1, 1, 100.11, "dent"),
        # reconnect: the agent's frame ids go on, the camera's index starts again
        _verdict(5, 0, 200.02, "ok", version=2),
        _verdict(6, 1, 200.12, "ok", version=2),
        {"type": "event", "kind": "camera_state"},
    ]
    scored, unmatched = score_device("line-1", records, truth, DRIFTED)
    assert unmatched == 0
    got = sorted((s.truth, s.predicted, s.condition, s.version) for s in scored)
    assert got == sorted(
        [
            ("ok", "ok", "clean", 1),
            ("dent", "dent", "clean", 1),
            ("scratch", "ok", "drifted", 2),
            ("ok", "ok", "drifted", 2),
        ]
    )


def test_scored_frames_carry_the_verdict_and_its_uncertainty() -> None:
    truth = {1: _truth(100.0, ["crack", "crack", "ok"])}
    records = [
        {**_verdict(0, 0, 100.0, "anomaly", version=3), "verdict": "defect", "uncertain": False},
        {**_verdict(1, 1, 100.1, "unknown", version=3), "verdict": "unknown", "uncertain": True},
        {**_verdict(2, 2, 100.2, "ok", version=3), "verdict": "ok", "uncertain": True},
    ]
    scored, _ = score_device("d", records, truth, DRIFTED)
    assert [(f.truth, f.verdict, f.uncertain) for f in scored] == [
        ("crack", "defect", False),
        ("crack", "unknown", True),
        ("ok", "ok", True),
    ]
    assert live_routes(f for f in scored if f.truth == "crack") == {
        "frames": 2, "reject": 1, "review": 1, "pass": 0, "caught": 1.0, "rejected": 0.5,
        "labels": {"anomaly": 1, "unknown": 1},
    }  # fmt: skip


def test_a_verdict_routes_a_part_to_reject_review_or_on() -> None:
    assert routed("defect", False) == "reject"
    assert routed("unknown", True) == "review"
    assert routed("ok", True) == "review"  # in the review band
    assert routed("ok", False) == "pass"
    assert shares([]) == {"frames": 0, "reject": 0, "review": 0, "pass": 0, "caught": None, "rejected": None}
    assert shares(["reject", "pass", "pass", "review"])["caught"] == 0.5


def test_verdicts_far_from_any_camera_frame_are_not_guessed() -> None:
    truth = {1: _truth(100.0, ["ok", "dent"])}
    scored, unmatched = score_device("d", [_verdict(0, 0, 500.0, "ok")], truth, DRIFTED)
    assert scored == [] and unmatched == 1


def test_malformed_records_are_skipped() -> None:
    truth = {1: _truth(100.0, ["ok"])}
    bad = [{"type": "verdict", "frame_id": "x", "ref": "0"}, {"type": "verdict"}, _verdict(0, 0, 100.0, "ok")]
    scored, _ = score_device("d", bad, truth, DRIFTED)
    assert len(scored) == 1


def test_ramp_frames_count_for_neither_condition() -> None:
    assert condition(TruthRow(0, "ok", 0.0, 1.0), DRIFTED) == "clean"
    assert condition(TruthRow(0, "ok", -70.0, 0.7), DRIFTED) == "drifted"
    assert condition(TruthRow(0, "ok", -35.0, 0.85), DRIFTED) == "ramp"


def test_truth_file_cut_short_is_read_up_to_the_last_whole_row(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("conn,index,t,label,brightness,contrast\n1,0,1.0,ok,0,1\n1,1,1.1,dent,0,1\n1,2,1.")
    assert [r.label for r in load_truth(p)[1]] == ["ok", "dent"]
    assert load_truth(tmp_path / "missing.csv") == {}


def test_confusion_counts_and_accuracy() -> None:
    frames = [Scored("d", 1, "ok", "ok", "clean", 0), Scored("d", 1, "dent", "ok", "clean", 0)]
    c = confusion(frames, ["dent", "ok"])
    assert c.matrix == ((0, 1), (0, 1))
    assert c.accuracy == 0.5
    assert confusion([], ["dent", "ok"]).accuracy is None
