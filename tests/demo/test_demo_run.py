"""``edgeline demo --quick --json`` end to end: a real broker, camera simulator and agent processes.
Every stage's outcome is checked from the JSON it prints, and nothing may be left running."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from edgeline.demo.scoring import load_truth
from tests.demo.conftest import DemoRun, chromium_args

STORY = [
    "setup",
    "build_v1",
    "deploy_v1",
    "inspect",
    "drift",
    "detect",
    "retrain",
    "shadow_v2",
    "deploy_v2",
    "new_kind",
    "tampered",
    "score",
]
SECTIONS = ["stages", "models", "drift", "field", "new_kind", "rollouts", "fleet", "tampered"]


def test_every_stage_passes_and_stdout_is_the_json_summary(quick_run: DemoRun) -> None:
    assert quick_run.returncode == 0, quick_run.stderr[-3000:]
    s = quick_run.summary  # stdout is nothing but the JSON document
    assert s["schema"] == "edgeline.demo/1"
    assert [st["name"] for st in s["stages"]] == STORY
    failed = [(st["name"], st["summary"]) for st in s["stages"] if st["status"] != "passed"]
    assert not failed
    assert s["ok"] is True
    assert json.loads((quick_run.workdir / "summary.json").read_text()) == s
    assert "passed" in quick_run.stderr  # progress went to stderr


def test_devices_are_separate_agent_processes_with_generated_configs(quick_run: DemoRun) -> None:
    setup = quick_run.stage("setup")["details"]
    pids = [d["pid"] for d in setup["devices"].values()]
    assert len(set(pids)) == 3 and os.getpid() not in pids
    for device, info in setup["devices"].items():
        text = Path(info["config"]).read_text()
        assert f'id = "{device}"' in text and 'kind = "url"' in text
    assert quick_run.summary["processes"]["exit_codes"] == {
        "v3_build": 0,  # v3's build, a child process since v1 was built, finished and exited cleanly
        "line-1": 0,
        "line-2": 0,
        "line-3": 0,
        "camera": 0,
        "broker": "stopped",
    }


def test_v1_v2_v3_rolled_out_canary_first(quick_run: DemoRun) -> None:
    v1, v2 = quick_run.stage("deploy_v1")["details"], quick_run.stage("deploy_v2")["details"]
    v3 = quick_run.stage("new_kind")["details"]["rollout"]
    assert v1["state"] == v2["state"] == v3["state"] == "completed"
    assert all(len(r["waves"][0]) == 1 for r in (v1, v2, v3))  # a canary wave of one device
    assert v2["waves"][0] == ["line-2"]  # v2 first goes to the line that drifted
    assert v3["version"] == 3 and v3["waves"] == [["line-1"], ["line-2", "line-3"]]
    assert {d["model_version"] for d in quick_run.summary["fleet"]} == {3}
    assert all(d["online"] for d in quick_run.summary["fleet"])
    kinds = {(e["device"], e["event"], e["version"]) for e in quick_run.summary["timeline"]}
    for device in ("line-1", "line-2", "line-3"):
        assert {(device, "committed", v) for v in (1, 2, 3)} <= kinds


def test_drift_is_detected_on_the_darkened_line_only(quick_run: DemoRun) -> None:
    detect = quick_run.stage("detect")["details"]
    assert detect["line"] == "line-2"
    assert detect["lines"]["line-2"]["alarm"] is True
    assert detect["false_alarms"] == []
    drift = quick_run.summary["drift"]["devices"]
    assert [d for d, v in drift.items() if v["alarm"]] == ["line-2"]
    assert drift["line-2"]["max_score"] > 2 * max(drift["line-1"]["max_score"], drift["line-3"]["max_score"])
    # the device's own offline alarm (a local event to the line) fired too, and only there
    assert drift["line-2"]["local_alarm_s"] is not None
    assert drift["line-1"]["local_alarm_s"] is None and drift["line-3"]["local_alarm_s"] is None


def test_v2_recovers_the_accuracy_v1_lost_on_the_darkened_line(quick_run: DemoRun) -> None:
    score = quick_run.stage("score")["details"]
    acc, frames = score["accuracy"], score["frames"]
    assert frames["v1_drifted"] >= 20 and frames["v2_drifted"] >= 20
    assert acc["v2_drifted"] - acc["v1_drifted"] >= 0.15, acc
    assert acc["v2_drifted"] >= 0.75, acc
    assert acc["v1_clean"] >= 0.75 and acc["v2_clean"] >= 0.75, acc
    assert score["unmatched"] <= 0.02 * score["frames_scored"]
    retrain = quick_run.stage("retrain")["details"]
    assert retrain["registered"]["version"] == 2 and retrain["registered"]["parent"] == 1
    assert abs(retrain["estimated_lighting"]["brightness"] - (-70)) < 20  # read from telemetry histograms
    models = quick_run.summary["models"]
    assert models["v2"]["accuracy_drifted"] == acc["v2_drifted"]


def test_tampered_update_is_refused_while_inspection_continues(quick_run: DemoRun) -> None:
    t = quick_run.summary["tampered"]
    assert t["rejected"] is True
    assert set(t["reasons"].values()) == {"bad_signature"}
    assert sorted(t["reasons"]) == ["line-1", "line-2", "line-3"]
    assert all(n > 0 for n in t["frames_by_device"].values())  # frame counters kept rising
    assert set(t["running_after"].values()) == {3}  # still v3, the version they ran
    refused = json.loads(Path(t["manifest"]).read_text())
    assert refused["body"]["version"] == t["version"] == 4


def test_v3_sends_a_defect_kind_no_training_image_shows_to_reject_or_review(quick_run: DemoRun) -> None:
    stage = quick_run.stage("new_kind")
    assert stage["status"] == "passed", stage["summary"]
    nk = stage["details"]
    assert quick_run.summary["new_kind"] == nk
    kind, line = nk["kind"], nk["line"]
    assert (kind, line) == ("crack", "line-3")
    # the kind is not in the training set, and only that line showed it (the camera's ground truth)
    assert sorted(p.name for p in (quick_run.workdir / "dataset").iterdir()) == [
        "dent",
        "missing_hole",
        "ok",
        "scratch",
    ]
    for device in ("line-1", "line-2", "line-3"):
        truth = load_truth(quick_run.workdir / "truth" / f"{device}.csv")
        labels = {row.label for rows in truth.values() for row in rows}
        assert (kind in labels) == (device == line)
    # v3's verdicts on those parts, scored from the device's own log against the ground truth
    live = nk["live"]
    assert live["frames"] >= 20
    assert live["reject"] + live["review"] + live["pass"] == live["frames"]
    assert live["caught"] >= 0.8, live
    assert live["caught"] == round((live["reject"] + live["review"]) / live["frames"], 4)
    assert nk["good_parts"]["frames"] > 0 and nk["good_parts"]["rejected"] <= 0.1, nk["good_parts"]
    # what the classifier would have done with the same kind of parts (offline, the agents' code path)
    v2, v3 = nk["offline"]["v2"], nk["offline"]["v3"]
    assert v2["frames"] == v3["frames"] == 100
    assert v3["caught"] >= 0.9 and v2["caught"] <= 0.6, (v2, v3)
    assert v3["caught"] - v2["caught"] >= 0.3
    # v3 is an inspection model gated on the line's figures; its build report's figures are shown
    model = nk["v3"]
    assert model["model_kind"] == "hybrid" and model["labels"][-1] == "anomaly"
    build = model["build"]
    assert build["false_reject"]["n"] == 160 and build["escape"]["n"] == 480  # every image, out of fold
    assert build["false_reject"]["value"] <= build["targets"]["max_false_reject"]
    assert build["escape"]["value"] <= build["targets"]["max_escape"]
    assert quick_run.summary["models"]["v3"]["new_kind_caught"] == live["caught"]
    assert set(nk["good_parts_by_line"]) == {"line-1", "line-2", "line-3"}


def test_nothing_is_left_running(quick_run: DemoRun) -> None:
    assert quick_run.summary["processes"]["leftover"] == []
    needle = str(quick_run.workdir).encode()
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    alive.append(int(entry.name))
            except OSError:
                continue
    assert alive == []  # no agent, camera simulator or broker of this workspace


def test_report_renders_in_chromium(quick_run: DemoRun, tmp_path: Path) -> None:
    report = quick_run.workdir / "report.html"
    assert quick_run.summary["report"] == str(report)
    url = report.as_uri()
    dom = subprocess.run(
        [*chromium_args(tmp_path / "p1"), "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section in SECTIONS:
        assert f'<section id="{section}">' in dom.stdout
    assert dom.stdout.count("<svg") >= 5
    assert "the run stopped before" not in dom.stdout
    nk = quick_run.summary["new_kind"]
    for figure in (nk["live"]["caught"], nk["offline"]["v2"]["caught"], nk["v3"]["build"]["escape"]["value"]):
        assert f"{100 * figure:.1f}%" in dom.stdout
    assert "false reject " + f"{100 * nk['v3']['build']['false_reject']['value']:.1f}%" in dom.stdout
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert console == []
    shot = tmp_path / "report.png"
    run = subprocess.run(
        [*chromium_args(tmp_path / "p2"), "--window-size=1280,3000", f"--screenshot={shot}", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert pixels.shape[:2] == (3000, 1280)
    assert pixels.std() > 20  # not a blank page
    assert len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 200  # text, tables and figures


def test_v2_runs_in_the_shadow_of_v1_on_the_drifted_line_before_it_is_promoted(quick_run: DemoRun) -> None:
    stage = quick_run.stage("shadow_v2")
    assert stage["status"] == "passed", stage["summary"]
    d = stage["details"]
    ev = d["evidence"]
    assert list(ev["lines"]) and ev["total"]["compared"] > 0 and ev["total"]["windows"] >= 1
    assert ev["challenger"]["version"] == 2 and ev["total"]["champion_versions"] == [1]
    assert 0.0 <= ev["total"]["agreement_rate"] <= 1.0 and "agreement" in stage["summary"]
    assert d["policy"].startswith("at least 1 line(s) with evidence") and "accepted" in d["decision"]
    # the promotion came after: v2's rollout started once the shadow had been stopped
    marks = quick_run.summary["marks"]
    assert marks["v2_shadow"] < marks["v2_rollout"]


def test_the_lines_are_scored_from_operator_feedback_beside_the_camera_truth(quick_run: DemoRun) -> None:
    """A simulated operator posted the truth of a share of each line's parts to the agent's local API;
    the counts rode in telemetry and the cloud's field rates are shown beside the camera's figures."""
    block = quick_run.summary["field"]
    operator = block["operator"]
    assert {d: o["share"] for d, o in operator.items()} == {"line-1": 0.10, "line-2": 0.25, "line-3": 0.05}
    for d, o in operator.items():
        # every check went through the API and was stored; roughly the share of the verdicts seen
        assert o["checked"] > 0 and o["stored"] == o["checked"] and not o["refused"], (d, o)
        assert 0.4 * o["share"] < o["checked"] / o["verdicts_seen"] < 1.8 * o["share"], (d, o)
    rows = block["rows"]
    assert {r["device"] for r in rows} == {"line-1", "line-2", "line-3"}
    for r in rows:  # the cloud never holds more than the operator said, cell by cell
        assert all(r["counts_arrived"][k] <= n for k, n in r["counts_given"].items()), r
    # the feedback reached the cloud in telemetry windows (the last window of a stop may be held back)
    assert block["feedback_given"] > 0 and block["feedback_arrived"] >= 0.9 * block["feedback_given"]
    by = {(r["device"], r["version"]): r for r in rows}
    drifted = by[("line-2", 1)]  # v1 on the darkened line, a quarter of its parts checked
    assert drifted["field"]["false_reject"]["status"] == "measured"
    cam, fb = drifted["camera"]["false_reject"], drifted["field"]["false_reject"]
    assert abs(fb["value"] - cam["value"]) < 0.25  # about 4 pp s.d. with ~80 good parts checked
    statuses = {r["field"]["escape"]["status"] for r in rows if r["field"]}
    assert "too_little" in statuses  # 5% of a short run: the cloud says it cannot tell
    assert "Field rates per line" in quick_run.stderr  # the console table
    page = (quick_run.workdir / "report.html").read_text("utf-8")
    assert 'id="field"' in page and "too little feedback to tell" in page
