"""The triggered scenario: a simulated PLC drives one triggered station over Modbus TCP.

The scoring is pure and checked on hand-made reads, records and truth; one real run of
``edgeline demo --scenario triggered`` (camera simulator, v1 build, agent process, pymodbus PLC)
checks that every part got exactly one result, the same on Modbus and in the station's sink."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edge_agent.line import modbus_map as mm
from edgeline.demo.plc import PlcRead, decode, part_of
from edgeline.demo.scoring import TruthRow
from edgeline.demo.triggered_score import score_parts
from tests.demo.conftest import child_env, edgeline


def _record(part: int, verdict: str | None, index: int) -> dict[str, Any]:
    return {
        "type": "verdict",
        "part_id": str(part),
        "verdict": verdict,
        "label": verdict,
        "model_version": 1,
        "frame_id": index,
        "ref": str(index),
        "ts": 100.0 + index,
        "uncertain": False,
        "times": {"wait_ms": 10.0, "inspect_ms": 1.0 + index / 10, "total_ms": 12.0},
    }


def _truth(labels: list[str]) -> dict[int, list[TruthRow]]:
    return {0: [TruthRow(100.0 + i, lab, 0.0, 1.0) for i, lab in enumerate(labels)]}


def _read(part: int, verdict: str, state: str = "ok") -> PlcRead:
    return PlcRead(part, verdict, state, 0, 0.9, 20.0 + part)


def test_escapes_and_false_rejects_are_counted_against_the_cameras_truth() -> None:
    labels = ["ok", "ok", "ok", "dent", "scratch", "ok"]
    verdicts = ["ok", "defect", "unknown", "ok", "defect", "ok"]
    reads = [_read(i + 1, v) for i, v in enumerate(verdicts)]
    records = [_record(i + 1, v, i) for i, v in enumerate(verdicts)]
    s = score_parts(reads, records, _truth(labels))
    assert s["ok"] is True
    assert s["truth"] == {"good": 4, "defective": 2, "kinds": {"dent": 1, "scratch": 1}}
    assert (s["escape"]["count"], s["escape"]["of"]) == (1, 2)  # the dent told ok
    assert (s["false_reject"]["count"], s["false_reject"]["of"]) == (2, 4)  # defect and unknown on good parts
    lo, hi = s["false_reject"]["ci95"]
    assert 0.0 < lo < 0.5 < hi < 1.0
    assert s["modbus_equals_sink"] == {"count": 6, "of": 6}
    assert s["trigger_to_modbus_ms"]["max"] == 26.0


@pytest.mark.parametrize(
    "change",
    ["missing_in_sink", "disagree", "no_result", "unmatched"],
)
def test_a_part_without_one_consistent_result_fails_the_scenario(change: str) -> None:
    labels = ["ok", "dent", "ok"]
    reads = [_read(1, "ok"), _read(2, "defect"), _read(3, "ok")]
    records = [_record(1, "ok", 0), _record(2, "defect", 1), _record(3, "ok", 2)]
    if change == "missing_in_sink":
        records.pop()
    elif change == "disagree":
        records[1]["verdict"] = "ok"
    elif change == "no_result":
        reads[2] = PlcRead(3, "no_result", "no_result", None, None, None)
    else:
        records[2]["ref"] = "99"  # a frame the camera never logged
        records[2]["frame_id"] = 99
    s = score_parts(reads, records, _truth(labels))
    assert s["ok"] is False


def test_the_plc_decodes_the_register_map() -> None:
    rec = {"result_seq": 7, "verdict": "defect", "state": "late", "class_index": 2, "confidence": 0.8125}
    regs = mm.result_registers({**rec, "part_id": "123456", "trigger_id": 9, "model_version": 3}, 1, 2)
    assert part_of(regs) == 123456
    r = decode(123456, regs, 5.0)
    assert (r.verdict, r.state, r.class_index, r.confidence) == ("defect", "late", 2, 0.8125)
    none = decode(5, mm.result_registers({"part_id": "5", "verdict": None, "state": "missed"}, 1, 0), 1.0)
    assert (none.verdict, none.state, none.class_index, none.confidence, none.verdict_or_none) == (
        "none",
        "missed",
        None,
        None,
        None,
    )


def test_the_triggered_scenario_runs_a_plc_against_a_station(tmp_path: Path) -> None:
    work = tmp_path / "w"
    proc = subprocess.run(
        edgeline("demo", "--scenario", "triggered", "--quick", "--parts", "40", "--workdir", str(work), "--json"),
        capture_output=True,
        check=False,
        text=True,
        env=child_env(),
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    s = json.loads(proc.stdout)
    assert s["scenario"] == "triggered" and s["ok"] is True, s
    # every part got its result; "late" (past the budget, as the scenario accepts) is the machine's load
    assert s["parts"] == 40 and set(s["plc_states"]) <= {"ok", "late"} and sum(s["plc_states"].values()) == 40
    assert s["modbus_equals_sink"] == {"count": 40, "of": 40} and s["sink_results"] == 40
    assert s["truth"]["good"] + s["truth"]["defective"] == 40
    assert s["trigger_to_modbus_ms"]["p50"] is not None and s["inspect_ms"]["p50"] is not None
    assert json.loads((work / "summary.json").read_text())["parts"] == 40
    # the simulated operator's feedback went through the station's API and gives its own field rates
    fb = s["operator_feedback"]
    assert fb["checked"] > 0 and fb["stored"] == fb["checked"] and fb["refused"] == {}
    assert fb["verdicts_with_feedback"] == fb["stored"] == fb["escape"]["n"] + fb["false_reject"]["n"]
    assert fb["escape"]["events"] <= s["escape"]["count"] and fb["false_reject"]["events"] <= s["false_reject"]["count"]
    # the station's config is the triggered-station layout: trigger mode and the Modbus server
    cfg = (work / "devices" / "station-1" / "station.toml").read_text()
    assert 'mode = "trigger"' in cfg and "[line.modbus]" in cfg


def test_parts_is_refused_outside_the_triggered_scenario(tmp_path: Path) -> None:
    proc = subprocess.run(
        edgeline("demo", "--parts", "5", "--workdir", str(tmp_path / "w")),
        capture_output=True,
        check=False,
        text=True,
        env=child_env(),
        timeout=60,
    )
    assert proc.returncode == 2 and "--scenario triggered" in proc.stderr


def test_field_rates_from_the_station_feedback_store(tmp_path: Path) -> None:
    from edge_agent.feedback.rules import FeedbackRequest
    from edge_agent.feedback.store import FeedbackStore
    from edgeline.demo.operator import field_rates

    db = tmp_path / "feedback.db"
    store = FeedbackStore(db)
    recs = [
        {
            "result_id": f"r{i}",
            "part_id": str(i),
            "verdict": v,
            "label": v,
            "confidence": 0.9,
            "model": "m",
            "model_version": 1,
        }
        for i, v in enumerate(["ok"] * 30 + ["defect"] * 10)
    ]
    store.add_results(recs)
    for i in range(30):  # 30 good parts passed, 2 of them were defective (escapes)
        store.give(FeedbackRequest(truth="defect" if i < 2 else "ok", result_id=f"r{i}"), "api")
    for i in range(30, 40):  # 10 rejected: 9 defective, 1 good (a false reject)
        store.give(FeedbackRequest(truth="ok" if i == 30 else "defect", result_id=f"r{i}"), "api")
    store.close()
    esc, fr, n = field_rates(db, 40)
    assert n == 40
    assert (esc.events, esc.n, esc.status) == (2, 11, "measured")
    assert (fr.events, fr.n, fr.status) == (1, 29, "measured")
    esc_small, _, _ = field_rates(db, 40, min_parts=30)
    assert esc_small.status == "too_little" and "too little feedback to tell" in esc_small.text()
