"""Fixtures of the line tests: a real agent in trigger mode (a real signed bundle, ONNX Runtime, a
looping in-memory camera at 200 frames/s) with the line interfaces on free ports."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.keys import KeyPaths
from edge_agent.runtime import Agent, AgentState
from edge_agent.sources import MemoryCapture
from tests.agent.helpers import make_config, wait_for
from tests.factories import tiny_frames

MakeAgent = Callable[..., Agent]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def trust_path(key_dir: Path) -> Path:
    return KeyPaths(key_dir).trust


@pytest.fixture(scope="session")
def part_frames() -> tuple[list[np.ndarray], list[str]]:
    return tiny_frames(40, seed=3)


@pytest.fixture
def make_agent(
    tmp_path: Path, tiny_bundle: Path, trust_path: Path, part_frames: tuple[list[np.ndarray], list[str]]
) -> Iterator[MakeAgent]:
    agents: list[Agent] = []

    def make(
        line: dict[str, Any],
        trigger: dict[str, Any] | None = None,
        fps: float = 200.0,
        mode: str = "trigger",
        **more: Any,
    ) -> Agent:
        cfg = make_config(
            tmp_path,
            {
                "kind": "folder",
                "path": str(tmp_path),
                "loop": True,
                "max_fps": fps,
                "queue_policy": "drop_oldest",
                "mode": mode,
            },
            model={"bundle": str(tiny_bundle), "trust_file": str(trust_path)},
            trigger=trigger or {"window_ms": 200, "budget_ms": 100},
            line=line,
            **more,
        )
        agent = Agent(cfg, capture=MemoryCapture(part_frames[0], "belt"))
        agents.append(agent)
        agent.start()
        assert wait_for(lambda: agent.state is AgentState.RUNNING and agent.reader.frames_read > 0, 10.0)
        return agent

    yield make
    for a in agents:
        a.stop()
