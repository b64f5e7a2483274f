"""Fixtures of the feedback tests: a real agent in trigger mode (the line tests' fixture: a signed
bundle, ONNX Runtime, a looping in-memory camera) with ``[feedback]`` on, the local API on a free
port, and helpers to trigger a part and to talk to the API."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.runtime import Agent
from tests.agent.helpers import wait_for
from tests.line.conftest import MakeAgent, make_agent, part_frames, trust_path

__all__ = ["make_agent", "part_frames", "trust_path"]

FeedbackAgent = Callable[..., Agent]


@pytest.fixture
def feedback_agent(make_agent: MakeAgent, tmp_path: Path) -> FeedbackAgent:
    """An agent with feedback (its store in ``tmp_path/state``) and the local API; ``line`` adds
    interfaces, ``api`` more API settings (a token file)."""

    def make(line: dict[str, Any] | None = None, api: dict[str, Any] | None = None, **more: Any) -> Agent:
        return make_agent(
            line or {},
            feedback={"enabled": True, "path": str(tmp_path / "state" / "feedback.db"), "keep_results": 200},
            api={"enabled": True, "port": 0, **(api or {})},
            **more,
        )

    return make


def triggered(agent: Agent, part: str, ts: float | None = None) -> dict[str, Any]:
    """Trigger ``part`` and return its result once the feedback index holds it."""
    agent.trigger(part, ts, "test")
    found: list[dict[str, Any]] = []

    def indexed() -> bool:
        found[:] = [r for r in agent.feedback.store.recent(50) if r["part_id"] == part]
        return bool(found)

    assert wait_for(indexed, 10.0), f"no result for {part}"
    return found[0]


def request(
    agent: Agent,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    host, port = agent.api.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def post_feedback(agent: Agent, doc: dict[str, Any] | bytes, **headers: str) -> tuple[int, dict[str, Any]]:
    code, _, body = request(agent, "POST", "/feedback", doc, headers)
    return code, json.loads(body)
