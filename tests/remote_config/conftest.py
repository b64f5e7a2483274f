"""Remote config fixtures: a real agent process (``edgeline agent run``) with a folder camera, the
cloud's config pusher on the test's Mosquitto with a SQLite registry, and a watcher of the devices'
retained config state."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from cloud_registry.remote_config import ConfigPusher, ConfigTarget
from cloud_registry.store import open_store
from cloud_registry.store.base import RegistryStore
from converters.keys import KeyPaths, SigningKey
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.canonical import canonical_json
from edgeline.core.protocol.remote_config import ConfigState, parse_config_state
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker
from edgeline.demo.devices import launch_agent
from firmware_configs.writer import render_toml

ROOT = Path(__file__).resolve().parents[2]
DEVICE = "cfg-dev-1"
GROUP = "line-a"


def write_frames(directory: Path, n: int = 12) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(directory / f"f{i:03d}.png"), rng.integers(0, 255, (48, 48), dtype=np.uint8))
    return directory


def wait_for(pred: Callable[[], Any], timeout: float = 20.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(every)
    return None


@dataclass
class AgentProc:
    workdir: Path
    port: int
    trust_file: Path
    bundle: Path
    frames_dir: Path
    remote: dict[str, Any] = field(default_factory=dict)
    proc: Any = None

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def status_path(self) -> Path:
        return self.workdir / "status.json"

    @property
    def log_path(self) -> Path:
        return self.workdir / "agent.log"

    def write_config(self) -> Path:
        self.logs.mkdir(parents=True, exist_ok=True)
        sections: dict[str, dict[str, Any]] = {
            "device": {"id": DEVICE, "groups": [GROUP]},
            "source": {"kind": "folder", "path": str(self.frames_dir), "loop": True, "max_fps": 50.0},
            "model": {"bundle": str(self.bundle), "trust_file": str(self.trust_file)},
            "status": {"path": str(self.status_path), "interval_s": 0.1},
            "cloud": {"port": self.port, "heartbeat_s": 1.0},
            "updater": {"state_dir": str(self.state_dir), "trust_file": str(self.trust_file)},
            "telemetry": {"enabled": False},
            "remote_config": {
                "enabled": True,
                "trial_s": 1.0,
                "trial_frames": 5,
                "trial_timeout_s": 4.0,
                "allowed_dirs": [str(self.workdir / "allowed")],
                **self.remote,
            },
            "sinks.jsonl": {"path": str(self.logs / "verdicts.jsonl")},
        }
        path = self.workdir / "agent.toml"
        path.write_text(render_toml(sections), "utf-8")
        return path

    def start(self) -> None:
        self.proc = launch_agent(self.write_config(), self.log_path, {"PYTHONPATH": str(ROOT)})

    def status(self) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = json.loads(self.status_path.read_text())
            return doc
        except (OSError, ValueError):
            return None

    def frames_in(self) -> int:
        s = self.status()
        return int(s["frames"]["in"]) if s else 0

    def pid(self) -> int | None:
        s = self.status()
        return int(s["pid"]) if s else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)

    def log_tail(self) -> str:
        return self.log_path.read_text("utf-8", "replace")[-4000:] if self.log_path.exists() else ""

    def verdict_ids(self, *files: Path) -> list[int]:
        ids = []
        for f in files:
            if not f.exists():
                continue
            for line in f.read_text("utf-8").splitlines():
                rec = json.loads(line)
                if rec.get("type") == "verdict":
                    ids.append(int(rec["frame_id"]))
        return ids


class StateWatch:
    """The device's retained config state, as the cloud sees it."""

    def __init__(self, link: MqttLink, topics: Topics) -> None:
        self.states: list[ConfigState] = []
        self._lock = threading.Lock()
        link.subscribe(topics.device_config_state(DEVICE), self._on)

    def _on(self, topic: str, payload: bytes, retained: bool) -> None:
        if payload:
            with self._lock:
                self.states.append(parse_config_state(payload))

    @property
    def last(self) -> ConfigState | None:
        with self._lock:
            return self.states[-1] if self.states else None

    def wait(self, pred: Callable[[ConfigState], bool], timeout: float = 20.0) -> ConfigState | None:
        def check() -> ConfigState | None:
            s = self.last
            return s if s is not None and pred(s) else None

        result: ConfigState | None = wait_for(check, timeout)
        return result

    def refused(self, version: int, timeout: float = 15.0) -> ConfigState | None:
        return self.wait(lambda s: s.last_refusal is not None and s.last_refusal.version == version, timeout)


@dataclass
class Fleet:
    broker: MosquittoBroker
    signer: SigningKey
    link: MqttLink
    store: RegistryStore
    agent: AgentProc
    topics: Topics = field(default_factory=Topics)

    def __post_init__(self) -> None:
        self.pusher = ConfigPusher(self.link, self.topics, self.signer, self.store)
        self.watch = StateWatch(self.link, self.topics)

    def push(self, overlay: dict[str, Any], target: str = DEVICE, actor: str = "test-engineer") -> int:
        return self.pusher.push(ConfigTarget.parse(target), overlay, actor=actor).version

    def publish_raw(self, body: dict[str, Any], *, tamper: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Sign ``body`` as it is (no builder checks: a hostile document that is correctly signed)."""
        env = self.signer.sign(body).model_dump(mode="json")
        if tamper is not None:
            tamper(env)
        self.link.publish_sync(self.topics.device_config(DEVICE), canonical_json(env), 1, False)

    def publish_payload(self, payload: bytes) -> None:
        self.link.publish_sync(self.topics.device_config(DEVICE), payload, 1, False)

    def body(self, version: int, config: dict[str, Any], **kw: Any) -> dict[str, Any]:
        now = time.time()
        body = {"schema": "edgeline.config/1", "version": version, "issued_at": now, "expires_at": now + 3600}
        return body | {"target": {"devices": [DEVICE]}, "config": config} | kw


@pytest.fixture
def fleet(
    mosquitto: MosquittoBroker, key_dir: Path, signing_key: SigningKey, tiny_bundle: Path, tmp_path: Path
) -> Iterator[Fleet]:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    (tmp_path / "allowed").mkdir()
    agent = AgentProc(tmp_path, mosquitto.port, KeyPaths(key_dir).trust, bundle, write_frames(tmp_path / "frames"))
    link = MqttLink(LinkSettings(port=mosquitto.port, client_id="test-config-cloud", clean_start=True))
    link.connect(10)
    store = open_store(f"sqlite:///{tmp_path / 'registry.db'}")
    f = Fleet(mosquitto, signing_key, link, store, agent)
    try:
        yield f
    finally:
        agent.stop()
        link.stop()
        store.close()
