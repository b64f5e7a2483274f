"""The real agent (``edgeline agent run``) in a subprocess with BOTH plugins, the updater and telemetry,
for the fault campaigns. Builds on the delivery tests' :class:`AgentProcess` (process control, status
file, updater record, fault marker) and adds the telemetry section, the cloud link settings the
campaigns need (a proxy port, fast reconnects) and readers for the two durable outboxes on disk."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeline.core.protocol.delivery import DeviceEvent, parse_event
from tests.delivery.agent_proc import AgentProcess, render_toml

EVENTS_DB = "events.db"
OUTBOX_DB = "outbox.db"


@dataclass(frozen=True)
class OutboxSnapshot:
    """What one outbox database holds at a moment: queued keys and the named counters."""

    keys: frozenset[str]
    counters: dict[str, int]
    payloads: dict[str, bytes]
    created: dict[str, float] = field(default_factory=dict)

    @property
    def delivered(self) -> int:
        return self.counters.get("delivered", 0)

    def dropped(self, kind: str = "telemetry") -> int:
        return sum(v for k, v in self.counters.items() if k.startswith(f"dropped.{kind}."))


def read_outbox(path: Path) -> OutboxSnapshot:
    """Read an outbox database without writing to it (safe while the agent runs, WAL mode)."""
    if not path.exists():
        return OutboxSnapshot(frozenset(), {}, {})
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        rows = db.execute("SELECT key, payload, created FROM messages").fetchall()
        counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
    except sqlite3.OperationalError:  # created but the schema not written yet
        return OutboxSnapshot(frozenset(), {}, {})
    finally:
        db.close()
    return OutboxSnapshot(
        frozenset(r[0] for r in rows), counters, {r[0]: bytes(r[1]) for r in rows}, {r[0]: float(r[2]) for r in rows}
    )


@dataclass
class FaultAgent(AgentProcess):
    """``AgentProcess`` with telemetry on. ``cloud`` and ``telemetry`` entries override the defaults."""

    pseudonym_key: Path | None = None
    groups: tuple[str, ...] = ()
    cloud: dict[str, Any] = field(default_factory=dict)
    telemetry: dict[str, Any] = field(default_factory=dict)
    max_fps: float = 20.0
    outbox_path: Path | None = None

    def config_path(self, with_faults: bool) -> Path:
        telemetry: dict[str, Any] = {
            "enabled": True,
            "window_s": 1.0,
            "min_frames": 5,
            "tick_s": 0.2,
            **self.telemetry,
        }
        if self.pseudonym_key is not None:
            telemetry["pseudonym_key_file"] = str(self.pseudonym_key)
        if self.outbox_path is not None:
            telemetry["outbox_path"] = str(self.outbox_path)
        sections: dict[str, dict[str, Any]] = {
            "device": {"id": self.device_id, "groups": list(self.groups)},
            "source": {"kind": "folder", "path": str(self.frames_dir), "loop": True, "max_fps": self.max_fps},
            "model": {"bundle": str(self.state_dir / "slots" / "current"), "trust_file": str(self.trust_file)},
            "status": {"path": str(self.status_path), "interval_s": 0.2},
            "cloud": {"port": self.port, "heartbeat_s": 1.0, "reconnect_max_s": 1.0, "keepalive_s": 5, **self.cloud},
            "updater": {"state_dir": str(self.state_dir), "trust_file": str(self.trust_file), **self.updater},
            "telemetry": telemetry,
        }
        if with_faults and self.faults:
            sections["updater.faults"] = dict(self.faults)
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / ("agent-faults.toml" if with_faults else "agent.toml")
        path.write_text(render_toml(sections), "utf-8")
        return path

    # -- durable state on disk ------------------------------------------------------------------
    @property
    def telemetry_outbox(self) -> Path:
        return self.outbox_path or self.state_dir / OUTBOX_DB

    def windows_outbox(self) -> OutboxSnapshot:
        return read_outbox(self.telemetry_outbox)

    def events_outbox(self) -> OutboxSnapshot:
        return read_outbox(self.state_dir / EVENTS_DB)

    def queued_events(self) -> dict[str, DeviceEvent]:
        """Deployment events still waiting in the durable event outbox, by event id."""
        out: dict[str, DeviceEvent] = {}
        for payload in self.events_outbox().payloads.values():
            ev = parse_event(payload)
            out[ev.event_id] = ev
        return out

    def clear_fault_marker(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "fault-hit").unlink()

    def serving(self) -> str | None:
        """sha256 of the model the running agent inspects with (from its status file)."""
        st = self.status() or {}
        model = st.get("model") or {}
        sha = model.get("sha256")
        return sha if isinstance(sha, str) else None

    def inspected(self) -> int:
        st = self.status() or {}
        frames = st.get("frames") or {}
        n = frames.get("inspected", 0)
        return int(n) if isinstance(n, int) else 0

    def log_has(self, text: str) -> bool:
        return self.log_path.exists() and text in self.log_path.read_text("utf-8", "replace")

    def status_doc(self) -> str:
        return json.dumps(self.status(), indent=1)[:2000]
