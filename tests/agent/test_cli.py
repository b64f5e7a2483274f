"""``edgeline agent run | status | simulate`` and the device footprint: the agent runs on a video with a
model while scikit-learn, skl2onnx and onnx cannot be imported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from click.testing import CliRunner

from edge_agent.status import read_status
from edgeline.cli.main import cli
from tests.agent.conftest import N_VIDEO
from tests.agent.helpers import verdicts, wait_for

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp: Path, source: str, bundle: Path | None, trust_path: Path, extra: str = "") -> Path:
    model = f'[model]\nbundle = "{bundle}"\ntrust_file = "{trust_path}"\n' if bundle else ""
    cfg = tmp / "agent.toml"
    cfg.write_text(
        textwrap.dedent(f"""
        [device]
        id = "replay-7"
        hardware_class = "x86-workstation"
        [source]
        {source}
        {model}
        [sinks.jsonl]
        path = "{tmp / "verdicts.jsonl"}"
        [status]
        path = "{tmp / "status.json"}"
        interval_s = 0.2
        [cloud]
        enabled = false
        [telemetry]
        enabled = false
        [updater]
        state_dir = "{tmp / "state"}"
        trust_file = "{trust_path}"
        """)
        + extra
    )
    return cfg


def test_agent_run_and_status(tmp_path: Path, video_file: Path, tiny_bundle: Path, trust_path: Path) -> None:
    cfg = write_config(tmp_path, f'kind = "file"\npath = "{video_file}"', tiny_bundle, trust_path)
    runner = CliRunner()
    res = runner.invoke(cli, ["agent", "run", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert f"inspected {N_VIDEO}" in res.output
    assert len(verdicts(tmp_path / "verdicts.jsonl")) == N_VIDEO
    res = runner.invoke(cli, ["agent", "status", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "replay-7" in res.output and "STOPPED" in res.output and f"inspected {N_VIDEO}" in res.output
    res = runner.invoke(cli, ["agent", "status", "--file", str(tmp_path / "status.json"), "--json"])
    assert json.loads(res.output)["frames"]["inspected"] == N_VIDEO
    res = runner.invoke(cli, ["agent", "status", "--config", str(cfg), "--prometheus"])
    assert f'edgeline_inspected_total{{device="replay-7"}} {N_VIDEO}' in res.output


def test_agent_status_without_a_status_file_is_a_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["agent", "status", "--file", str(tmp_path / "none.json")])
    assert res.exit_code == 1 and "no status file" in res.output
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": 1}')
    res = CliRunner().invoke(cli, ["agent", "status", "--file", str(junk)])
    assert res.exit_code == 1 and "not an edgeline agent status document" in res.output


def test_agent_run_refuses_a_bad_config(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[device]\nid = "x"\n[source]\nkind = "file"\npath = "a.avi"\nloop = "maybe"\n')
    res = CliRunner().invoke(cli, ["agent", "run", "--config", str(cfg)])
    assert res.exit_code == 1 and "source.loop = 'maybe'" in res.output


def test_agent_run_stops_cleanly_on_sigterm(
    tmp_path: Path, video_file: Path, tiny_bundle: Path, trust_path: Path
) -> None:
    cfg = write_config(
        tmp_path, f'kind = "file"\npath = "{video_file}"\nloop = true\nmax_fps = 200', tiny_bundle, trust_path
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeline.cli.main", "agent", "run", "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_for(
            lambda: (
                (tmp_path / "status.json").exists()
                and read_status(tmp_path / "status.json")["frames"]["inspected"] > 20
            ),
            30,
        )
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    st = read_status(tmp_path / "status.json")
    assert st["state"] == "STOPPED" and st["camera"]["state"] == "STOPPED"
    assert st["frames"]["in"] == st["frames"]["inspected"]  # every frame read got a verdict
    assert len(verdicts(tmp_path / "verdicts.jsonl")) == st["frames"]["inspected"]


def test_simulate_runs_n_independent_agents_in_one_process(tmp_path: Path, tiny_bundle: Path, trust_path: Path) -> None:
    res = CliRunner().invoke(
        cli,
        [
            "agent",
            "simulate",
            "--devices",
            "3",
            "--frames",
            "40",
            "--bundle",
            str(tiny_bundle),
            "--trust",
            str(trust_path),
            "--workdir",
            str(tmp_path),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["devices"] == 3 and doc["inspected"] == 120
    assert [d["device"] for d in doc["per_device"]] == ["sim-000", "sim-001", "sim-002"]
    assert all(d["inspected"] == 40 and d["state"] == "STOPPED" for d in doc["per_device"])
    for i in range(3):  # each agent wrote its own status file
        st = read_status(tmp_path / f"sim-{i:03d}.status.json")
        assert st["device"]["id"] == f"sim-{i:03d}" and st["frames"]["inspected"] == 40


BLOCKER = """
import importlib.abc, json, sys
BLOCKED = {"sklearn", "skl2onnx", "onnx"}
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed on this device")
        return None
sys.meta_path.insert(0, Blocker())
try:
    import sklearn  # noqa: F401
    raise SystemExit("the blocker does not block")
except ImportError:
    pass
from edgeline.cli.main import main
try:
    main(["agent", "run", "--config", sys.argv[1]])
except SystemExit as exc:
    code = exc.code
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"code": code, "leaked": leaked, "onnxruntime": "onnxruntime" in sys.modules}))
"""


def test_agent_runs_without_scikit_learn_skl2onnx_or_onnx(
    tmp_path: Path, video_file: Path, tiny_bundle: Path, trust_path: Path
) -> None:
    cfg = write_config(tmp_path, f'kind = "file"\npath = "{video_file}"', tiny_bundle, trust_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER, str(cfg)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "leaked": [], "onnxruntime": True}, (result, time.monotonic() - t0)
    vs = verdicts(tmp_path / "verdicts.jsonl")
    assert len(vs) == N_VIDEO and {v["model"] for v in vs} == {"tiny"}
