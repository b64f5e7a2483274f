"""The real agent process on any broker: the delivery tests' agent process, given a list of broker
addresses and telemetry, and the registry side (registry, link, fleet watcher, rollout runner)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_registry.fleet import FleetWatcher
from cloud_registry.publisher import Publisher
from cloud_registry.registry import Registry
from cloud_registry.rollout_runner import RolloutRunner
from converters.keys import KeyPaths, SigningKey
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.topics import Topics
from firmware_configs.writer import render_toml
from tests.delivery.agent_proc import AgentProcess

GROUP = "hall-1"
_CONNECTED = re.compile(r"connected to 127\.0\.0\.1:(\d+) with MQTT ([0-9.]+) \(session present: (\w+)\)")


@dataclass
class PortableAgent(AgentProcess):
    addresses: list[tuple[str, int]] = field(default_factory=list)
    pseudonym_key: Path | None = None
    group: str = GROUP

    def config_path(self, with_faults: bool) -> Path:
        sections: dict[str, dict[str, Any]] = {
            "device": {"id": self.device_id, "groups": [self.group]},
            "source": {"kind": "folder", "path": str(self.frames_dir), "loop": True, "max_fps": 40.0},
            "model": {"bundle": str(self.state_dir / "slots" / "current"), "trust_file": str(self.trust_file)},
            "status": {"path": str(self.status_path), "interval_s": 0.2},
            "cloud": {
                "brokers": [f"{h}:{p}" for h, p in self.addresses],
                "heartbeat_s": 1.0,
                "reconnect_max_s": 1.0,
                "keepalive_s": 5,
                "connect_timeout_s": 2.0,
            },
            "updater": {"state_dir": str(self.state_dir), "trust_file": str(self.trust_file), **self.updater},
            "telemetry": {
                "window_s": 1.0,
                "min_frames": 5,
                "tick_s": 0.2,
                "pseudonym_key_file": str(self.pseudonym_key),
            },
        }
        if with_faults and self.faults:
            sections["updater.faults"] = dict(self.faults)
        path = self.workdir / ("agent-faults.toml" if with_faults else "agent.toml")
        path.write_text(render_toml(sections), "utf-8")
        return path

    def connections(self) -> list[tuple[int, str, bool]]:
        """(port, MQTT version, session present) of every connection the agent logged, in order."""
        text = self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""
        return [(int(p), v, s == "True") for p, v, s in _CONNECTED.findall(text)]


def make_agent(
    device_id: str, tmp: Path, addresses: list[tuple[str, int]], key_dir: Path, frames_dir: Path, **faults: Any
) -> PortableAgent:
    secret = tmp / "pseudonym.key"
    secret.write_text("k" * 32, "utf-8")
    updater = {"trial_frames": 5, "trial_timeout_s": 30.0, "trial_latency_budget_ms": 2000.0, "min_free_bytes": 0}
    return PortableAgent(
        device_id,
        tmp / device_id,
        addresses[0][1],
        KeyPaths(key_dir).trust,
        frames_dir,
        updater,
        dict(faults),
        addresses=list(addresses),
        pseudonym_key=secret,
        group=f"hall-{device_id}",  # its own group: the cluster outlives each test's devices
    )


@dataclass
class RegistrySide:
    registry: Registry
    link: MqttLink
    fleet: FleetWatcher
    runner: RolloutRunner
    topics: Topics

    def close(self) -> None:
        self.link.stop()
        self.registry.close()


def registry_side(tmp: Path, addresses: list[tuple[str, int]], signer: SigningKey, name: str) -> RegistrySide:
    reg = Registry.open(f"sqlite:///{tmp / 'registry.db'}", f"file://{tmp / 'artifacts'}")
    (host, port), *rest = addresses
    link = MqttLink(
        LinkSettings(
            host=host,
            port=port,
            brokers=tuple(rest),
            client_id=f"edgeline-{name}",
            clean_start=True,
            connack_timeout_s=2.0,
            reconnect_max_s=1.0,
        )
    )
    topics = Topics()
    fleet = FleetWatcher(link, topics, book=reg.store)
    link.connect(20)
    runner = RolloutRunner(reg, Publisher(link, topics, signer), fleet)
    return RegistrySide(reg, link, fleet, runner, topics)
