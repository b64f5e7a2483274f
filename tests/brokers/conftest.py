"""Brokers other than Mosquitto, of the tests' own: a 3-node nats-server cluster (MQTT over
JetStream) and a RabbitMQ node with the MQTT plugin, each started once per session on free ports with
its own directories (the system's NATS and RabbitMQ are never touched). Tests using them are marked
``broker`` (tests/conftest.py), so ``-m "not broker"`` stays service-free."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from converters.keys import SigningKey
from edgeline.demo.broker import MosquittoBroker
from tests.brokers.servers import NatsCluster, RabbitNode, find_rabbitmq
from tests.delivery.conftest import BuiltBundle, read_bundle
from tests.factories import tiny_frames, write_tiny_bundle


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    if shutil.which("nats-server") is None:
        pytest.fail("nats-server is not installed: run .ci/run, or apt-get install -y nats-server")
    cluster = NatsCluster(tmp_path_factory.mktemp("nats"), size=3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """One nats-server node (MQTT + JetStream)."""
    if shutil.which("nats-server") is None:
        pytest.fail("nats-server is not installed: run .ci/run, or apt-get install -y nats-server")
    node = NatsCluster(tmp_path_factory.mktemp("nats1"), size=1)
    try:
        node.start()
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    if find_rabbitmq() is None:
        pytest.fail("rabbitmq-server is not installed: run .ci/run, or apt-get install -y rabbitmq-server")
    node = RabbitNode(tmp_path_factory.mktemp("rabbit"))
    try:
        node.start()
        yield node
    finally:
        node.stop()


@dataclass(frozen=True)
class Target:
    name: str
    addresses: list[tuple[str, int]]


@pytest.fixture(params=["mosquitto", "nats-cluster", "rabbitmq"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """Each broker the protocol is tested on, as the list of addresses a device is given."""
    if request.param == "mosquitto":
        broker = MosquittoBroker(tmp_path / "mosquitto")
        broker.start()
        try:
            yield Target("mosquitto", [("127.0.0.1", broker.port)])
        finally:
            broker.kill()
    elif request.param == "nats-cluster":
        cluster: NatsCluster = request.getfixturevalue("nats_cluster")
        yield Target("nats-cluster", cluster.addresses)
    else:
        node: RabbitNode = request.getfixturevalue("rabbit")
        yield Target("rabbitmq", [("127.0.0.1", node.mqtt_port)])


@pytest.fixture(scope="session")
def versions(tmp_path_factory: pytest.TempPathFactory, signing_key: SigningKey) -> dict[int, BuiltBundle]:
    root = tmp_path_factory.mktemp("portable-versions")
    return {v: read_bundle(write_tiny_bundle(root / f"v{v}", signing_key, version=v, seed=v - 1)) for v in (1, 2)}


@pytest.fixture(scope="session")
def frames_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.delivery.agent_proc import write_frames

    return write_frames(tmp_path_factory.mktemp("portable-frames"), tiny_frames(6, seed=7)[0])
