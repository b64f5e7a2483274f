"""Run the real agent (``edgeline agent run``, started by the demo's launcher) in a subprocess with a
folder camera, for crash tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgeline.demo.devices import launch_agent
from firmware_configs.writer import render_toml

ROOT = Path(__file__).resolve().parents[2]


def write_frames(directory: Path, frames: list[np.ndarray]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(directory / f"f{i:03d}.png"), f)
    return directory


@dataclass
class AgentProcess:
    device_id: str
    workdir: Path
    port: int
    trust_file: Path
    frames_dir: Path
    updater: dict[str, Any]
    faults: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    #: extra environment for the next start (e.g. a shifted clock through libfaketime)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def status_path(self) -> Path:
        return self.workdir / "status.json"

    @property
    def log_path(self) -> Path:
        return self.workdir / "agent.log"

    def config_path(self, with_faults: bool) -> Path:
        sections: dict[str, dict[str, Any]] = {
            "device": {"id": self.device_id},
            "source": {"kind": "folder", "path": str(self.frames_dir), "loop": True, "max_fps": 40.0},
            "model": {"bundle": str(self.state_dir / "slots" / "current"), "trust_file": str(self.trust_file)},
            "status": {"path": str(self.status_path), "interval_s": 0.2},
            "cloud": {"port": self.port, "heartbeat_s": 1.0},
            "updater": {"state_dir": str(self.state_dir), "trust_file": str(self.trust_file), **self.updater},
            "telemetry": {"enabled": False},
        }
        if with_faults and self.faults:
            sections["updater.faults"] = dict(self.faults)
        path = self.workdir / ("agent-faults.toml" if with_faults else "agent.toml")
        path.write_text(render_toml(sections), "utf-8")
        return path

    def start(self, *, with_faults: bool) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = launch_agent(self.config_path(with_faults), self.log_path, {"PYTHONPATH": str(ROOT), **self.env})

    def sigkill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.sigkill()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def fault_hit(self) -> str | None:
        path = self.state_dir / "fault-hit"
        return path.read_text() if path.exists() else None

    def status(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return None

    def record(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.state_dir / "updater.json").read_text())
        except (OSError, ValueError):
            return None

    def log_tail(self) -> str:
        return self.log_path.read_text("utf-8", "replace")[-3000:] if self.log_path.exists() else ""
