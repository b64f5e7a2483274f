"""``edgeline demo`` refuses bad input at once, before starting anything."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.demo.conftest import ROOT, child_env, edgeline


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        edgeline(*args), check=False, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=60
    )


def test_help_explains_the_story_and_the_flags() -> None:
    r = _run("demo", "--help")
    assert r.returncode == 0
    for word in ("--quick", "--devices", "--workdir", "--json", "tampered", "canary", "report"):
        assert word in r.stdout


def test_too_few_devices_is_refused() -> None:
    r = _run("demo", "--devices", "2")
    assert r.returncode == 2
    assert "--devices" in r.stderr


def test_a_foreign_non_empty_workdir_is_refused_and_left_alone(tmp_path: Path) -> None:
    keep = tmp_path / "precious.txt"
    keep.write_text("do not delete")
    r = _run("demo", "--quick", "--workdir", str(tmp_path))
    assert r.returncode == 1
    assert "not empty and not a previous demo workspace" in r.stderr
    assert keep.read_text() == "do not delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]


def test_a_file_as_workdir_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    r = _run("demo", "--workdir", str(f))
    assert r.returncode != 0
    assert "file" in r.stderr
