"""N agents in one process, for load tests (``edgeline agent simulate --devices N``).

Each simulated device is a full :class:`~edge_agent.runtime.Agent` with its own id, source reader,
queue, counters, sinks and status file; they share only the (immutable) loaded model and the frames.
That works because the agent keeps no module-level state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.model import LoadedModel
from edge_agent.runtime import Agent
from edge_agent.sources import Capture, MemoryCapture
from firmware_configs.schema import ApiSection, DeviceConfig, SinksSection, StatusSection

log = logging.getLogger(__name__)


def synthetic_frames(n: int, *, size: tuple[int, int] = (480, 640), seed: int = 0) -> list[np.ndarray]:
    """Grey line frames; every other one carries a dark spot (a 'defect'). Numpy only."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.ogrid[:h, :w]
    out = []
    for i in range(n):
        img = np.clip(150 + rng.integers(-12, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        if i % 2:
            cy, cx = int(rng.integers(h // 4, 3 * h // 4)), int(rng.integers(w // 4, 3 * w // 4))
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < (h // 6) ** 2] = 40
        out.append(img)
    return out


def device_config(base: DeviceConfig, index: int, workdir: Path) -> DeviceConfig:
    """The config of simulated device ``index``: its own id, status file and JSONL log; no API."""
    dev_id = f"{base.device.id}-{index:03d}"
    sinks = base.sinks
    if sinks.jsonl is not None:
        sinks = SinksSection(
            **{**sinks.model_dump(), "jsonl": {**sinks.jsonl.model_dump(), "path": str(workdir / f"{dev_id}.jsonl")}}
        )
    return base.model_copy(
        update={
            "device": base.device.model_copy(update={"id": dev_id}),
            "sinks": sinks,
            "status": StatusSection(path=str(workdir / f"{dev_id}.status.json"), interval_s=base.status.interval_s),
            "api": ApiSection(enabled=False),
        }
    )


@dataclass
class SimulationReport:
    devices: int
    wall_s: float
    per_device: list[dict[str, Any]] = field(default_factory=list)

    @property
    def inspected(self) -> int:
        return sum(int(d["inspected"]) for d in self.per_device)

    def to_dict(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "wall_s": round(self.wall_s, 3),
            "inspected": self.inspected,
            "frames_per_s": round(self.inspected / self.wall_s, 1) if self.wall_s > 0 else 0.0,
            "per_device": self.per_device,
        }


def simulate(
    base: DeviceConfig,
    devices: int,
    workdir: Path,
    *,
    frames: Sequence[np.ndarray] | None = None,
    model: LoadedModel | None = None,
    timeout_s: float = 600.0,
) -> SimulationReport:
    """Run ``devices`` agents until each source ends (or ``timeout_s``), and report their counters.

    With ``frames`` every agent replays them from memory; otherwise each reads ``base.source``."""
    workdir.mkdir(parents=True, exist_ok=True)
    agents: list[Agent] = []
    for i in range(devices):
        cfg = device_config(base, i, workdir)
        capture: Capture | None = MemoryCapture(frames, name="memory") if frames is not None else None
        agents.append(Agent(cfg, capture=capture, model=model))
    t0 = time.perf_counter()
    for a in agents:
        a.start()
    deadline = time.monotonic() + timeout_s
    for a in agents:
        if not a.wait(max(0.0, deadline - time.monotonic())):
            log.warning("simulated device %s still running at the deadline; stopping it", a.device_id)
            a.stop()
    wall = time.perf_counter() - t0
    report = SimulationReport(devices, wall)
    for a in agents:
        c = a.counters()
        report.per_device.append(
            {
                "device": c["device"]["id"],
                "state": c["state"],
                "frames_in": c["frames"]["in"],
                "inspected": c["frames"]["inspected"],
                "dropped": c["dropped"],
                "p50_ms": c["latency"].get("p50_ms"),
                "p99_ms": c["latency"].get("p99_ms"),
            }
        )
    return report
