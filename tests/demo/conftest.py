"""Fixtures of the demo tests: one real ``edgeline demo --quick --json`` run shared by the tests that
check its outcome, and headless Chromium to look at its report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def edgeline(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeline.cli.main", *args]


def child_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="160")


@dataclass(frozen=True)
class DemoRun:
    workdir: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads(self.stdout)

    def stage(self, name: str) -> dict[str, Any]:
        return next(s for s in self.summary["stages"] if s["name"] == name)


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    workdir = tmp_path_factory.mktemp("demo") / "ws"
    proc = subprocess.run(
        edgeline("demo", "--quick", "--json", "--workdir", str(workdir)),
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    return DemoRun(workdir, proc.returncode, proc.stdout, proc.stderr)


def chromium() -> str:
    """Headless Chromium; a missing browser FAILS the test (the CI script installs it)."""
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(
        "Chromium is not installed, so the report cannot be checked in a real browser: "
        "apt-get install -y chromium (the CI script does this)"
    )


def chromium_args(profile: Path) -> list[str]:
    return [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
