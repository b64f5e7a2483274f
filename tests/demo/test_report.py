"""The report renders whatever the summary holds: a run that stopped early, and hostile strings."""

from __future__ import annotations

from edgeline.demo.report.html import render


def test_a_run_that_failed_early_renders_notes_not_broken_figures() -> None:
    summary = {
        "ok": False,
        "stages": [
            {"name": "setup", "title": "Start", "ok": True, "status": "passed", "seconds": 1.0, "summary": "up"},
            {"name": "build_v1", "title": "1. Build", "ok": False, "status": "failed", "seconds": 2.0, "summary": "x"},
            {"name": "deploy_v1", "title": "2. Deploy", "ok": False, "status": "skipped", "summary": "skipped"},
        ],
    }
    page = render(summary)
    assert "a stage failed" in page
    assert page.count("the run stopped before this part of the story") >= 4
    assert "<svg" not in page


def test_strings_from_devices_are_escaped() -> None:
    evil = "<script>alert(1)</script>"
    summary = {
        "ok": True,
        "fleet": [{"device": evil, "online": True, "model_version": 2, "last_error": evil}],
        "tampered": {"rejected": True, "reason": evil, "devices": [evil], "reasons": {evil: evil}},
        "stages": [{"name": "x", "title": evil, "ok": True, "summary": evil}],
    }
    page = render(summary)
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


def test_the_new_defect_kind_section_shows_the_build_figures_and_the_shares() -> None:
    rate = {"value": 0.025, "low": 0.0069, "high": 0.0628, "events": 4, "n": 160}
    routes = {"frames": 36, "reject": 35, "review": 1, "pass": 0, "caught": 1.0, "rejected": 0.9722}
    summary = {
        "ok": True,
        "new_kind": {
            "kind": "<b>crack</b>",
            "line": "line-3",
            "v3": {"model_kind": "hybrid", "build": {"false_reject": rate, "escape": {**rate, "value": 0.0, "n": 480}}},
            "live": {**routes, "labels": {"anomaly": 35}},
            "good_parts": {"frames": 30, "reject": 0, "review": 2, "pass": 28, "caught": 0.0667, "rejected": 0.0},
            "offline": {"v2": {**routes, "frames": 100, "caught": 0.35}, "v3": {**routes, "frames": 100}},
            "good_parts_by_line": {"line-2": {"lighting": "darkened", "frames": 40, "rejected": 0.025, "review": 3}},
        },
    }
    page = render(summary)
    section = page[page.index('<section id="new_kind">') :]
    section = section[: section.index("</section>")]
    assert "false reject 2.5% (4/160, 95% CI 0.7%-6.3%)" in section
    assert "escape 0.0% (4/480" in section
    assert "100.0%" in section and "35.0%" in section  # v3 live, v2 offline
    assert "line-2 (darkened lighting) 2.5% rejected" in section
    assert "<svg" in section
    assert "<b>crack</b>" not in page and "&lt;b&gt;crack&lt;/b&gt;" in section
