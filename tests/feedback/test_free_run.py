"""Feedback on free-run verdicts: a real agent reading frames without triggers, with ``[feedback]``
on, writes a result id with every verdict (``<device>-<boot>-f<frame_id>``, no part id); the local
API takes feedback by that id and refuses one it never gave; without ``[feedback]`` no id is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.runtime import Agent, AgentState
from edge_agent.sources import MemoryCapture
from tests.agent.helpers import make_config, verdicts, wait_for
from tests.feedback.conftest import post_feedback


def _agent(tmp_path: Path, bundle: Path, trust: Path, frames: list[np.ndarray], feedback: bool) -> Agent:
    sections: dict[str, dict[str, Any]] = {"model": {"bundle": str(bundle), "trust_file": str(trust)}}
    if feedback:
        sections |= {
            "feedback": {"enabled": True, "path": str(tmp_path / "feedback.db")},
            "api": {"enabled": True, "port": 0},
        }
    cfg = make_config(tmp_path, {"kind": "folder", "path": str(tmp_path), "loop": True, "max_fps": 100.0}, **sections)
    agent = Agent(cfg, capture=MemoryCapture(frames, "belt"))
    agent.start()
    assert wait_for(lambda: agent.state is AgentState.RUNNING and len(verdicts(tmp_path / "verdicts.jsonl")) >= 5)
    return agent


def test_free_run_verdicts_carry_a_result_id_that_feedback_names(
    tmp_path: Path, tiny_bundle: Path, trust_path: Path, part_frames: tuple[list[np.ndarray], list[str]]
) -> None:
    agent = _agent(tmp_path, tiny_bundle, trust_path, part_frames[0], feedback=True)
    try:
        recs = verdicts(tmp_path / "verdicts.jsonl")
        ids = [r["result_id"] for r in recs]
        assert all(i.startswith("dev-1-") and i.endswith(f"-f{r['frame_id']}") for i, r in zip(ids, recs, strict=True))
        assert len(set(ids)) == len(ids) and all("part_id" not in r for r in recs)
        first = recs[0]
        flip = "defect" if first["verdict"] == "ok" else "ok"
        assert wait_for(lambda: agent.feedback.stats()["indexed"] >= 1)
        code, answer = post_feedback(agent, {"result_id": first["result_id"], "truth": flip, "by": "op"})
        assert code == 200 and answer["ok"] and answer["verdict"] == first["verdict"] and answer["truth"] == flip
        assert answer["part_id"] == ""  # a free-run verdict names no part
        code, answer = post_feedback(agent, {"result_id": "dev-1-0-f999999", "truth": "ok"})
        assert code == 404 and answer["reason"] == "unknown_result"
        counts, _ = agent.feedback.store.confusion_since(0)
        assert sum(sum(c.values()) for c in counts.added.values()) == 1
    finally:
        agent.stop()


def test_without_feedback_free_run_verdicts_carry_no_result_id(
    tmp_path: Path, tiny_bundle: Path, trust_path: Path, part_frames: tuple[list[np.ndarray], list[str]]
) -> None:
    agent = _agent(tmp_path, tiny_bundle, trust_path, part_frames[0], feedback=False)
    try:
        assert all("result_id" not in r for r in verdicts(tmp_path / "verdicts.jsonl"))
    finally:
        agent.stop()
