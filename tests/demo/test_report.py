"""The report renders whatever the summary holds: a run that stopped early, and hostile strings."""

from __future__ import annotations

from cloud_registry.report.html import render


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
