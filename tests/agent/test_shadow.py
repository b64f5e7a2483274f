"""Shadow inspection: a challenger beside the champion on the same frames (a real agent, real signed
bundles, ONNX Runtime): its verdicts reach no sink, only the comparison's counts are kept; a refused
challenger leaves the agent inspecting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.keys import SigningKey
from edge_agent.runtime import Agent, AgentState
from edge_agent.shadow.compare import VERDICTS, ShadowComparison
from edge_agent.sources import MemoryCapture
from firmware_configs.errors import ConfigError
from firmware_configs.loader import parse_config
from tests.agent.helpers import make_config, read_jsonl, wait_for
from tests.factories import tiny_frames, tiny_model, write_tiny_bundle


@pytest.fixture(scope="module")
def flipped_bundle(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> Path:
    """A challenger that calls every part the other way round."""
    return write_tiny_bundle(
        tmp_path_factory.mktemp("flip") / "tiny-v2", signing_key, version=2, model=tiny_model(flip=True)
    )


def _agent(tmp_path: Path, tiny_bundle: Path, trust: Path, shadow: dict[str, Any], n: int = 200) -> Agent:
    frames, _ = tiny_frames(40, seed=5)
    cfg = make_config(
        tmp_path,
        {"kind": "folder", "path": str(tmp_path), "loop": False},
        model={"bundle": str(tiny_bundle), "trust_file": str(trust)},
        sinks={"jsonl": {"path": str(tmp_path / "verdicts.jsonl"), "events": True}},
        shadow=shadow,
    )
    return Agent(cfg, capture=MemoryCapture((frames * (n // len(frames) + 1))[:n], "belt"))


def _run(agent: Agent) -> dict[str, Any]:
    agent.start()
    assert wait_for(lambda: agent.state in (AgentState.STOPPED, AgentState.FAILED), 30.0)
    agent.wait(10.0)
    return agent.counters()


def test_a_challenger_that_agrees_is_counted_and_never_reaches_the_sinks(
    tmp_path: Path, tiny_bundle: Path, key_dir: Path
) -> None:
    trust = key_dir / "trust.json"
    # the frames come from memory as fast as the loop goes: the line is always behind, so compare anyway
    shadow = {"enabled": True, "bundle": str(tiny_bundle), "yield_when_behind": False, "idle_class": False}
    st = _run(_agent(tmp_path, tiny_bundle, trust, shadow))
    sh = st["shadow"]
    assert sh["offered"] == st["frames"]["inspected"] == 200 and sh["behind_skips"] == 0
    skipped = sh["busy_skips"] + sh["budget_skips"] + sh["rate_skips"]
    assert sh["compared"] + skipped + sh["errors"] == 200 and sh["compared"] > 0
    assert sh["verdict_agreement"] == 1.0 and sh["label_agreement"] == 1.0
    assert sum(sh["confidence_hist"]) == sh["compared"] and sh["latency_ms"]["p50"] > 0
    recs = read_jsonl(tmp_path / "verdicts.jsonl")
    verdicts = [r for r in recs if r["type"] == "verdict"]
    assert len(verdicts) == 200 and {r["model_version"] for r in verdicts} == {1}  # the champion's only
    started = [r for r in recs if r.get("kind") == "shadow_started"]
    assert len(started) == 1 and started[0]["challenger"]["version"] == 1


def test_a_challenger_that_disagrees_shows_in_the_matrix(
    tmp_path: Path, tiny_bundle: Path, flipped_bundle: Path, key_dir: Path
) -> None:
    trust = key_dir / "trust.json"
    shadow = {
        "enabled": True,
        "bundle": str(flipped_bundle),
        "share": 0.5,
        "yield_when_behind": False,
        "idle_class": False,
    }
    st = _run(_agent(tmp_path, tiny_bundle, trust, shadow))
    sh = st["shadow"]
    assert sh["offered"] == 200 and sh["sampled_out"] == 100  # half the frames, evenly
    assert sh["challenger"]["version"] == 2 and sh["verdict_agreement"] < 0.2
    m = sh["agreement"]
    assert sum(m[a][b] for a in VERDICTS for b in VERDICTS) == sh["compared"]
    assert m["ok"]["defect"] + m["defect"]["ok"] >= 0.8 * sh["compared"]
    verdicts = [r for r in read_jsonl(tmp_path / "verdicts.jsonl") if r["type"] == "verdict"]
    assert {r["model_version"] for r in verdicts} == {1}


def test_a_line_that_is_behind_gets_no_shadow_work(tmp_path: Path, tiny_bundle: Path, key_dir: Path) -> None:
    """The default policy: while frames wait in the champion's queue, the challenger gets none of them
    (skipped and counted); once the line has slack again, it does."""
    trust = key_dir / "trust.json"
    st = _run(_agent(tmp_path, tiny_bundle, trust, {"enabled": True, "bundle": str(tiny_bundle)}))
    sh = st["shadow"]
    assert sh["offered"] == 200 and sh["yield_when_behind"] is True
    assert sh["behind_skips"] > 0  # read from memory, the queue was full nearly all the time
    assert sh["compared"] + sh["behind_skips"] + sh["busy_skips"] + sh["budget_skips"] + sh["rate_skips"] == 200

    from edge_agent.shadow.worker import ShadowWorker

    w = ShadowWorker("unused", "unused", max_duty=1.0)
    frame = np.zeros((4, 4), np.uint8)
    w.offer(frame, 1, None, backlog=3)  # type: ignore[arg-type]
    assert w.behind_skips == 1 and w._slot is None
    w.offer(frame, 2, None, backlog=0)  # type: ignore[arg-type]
    assert w.behind_skips == 1 and w._slot is not None and w._slot[1] == 2
    off = ShadowWorker("unused", "unused", max_duty=1.0, yield_when_behind=False)
    off.offer(frame, 1, None, backlog=3)  # type: ignore[arg-type]
    assert off.behind_skips == 0 and off._slot is not None


def test_the_challenger_keeps_within_its_cpu_budget(tiny_bundle: Path, key_dir: Path) -> None:
    from edge_agent.inference import inspect_frame, load_and_check
    from edge_agent.shadow.worker import ShadowWorker
    from edgeline.core.protocol.signing import TrustStore

    model = load_and_check(tiny_bundle, TrustStore.load(key_dir / "trust.json"))
    frames, _ = tiny_frames(40, seed=6)
    # half a millisecond of CPU, then 1 ms per second
    w = ShadowWorker(str(tiny_bundle), str(key_dir / "trust.json"), max_duty=0.001, burst_s=0.0005, max_fps=1000)
    w.start()
    try:
        for i in range(300):
            f = frames[i % len(frames)]
            w.offer(f, i, inspect_frame(model, f, i))
            wait_for(lambda: not w._busy and w._slot is None, 1.0)  # never busy: only the budget skips
        s = w.stats()
    finally:
        w.stop()
    assert s["offered"] == 300 and s["busy_skips"] == 0
    assert s["budget_skips"] > 200 and 0 < s["compared"] < 100
    assert s["compared"] + s["budget_skips"] + s["errors"] == 300


def test_the_challenger_runs_in_its_own_process_and_frames_stay_on_the_device(tiny_bundle: Path, key_dir: Path) -> None:
    import os

    from edge_agent.shadow.worker import ShadowWorker

    w = ShadowWorker(str(tiny_bundle), str(key_dir / "trust.json"))
    w.start()
    try:
        assert w._proc is not None and w._proc.pid != os.getpid() and w._proc.is_alive()
        assert w.challenger is not None and w.challenger["version"] == 1
    finally:
        w.stop()
    assert w._proc is None and w._shm is None  # the child joined, the frame memory unlinked


def test_a_refused_challenger_leaves_the_agent_inspecting(tmp_path: Path, tiny_bundle: Path, key_dir: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text(json.dumps({"not": "signed"}))
    st = _run(_agent(tmp_path, tiny_bundle, key_dir / "trust.json", {"enabled": True, "bundle": str(bad)}))
    assert st["frames"]["inspected"] == 200 and st["state"] == "STOPPED"
    assert "refused" in st["shadow"] and st["shadow"]["refused"]
    events = [r for r in read_jsonl(tmp_path / "verdicts.jsonl") if r.get("kind") == "shadow_refused"]
    assert len(events) == 1


def test_the_shadow_section_is_checked() -> None:
    base = {"device": {"id": "d"}, "source": {"kind": "folder", "path": "/tmp"}}
    for shadow, word in [
        ({"enabled": True}, "shadow.bundle"),
        ({"share": 0}, "share"),
        ({"policy": "all"}, "policy"),
        ({"max_duty": 0}, "max_duty"),
    ]:
        with pytest.raises(ConfigError, match=word):
            parse_config({**base, "shadow": shadow}, "test")


def test_the_comparison_counts_and_bins() -> None:
    c = ShadowComparison(latency_window=3)
    c.add(("ok", "ok"), ("ok", "ok"), 0.99, None, 1.0)
    c.add(("ok", "ok"), ("defect", "dent"), 0.6, 2.5, 2.0)
    c.add(("defect", "dent"), ("defect", "scratch"), 1.5, -99.0, 3.0)  # out-of-range values land in the end bins
    c.add(("defect", "dent"), ("defect", "dent"), -0.2, 99.0, 4.0)
    s = c.snapshot()
    assert s["compared"] == 4 and s["verdict_agreement"] == 0.75 and s["label_agreement"] == 0.5
    assert s["agreement"]["ok"] == {"ok": 1, "defect": 1, "unknown": 0}
    assert s["agreement"]["defect"]["defect"] == 2
    assert sum(s["confidence_hist"]) == 4 and s["confidence_hist"][0] == 1 and s["confidence_hist"][-1] == 2
    assert sum(s["anomaly_hist"]) == 3 and s["anomaly_hist"][0] == 1 and s["anomaly_hist"][-1] == 1
    assert s["latency_ms"]["p50"] == 3.0  # the last three only
    assert np.isfinite(s["latency_ms"]["p99"])


def test_the_challengers_process_runs_in_the_idle_class(tiny_bundle: Path, key_dir: Path) -> None:
    import os

    from edge_agent.shadow.worker import ShadowWorker

    for idle, policy in ((True, os.SCHED_IDLE), (False, os.SCHED_OTHER)):
        w = ShadowWorker(str(tiny_bundle), str(key_dir / "trust.json"), idle=idle)
        w.start()
        try:
            assert w._proc is not None and w._proc.pid is not None
            assert os.sched_getscheduler(w._proc.pid) == policy
            assert os.getpriority(os.PRIO_PROCESS, w._proc.pid) == 10  # nice as well
            assert w.stats()["idle_class"] is idle
        finally:
            w.stop()


def test_the_frame_rate_cap_lets_a_jittery_camera_through_and_holds_a_fast_one() -> None:
    from edge_agent.shadow.worker import ShadowWorker

    now = [100.0]
    rng = np.random.default_rng(4)

    def run(fps: float, n: int, max_fps: float) -> ShadowWorker:
        w = ShadowWorker("unused", "unused", max_fps=max_fps, max_duty=1.0, clock=lambda: now[0])
        frame = np.zeros((4, 4), np.uint8)
        for i in range(n):
            now[0] += max(0.0, 1.0 / fps + rng.normal(0.0, 0.15 / fps))  # 15% jitter
            w.offer(frame, i, None)  # type: ignore[arg-type]
            w._slot = None  # the challenger took it at once
        return w

    # a 30 frames/s camera under a 30 frames/s cap: the bucket absorbs the jitter, all but a few go
    line = run(30.0, 600, 30.0)
    assert line.rate_skips <= 12 and line.busy_skips == 0
    fast = run(300.0, 3000, 30.0)  # 10 s at 300 frames/s: about 30 a second go
    taken = 3000 - fast.rate_skips
    assert 290 <= taken <= 310
