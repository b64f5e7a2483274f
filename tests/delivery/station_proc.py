"""A real device with several stations: ``edgeline agent run`` on a file with ``[[station]]`` tables
(the supervisor and one agent process per station), for the station tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeline.demo.devices import launch_agent
from firmware_configs.writer import render_stations, render_toml
from tests.delivery.agent_proc import ROOT


@dataclass
class StationDevice:
    device_id: str
    workdir: Path
    #: the device's own tables (``{"source": {...}, "cloud": {...}}``)
    sections: dict[str, dict[str, Any]]
    #: name -> that station's tables (``{"updater": {...}}``; ``""`` for keys of the station itself)
    stations: dict[str, dict[str, dict[str, Any]]]
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    def station_dir(self, name: str) -> Path:
        return self.state_dir / "stations" / name

    @property
    def log_path(self) -> Path:
        return self.workdir / "agent.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / "device.toml"

    def unit(self, name: str) -> str:
        return f"{self.device_id}~{name}"

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        base: dict[str, dict[str, Any]] = {
            "device": {"id": self.device_id},
            "status": {"path": str(self.workdir / "status.json"), "interval_s": 0.2},
            "telemetry": {"enabled": False},
        }
        for name, values in self.sections.items():
            base[name] = {**base.get(name, {}), **values}
        base.setdefault("updater", {})["state_dir"] = str(self.state_dir)
        text = render_toml(base) + "\n" + render_stations(list(self.stations.items()))
        self.config_path.write_text(text, "utf-8")
        return self.config_path

    def start(self) -> None:
        self.write_config()
        self.proc = launch_agent(self.config_path, self.log_path, {"PYTHONPATH": str(ROOT), **self.env})

    def stop(self) -> int | None:
        """SIGTERM the supervisor (it stops the stations) and wait; SIGKILL the group if it hangs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        for st in (self.supervisor().get("stations") or {}).values():  # nothing left behind
            if st.get("pid"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(st["pid"]), signal.SIGKILL)
        return self.proc.returncode

    def supervisor(self) -> dict[str, Any]:
        return _json(self.state_dir / "stations" / "supervisor.json") or {}

    def station(self, name: str) -> dict[str, Any]:
        """The supervisor's view of one station: pid, state, restarts, last exit."""
        return (self.supervisor().get("stations") or {}).get(name) or {}

    def status(self, name: str) -> dict[str, Any]:
        return _json(self.workdir / f"status-{name}.json") or {}

    def fresh_status(self, name: str, after: float) -> dict[str, Any]:
        st = self.status(name)
        return st if st.get("updated_at", 0) > after else {}

    def inspected(self, name: str) -> int:
        return int((self.status(name).get("frames") or {}).get("inspected", 0))

    def model_version(self, name: str) -> int | None:
        model = self.status(name).get("model")
        return int(model["version"]) if model else None

    def record(self, name: str) -> dict[str, Any]:
        return _json(self.station_dir(name) / "updater.json") or {}

    def log_tail(self) -> str:
        return self.log_path.read_text("utf-8", "replace")[-4000:] if self.log_path.exists() else ""


def _json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def keeps_inspecting(dev: StationDevice, name: str, seconds: float = 1.0) -> bool:
    """The station's verdict count grows over ``seconds`` (its status is fresh and counting)."""
    before = dev.inspected(name)
    deadline = time.monotonic() + max(seconds, 5.0)
    time.sleep(seconds)
    while time.monotonic() < deadline:
        if dev.inspected(name) > before:
            return True
        time.sleep(0.1)
    return False
