"""The stage runner on its own (pure: the stages here are stand-ins): a failing or crashing stage ends
the story, the rest is skipped, and the summary and report are still written."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from edgeline.demo import run
from edgeline.demo.context import DemoContext, Outcome
from edgeline.demo.errors import DemoError
from edgeline.demo.settings import DemoSettings
from edgeline.demo.workspace import Workspace


def _ok(ctx: DemoContext) -> Outcome:
    ctx.detail("working")
    return Outcome(True, "fine", {"n": 1})


def _fails(ctx: DemoContext) -> Outcome:
    raise DemoError("the broker did not start")


def _crashes(ctx: DemoContext) -> Outcome:
    raise ZeroDivisionError("a bug")


@pytest.mark.parametrize(("second", "message"), [(_fails, "the broker did not start"), (_crashes, "internal error")])
def test_a_failed_stage_skips_the_rest_and_the_summary_is_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, second: object, message: str
) -> None:
    monkeypatch.setattr(run, "STORY", [("a", "A", _ok), ("b", "B", second), ("c", "C", _ok)])
    ws = Workspace.create(tmp_path / "ws")
    out = io.StringIO()
    result = run.run_demo(DemoSettings.make(quick=True, devices=3), ws, Console(file=out, width=120))
    s = result.summary
    assert s["ok"] is False
    assert [(st["name"], st["status"]) for st in s["stages"]] == [
        ("a", "passed"),
        ("b", "failed"),
        ("c", "skipped"),
        ("score", "skipped"),
    ]
    assert message in s["stages"][1]["summary"]
    assert json.loads((ws.root / "summary.json").read_text())["ok"] is False
    assert "a stage failed" in (ws.root / "report.html").read_text()
    assert "[b] FAILED" in out.getvalue()


def test_workspace_refuses_a_foreign_directory_and_clears_its_own(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DemoError, match="not empty"):
        Workspace.create(foreign)
    assert (foreign / "notes.txt").read_text() == "mine"
    ws = Workspace.create(tmp_path / "ws")
    (ws.root / "devices" / "old.txt").write_text("from the last run")
    again = Workspace.create(tmp_path / "ws")
    assert not (again.root / "devices" / "old.txt").exists()
    assert (again.root / ".edgeline-demo").is_file()


def test_v3_build_failure_is_reported_not_hung(tmp_path: Path) -> None:
    """v3 builds in a child process: a build that cannot succeed (no good parts to learn from) ends
    with the builder's own reason, and the child is gone."""
    from edgeline.demo.newkind import V3Build

    ws = Workspace.create(tmp_path / "ws")
    _, trust = ws.init_secrets()
    (ws.dataset / "scratch").mkdir(parents=True)
    build = V3Build(ws, DemoSettings.make(quick=True, devices=3))
    build.start()
    with pytest.raises(DemoError, match="building v3 failed"):
        build.wait(120, lambda _msg: None, trust)
    assert build.proc is not None and build.proc.returncode == 1
    assert build.stop() == 1
