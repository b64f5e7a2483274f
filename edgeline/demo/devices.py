"""The demo's devices: one ``edgeline agent run --config <toml>`` process per line, the production code
path with the updater and telemetry plugins, reading its line's MJPEG stream from the camera simulator.

The configuration is generated here, validated with the device schema before it is written, and kept
in the workspace (``devices/<id>/agent.toml``) so a user can read what a real device would run.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.status import StatusError, read_status
from edgeline.demo.errors import DemoError
from edgeline.demo.processes import spawn, stop_process, tail
from firmware_configs.errors import ConfigError
from firmware_configs.loader import parse_config
from firmware_configs.writer import render_toml

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceSpec:
    device_id: str
    camera_url: str
    workdir: Path
    broker_port: int
    broker_protocol: str
    fleet: str
    trust_file: Path
    pseudonym_key: Path
    window_s: float
    window_frames: int
    min_frames: int
    trial_frames: int
    heartbeat_s: float = 2.0
    #: the local API's port: with one, operator feedback is on (``[feedback]``, ``POST /feedback``)
    api_port: int | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "agent.toml"

    @property
    def status_path(self) -> Path:
        return self.workdir / "status.json"

    @property
    def verdicts_path(self) -> Path:
        return self.workdir / "verdicts.jsonl"

    @property
    def feedback_path(self) -> Path:
        return self.workdir / "feedback.db"

    @property
    def log_path(self) -> Path:
        return self.workdir / "agent.log"


def device_config(spec: DeviceSpec) -> dict[str, dict[str, Any]]:
    """The device configuration as TOML sections (see ``firmware_configs.schema``). With an
    ``api_port``, the local API and operator feedback are on: free-run verdicts then carry a result id
    the operator names in ``POST /feedback``, and the feedback counts ride in the telemetry windows."""
    sections: dict[str, dict[str, Any]] = {
        "device": {"id": spec.device_id, "groups": [spec.device_id, "demo-lines"], "hardware_class": "demo-x86"},
        "source": {
            "kind": "url",
            "url": spec.camera_url,
            "queue_size": 8,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 2.0,
        },
        "inference": {"threads": 1, "stats_every": 1},
        "sinks.jsonl": {"path": str(spec.verdicts_path), "events": True},
        "status": {"path": str(spec.status_path), "interval_s": 0.5},
        "cloud": {
            "host": "127.0.0.1",
            "port": spec.broker_port,
            "protocol": spec.broker_protocol,
            "fleet": spec.fleet,
            "heartbeat_s": spec.heartbeat_s,
            "keepalive_s": 10,
            "reconnect_max_s": 2.0,
        },
        "updater": {
            "state_dir": str(spec.workdir / "state"),
            "trust_file": str(spec.trust_file),
            "trial_frames": spec.trial_frames,
            "trial_timeout_s": 60.0,
            # two shared cores run the whole fleet, the broker and training: a generous budget
            "trial_latency_budget_ms": 500.0,
            "min_free_bytes": 1024 * 1024,
        },
        "telemetry": {
            "window_s": spec.window_s,
            "window_frames": spec.window_frames,
            "min_frames": spec.min_frames,
            "pseudonym_key_file": str(spec.pseudonym_key),
            "tick_s": 0.5,
        },
    }
    if spec.api_port is not None:
        sections["feedback"] = {"enabled": True, "path": str(spec.feedback_path)}
        sections["api"] = {"enabled": True, "host": "127.0.0.1", "port": spec.api_port}
    return sections


def nested(sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"sinks.jsonl": {...}}`` -> ``{"sinks": {"jsonl": {...}}}`` (what TOML parsing gives)."""
    doc: dict[str, Any] = {}
    for name, values in sections.items():
        node = doc
        for part in name.split("."):
            node = node.setdefault(part, {})
        node.update(values)
    return doc


def agent_command(config_path: Path) -> list[str]:
    """``edgeline agent run --config <config_path>`` on this interpreter."""
    return [sys.executable, "-m", "edgeline.cli.main", "agent", "run", "--config", str(config_path)]


def launch_agent(config_path: Path, log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start the real agent on ``config_path``, the one launcher of the demo's devices and the tests'
    agent processes: its own session (a Ctrl-C in the terminal does not reach it; on Linux it gets
    SIGTERM if its parent dies), output appended to ``log_path``, logging at INFO, ``env`` on top
    of this process's environment."""
    return spawn(agent_command(config_path), log_path, env={"EDGELINE_LOG_LEVEL": "INFO", **(env or {})})


class DeviceProcess:
    """One agent process."""

    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def device_id(self) -> str:
        return self.spec.device_id

    def write_config(self) -> Path:
        sections = device_config(self.spec)
        try:
            parse_config(nested(sections), f"{self.device_id} config")
        except ConfigError as exc:
            raise DemoError(f"generated a device config the schema refuses: {exc}") from exc
        path = self.spec.config_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            render_toml(
                sections, f"edgeline demo device {self.device_id}: run with\n  edgeline agent run --config {path}"
            ),
            "utf-8",
        )
        return path

    def start(self) -> None:
        self.proc = launch_agent(self.write_config(), self.spec.log_path)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise DemoError(
                f"device {self.device_id} exited with {self.proc.returncode}: {tail(self.spec.log_path, 800)}"
            )

    def status(self) -> dict[str, Any] | None:
        try:
            return read_status(self.spec.status_path)
        except StatusError:
            return None

    def frames(self) -> int:
        st = self.status()
        return int(st["frames"]["in"]) if st else 0

    def inspected(self) -> int:
        st = self.status()
        return int(st["frames"]["inspected"]) if st else 0

    def terminate(self) -> None:
        """Ask the agent to stop (SIGTERM) without waiting: stop the whole fleet at once."""
        if self.alive() and self.proc is not None:
            self.proc.terminate()

    def stop(self, timeout: float = 15.0, *, signal_it: bool = True) -> int | None:
        return stop_process(self.proc, timeout, signal_it=signal_it)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record of the line's local JSONL log (verdicts and local events)."""
        paths = sorted(self.spec.verdicts_path.parent.glob(self.spec.verdicts_path.name + ".*"), reverse=True)
        for path in [*paths, self.spec.verdicts_path]:
            if not path.is_file():
                continue
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a line cut by a stop mid-write
                    if isinstance(rec, dict):
                        yield rec
