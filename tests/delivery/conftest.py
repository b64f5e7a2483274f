"""Delivery fixtures: real bundles of several versions, a cloud-side publisher on the test's own
Mosquitto, and in-process devices (CloudLink + UpdaterPlugin + a simulated inspection loop)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloud_registry.publisher import Publisher, reissue
from converters.keys import KeyPaths, SigningKey
from edge_agent.bundle import MANIFEST_FILE
from edge_agent.cloud_link import CloudLink, DeviceIdentity
from edge_agent.updater.events import FanOutPublisher, LinkEventPublisher, ListEventPublisher
from edge_agent.updater.machine import Identity
from edge_agent.updater.plugin import UpdaterPlugin
from edgeline.core.mqtt_link import LinkSettings, MqttLink, wait_until
from edgeline.core.protocol.delivery import DeviceEvent, parse_event
from edgeline.core.protocol.manifest import Manifest, parse_manifest
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker
from firmware_configs.cloud_section import CloudSection
from firmware_configs.updater_section import UpdaterSection
from tests.delivery.sim_agent import SimAgent
from tests.factories import tiny_frames, write_tiny_bundle


@dataclass(frozen=True)
class BuiltBundle:
    path: Path
    manifest: Manifest
    data: bytes


def read_bundle(path: Path) -> BuiltBundle:
    env = json.loads((path / MANIFEST_FILE).read_text())
    man = parse_manifest(env["body"])
    return BuiltBundle(path, man, (path / man.artifact.filename).read_bytes())


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> dict[int, BuiltBundle]:
    """Real signed bundles of model 'tiny', versions 1-3 (different weights, so different hashes)."""
    root = tmp_path_factory.mktemp("versions")
    return {v: read_bundle(write_tiny_bundle(root / f"v{v}", signing_key, version=v, seed=v - 1)) for v in (1, 2, 3)}


@pytest.fixture(scope="session")
def frames() -> list[Any]:
    return tiny_frames(6, seed=7)[0]


@dataclass
class Device:
    agent: SimAgent
    plugin: UpdaterPlugin
    link: CloudLink
    events: ListEventPublisher

    def stop(self) -> None:
        self.agent.stop()
        self.link.stop()

    def kinds(self) -> list[str]:
        return self.events.kinds()

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events.events if e.reason]

    def version(self) -> int | None:
        m = self.agent.current_model
        return m.manifest.version if m else None


@dataclass
class Cloud:
    broker: MosquittoBroker
    key_dir: Path
    signer: SigningKey
    tmp: Path
    topics: Topics = field(default_factory=Topics)
    devices: list[Device] = field(default_factory=list)
    seen_events: list[DeviceEvent] = field(default_factory=list)
    sequence: int = 0

    def __post_init__(self) -> None:
        self.link = MqttLink(LinkSettings(port=self.broker.port, client_id="test-registry", clean_start=True))
        self.link.connect(10)
        self.link.subscribe(self.topics.all_device_events(), self._on_event)
        self.publisher = Publisher(self.link, self.topics, self.signer)

    def _on_event(self, topic: str, payload: bytes, retained: bool) -> None:
        self.seen_events.append(parse_event(payload))

    def cloud_section(self, **kw: Any) -> CloudSection:
        return CloudSection(port=self.broker.port, heartbeat_s=kw.pop("heartbeat_s", 5.0), **kw)

    def device(
        self,
        device_id: str,
        *,
        groups: tuple[str, ...] = (),
        hardware_class: str = "generic",
        frames: list[Any],
        run: bool = True,
        state_dir: Path | None = None,
        **updater: Any,
    ) -> Device:
        updater.setdefault("trial_frames", 3)
        updater.setdefault("trial_timeout_s", 10.0)
        updater.setdefault("trial_latency_budget_ms", 1000.0)
        updater.setdefault("min_free_bytes", 0)
        cfg = UpdaterSection(
            state_dir=str(state_dir or self.tmp / device_id),
            trust_file=str(KeyPaths(self.key_dir).trust),
            **updater,
        )
        ident = DeviceIdentity(device_id, hardware_class, groups)
        link = CloudLink(self.cloud_section(), ident)
        events = ListEventPublisher()
        plugin = UpdaterPlugin(
            cfg,
            Identity(device_id, hardware_class, frozenset(groups)),
            link,
            FanOutPublisher(events, LinkEventPublisher(link)),
        )
        agent = SimAgent(device_id, frames)
        link.start()
        agent.add(plugin)
        if run:
            agent.run(0.005)
        assert link.link.wait_connected(10)
        dev = Device(agent, plugin, link, events)
        self.devices.append(dev)
        return dev

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence

    def deploy(
        self,
        b: BuiltBundle,
        device_id: str,
        *,
        allow_downgrade: bool = False,
        publish_artifact: bool = True,
        **kw: Any,
    ) -> Manifest:
        man = reissue(
            b.manifest,
            sequence=kw.pop("sequence", None) or self.next_sequence(),
            devices=(device_id,),
            allow_downgrade=allow_downgrade,
            **kw,
        )
        if publish_artifact:
            self.publisher.publish_artifact(man, b.data)
        self.publisher.publish_desired(device_id, man)
        return man

    def close(self) -> None:
        for d in self.devices:
            d.stop()
        self.link.stop()


@pytest.fixture
def cloud(mosquitto: MosquittoBroker, key_dir: Path, signing_key: SigningKey, tmp_path: Path) -> Iterator[Cloud]:
    c = Cloud(mosquitto, key_dir, signing_key, tmp_path)
    try:
        yield c
    finally:
        c.close()


def wait_for(pred: Any, timeout: float = 15.0) -> bool:
    return wait_until(pred, timeout, 0.02)


def padded_model(data: bytes, extra_bytes: int, seed: int = 0) -> bytes:
    """The same ONNX model plus an unused initializer of random bytes (a real model of any size)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(data)
    rng = np.random.default_rng(seed)
    pad = rng.integers(0, 255, size=extra_bytes, dtype=np.uint8)
    m.graph.initializer.append(numpy_helper.from_array(pad, "edgeline_padding"))
    return m.SerializeToString()


def variant(b: BuiltBundle, data: bytes, version: int, chunk_size: int | None = None) -> BuiltBundle:
    """``b``'s manifest (and self-test vectors) for other model bytes: a new version."""
    from edgeline.core.protocol.manifest import DEFAULT_CHUNK_SIZE, artifact_for

    body = b.manifest.to_body()
    art = artifact_for(data, chunk_size=chunk_size or DEFAULT_CHUNK_SIZE)
    body.update(version=version, artifact=art.model_dump(mode="json"))
    return BuiltBundle(b.path, parse_manifest(body), data)
