"""End to end on the device: a real agent in trigger mode (ONNX Runtime, the result bus, the feedback
index), feedback through its local API, the real telemetry plugin and outbox. The operator's
feedback leaves only as counts in the windows' field metrics: no part id, result id, name or
confidence of a part in anything queued for the cloud; and it is counted once across a restart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_agent.outbox.store import Outbox
from edge_agent.runtime import Agent, AgentState
from edge_agent.sources import MemoryCapture
from edge_agent.telemetry.plugin import TelemetryPlugin
from edgeline.core.protocol.telemetry import TelemetryWindow, parse_window
from edgeline.core.protocol.topics import Topics
from firmware_configs.telemetry_section import TelemetrySection
from tests.agent.helpers import make_config, wait_for
from tests.feedback.conftest import post_feedback, triggered

SECRET = b"fleet-secret-for-tests-0123456789"


def _agent(tmp_path: Path, tiny_bundle: Path, trust_path: Path, frames: list[np.ndarray]) -> Agent:
    cfg = make_config(
        tmp_path,
        {"kind": "folder", "path": str(tmp_path), "loop": True, "max_fps": 200.0, "mode": "trigger"},
        model={"bundle": str(tiny_bundle), "trust_file": str(trust_path)},
        trigger={"window_ms": 200, "budget_ms": 100},
        feedback={"enabled": True, "path": str(tmp_path / "state" / "feedback.db"), "keep_results": 200},
        api={"enabled": True, "port": 0},
    )
    config = TelemetrySection(window_s=3600.0, window_frames=4, min_frames=2)
    plugin = TelemetryPlugin(
        config, outbox=Outbox(tmp_path / "outbox.db"), secret=SECRET, topics=Topics(), background=False
    )
    agent = Agent(cfg, plugins=[plugin], capture=MemoryCapture(frames, "belt"))
    agent.start()
    assert wait_for(lambda: agent.state is AgentState.RUNNING and agent.reader.frames_read > 0, 10.0)
    return agent


def _queued(agent: Agent) -> tuple[list[TelemetryWindow], list[bytes]]:
    plugin = agent.plugins[0]
    assert isinstance(plugin, TelemetryPlugin)
    plugin.tick()
    payloads = [m.payload for m in plugin.outbox.peek(1000)]
    return [parse_window(p) for p in payloads if b'"edgeline.telemetry/1"' in p], payloads


def test_feedback_leaves_the_device_as_counts_only(
    tmp_path: Path, tiny_bundle: Path, trust_path: Path, part_frames: tuple[list[np.ndarray], list[str]]
) -> None:
    agent = _agent(tmp_path, tiny_bundle, trust_path, part_frames[0])
    try:
        results = [triggered(agent, f"PART-{i:03d}") for i in range(4)]  # the first window: 4 frames
        assert all(r["verdict"] in ("ok", "defect") for r in results)
        truths = {}
        for i, r in enumerate(results[:3]):
            flip = "defect" if r["verdict"] == "ok" else "ok"
            truth = flip if i == 0 else r["verdict"]
            doc = (
                {"result_id": r["result_id"], "truth": truth, "by": "Operator Vera-9"}
                if i
                else {"part_id": "PART-000", "truth": truth, "by": "Operator Vera-9"}
            )
            code, answer = post_feedback(agent, doc)
            assert code == 200 and answer["ok"], answer
            truths[r["result_id"]] = (r["verdict"], truth)
        more = [triggered(agent, f"PART-{i:03d}") for i in range(4, 8)]  # the second window
        assert len(more) == 4
        windows, payloads = _queued(agent)
    finally:
        agent.stop()
    fb = [v for w in windows if w.field_metrics for v in w.field_metrics.feedback]
    assert sum(v.added.total() for v in fb) == 3 and all(v.retracted is None for v in fb)
    passed_wrong = sum(1 for verdict, truth in truths.values() if verdict == "ok" and truth == "defect")
    rejected_wrong = sum(1 for verdict, truth in truths.values() if verdict == "defect" and truth == "ok")
    assert sum(sum(v.added.pass_defect) for v in fb) == passed_wrong
    assert sum(sum(v.added.reject_ok) for v in fb) == rejected_wrong
    assert (
        sum(sum(w.field_metrics.score_pass) + sum(w.field_metrics.score_reject) for w in windows if w.field_metrics)
        >= 8
    )
    text = b"\n".join(payloads).decode()
    assert "PART-" not in text and "Operator" not in text and "Vera" not in text
    for r in [*results, *more]:
        assert r["result_id"] not in text
        assert f"{r['confidence']}" not in text and f"{r['confidence']:.4f}" not in text
    for w in windows:  # every value under field_metrics is a count, a flag or the model's name
        leaves = json.dumps(w.to_body()["field_metrics"])
        assert "." not in leaves.replace(w.model.name, "")


def test_feedback_is_counted_once_across_a_restart(
    tmp_path: Path, tiny_bundle: Path, trust_path: Path, part_frames: tuple[list[np.ndarray], list[str]]
) -> None:
    agent = _agent(tmp_path, tiny_bundle, trust_path, part_frames[0])
    try:
        rs = [triggered(agent, f"Q-{i}") for i in range(4)]
        for r in rs[:2]:
            assert post_feedback(agent, {"result_id": r["result_id"], "truth": "confirm"})[0] == 200
        for i in range(4, 8):
            triggered(agent, f"Q-{i}")
        first, _ = _queued(agent)
    finally:
        agent.stop()
    counted = sum(v.added.total() for w in first if w.field_metrics for v in w.field_metrics.feedback)
    assert counted == 2
    agent = _agent(tmp_path, tiny_bundle, trust_path, part_frames[0])  # the same state directory
    try:
        for i in range(8, 12):
            triggered(agent, f"Q-{i}")
        after, _ = _queued(agent)
    finally:
        agent.stop()
    total = sum(v.added.total() for w in after if w.field_metrics for v in w.field_metrics.feedback)
    assert total == 2  # the outbox holds every window; the restart added no feedback count
