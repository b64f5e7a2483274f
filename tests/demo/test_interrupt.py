"""SIGTERM in the middle of a run: the current stage fails as interrupted, the rest is skipped, every
process the demo started is stopped, and the summary and report are still written."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from tests.demo.conftest import ROOT, child_env, edgeline


def _running_in(workdir: Path) -> list[int]:
    needle = str(workdir).encode()
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def test_sigterm_mid_run_stops_everything_and_reports(tmp_path: Path) -> None:
    workdir = tmp_path / "ws"
    proc = subprocess.Popen(
        edgeline("demo", "--quick", "--workdir", str(workdir)),
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        seen = ""
        deadline = time.monotonic() + 60
        while "[build_v1] 1." not in seen and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
        assert "[build_v1] 1." in seen, seen
        # the agents are up (their status files exist) when v1 starts building
        assert len(_running_in(workdir)) >= 4  # mosquitto, camera, 3 agents
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    summary = json.loads((workdir / "summary.json").read_text())
    states = {s["name"]: s["status"] for s in summary["stages"]}
    assert states["setup"] == "passed"
    assert states["build_v1"] == "failed"
    assert next(s for s in summary["stages"] if s["name"] == "build_v1")["summary"] == "interrupted"
    assert {states[n] for n in ("deploy_v1", "tampered", "score")} == {"skipped"}
    assert summary["processes"]["leftover"] == []
    assert _running_in(workdir) == []
    assert (workdir / "report.html").read_text().count("a stage failed") >= 1
