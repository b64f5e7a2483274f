"""The whole loop on every broker the protocol claims (docs/scaling.md): Mosquitto, a 3-node NATS
cluster (MQTT over JetStream, 3.1.1 only, '.' refused, retained delivery through replicated
consumers) and RabbitMQ's MQTT plugin (3.1.1 only, no CONNACK for MQTT 5, no retained messages on
wildcard subscriptions). On each: deploy to a group, commit, SIGKILL (the Will says offline, the state
still says which model), restart, telemetry arrives, a second version. On the cluster: the agent's
node dies during a rollout; the agent moves to another node and the rollout completes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cloud_registry.rollout import RolloutStatus
from converters.keys import SigningKey
from edgeline.core.mqtt_link import wait_until
from edgeline.core.protocol.signing import TrustStore
from tests.brokers.agents import PortableAgent, RegistrySide, make_agent, registry_side
from tests.brokers.conftest import Target
from tests.brokers.servers import NatsCluster
from tests.delivery.conftest import BuiltBundle


def _model_version(side: RegistrySide, device_id: str) -> int | None:
    st = side.fleet.view.state(device_id)
    return st.model.version if st is not None and st.model is not None else None


def _committed(side: RegistrySide, device_id: str, version: int) -> bool:
    st = side.fleet.view.state(device_id)
    return bool(st and st.model and st.model.version == version and st.updater.value == "COMMITTED")


def _deploy(side: RegistrySide, ref: str, group: str, timeout: float = 90.0) -> Any:
    r = side.runner.create(ref, f"group:{group}")
    return side.runner.run(r.plan.id, timeout_s=timeout)


def _telemetry(side: RegistrySide, device_id: str) -> list[bytes]:
    got: list[bytes] = []
    # the exact topic, and whatever partitions the ingest may add below it (live messages reach
    # wildcards on every broker; only retained ones do not on RabbitMQ)
    topic = side.topics.device_telemetry(device_id)
    side.link.subscribe_many([topic, topic + "/#"], lambda _t, p, _r: got.append(p), 1)
    return got


def _start(agent: PortableAgent) -> None:
    agent.start(with_faults=bool(agent.faults))


def test_the_whole_loop_on_every_broker(
    target: Target,
    versions: dict[int, BuiltBundle],
    trust: TrustStore,
    key_dir: Path,
    signing_key: SigningKey,
    frames_dir: Path,
    tmp_path: Path,
) -> None:
    device = f"press-{target.name.replace('.', '-')}-{int(time.time() * 1000) % 100000}"
    # the registry talks to the cluster's last node first, the device to its first
    side = registry_side(tmp_path / "registry", list(reversed(target.addresses)), signing_key, f"reg-{device}")
    agent = make_agent(device, tmp_path, target.addresses, key_dir, frames_dir)
    try:
        for v in (1, 2):
            side.registry.add_bundle(versions[v].path, trust, selftest=False)
        telemetry = _telemetry(side, device)
        _start(agent)
        assert wait_until(lambda: device in side.fleet.view.members(agent.group), 30), agent.log_tail()
        assert {v for _, v, _ in agent.connections()} == ({"5"} if target.name == "mosquitto" else {"3.1.1"})

        # 1. deploy v1 to the group: committed
        r = _deploy(side, "tiny@1", agent.group)
        assert r.status == RolloutStatus.COMPLETED, (r.log, agent.log_tail())
        assert wait_until(lambda: _committed(side, device, 1), 20), agent.log_tail()

        # 2. telemetry arrives
        assert wait_until(lambda: len(telemetry) > 0, 30), agent.log_tail()

        # 3. SIGKILL: the Will says offline; the state still says v1, committed
        agent.sigkill()
        assert wait_until(lambda: side.fleet.view.presence(device) is False, 30)
        row = side.fleet.view.row(device, time.time())
        assert row.status == "offline" and row.state is not None
        assert row.state.model is not None and row.state.model.version == 1
        assert row.state.updater.value == "COMMITTED"

        # 4. a registry process started now knows the device without any wildcard retained message
        later = registry_side(tmp_path / "registry", list(target.addresses), signing_key, f"reg2-{device}")
        try:
            assert later.fleet.view.members(agent.group) == [device]
            assert wait_until(lambda: later.fleet.view.presence(device) is False, 15)
            assert _model_version(later, device) == 1
        finally:
            later.link.stop()

        # 5. restart: back online, serving v1 from its slot
        _start(agent)
        assert wait_until(lambda: side.fleet.view.presence(device) is True, 30), agent.log_tail()
        assert wait_until(lambda: side.fleet.view.row(device, time.time()).status == "online", 15)
        assert _model_version(side, device) == 1

        # 6. a second version
        r = _deploy(side, "tiny@2", agent.group)
        assert r.status == RolloutStatus.COMPLETED, (r.log, agent.log_tail())
        assert wait_until(lambda: _committed(side, device, 2), 20), agent.log_tail()
        assert agent.alive
    finally:
        agent.terminate()
        side.close()


def test_the_agents_node_dies_during_a_rollout(
    nats_cluster: NatsCluster,
    versions: dict[int, BuiltBundle],
    trust: TrustStore,
    key_dir: Path,
    signing_key: SigningKey,
    frames_dir: Path,
    tmp_path: Path,
) -> None:
    addresses = nats_cluster.addresses
    device = f"press-failover-{int(time.time() * 1000) % 100000}"
    # the updater holds 4 s in DOWNLOADING, long enough to kill the node under it
    agent = make_agent(device, tmp_path, addresses, key_dir, frames_dir, pause_at="DOWNLOADING", pause_s=4.0)
    killed = None
    side = None
    try:
        _start(agent)
        assert wait_until(lambda: bool(agent.connections()), 30), agent.log_tail()
        first_port = agent.connections()[-1][0]
        # the registry on the other nodes (a registry on the dying node would fail over too)
        others = [a for a in addresses if a[1] != first_port]
        side = registry_side(tmp_path / "registry", others, signing_key, f"reg-{device}")
        side.registry.add_bundle(versions[1].path, trust, selftest=False)
        assert wait_until(lambda: device in side.fleet.view.members(agent.group), 30), agent.log_tail()
        r = side.runner.create("tiny@1", f"group:{agent.group}")
        assert wait_until(lambda: agent.fault_hit() is not None, 30), agent.log_tail()
        killed = nats_cluster.node_of(first_port)
        killed.kill()
        r = side.runner.run(r.plan.id, timeout_s=90)
        seen = side.fleet.view.state(device)
        assert r.status == RolloutStatus.COMPLETED, (r.log, r.devices, agent.record(), seen, agent.log_tail())
        assert wait_until(lambda: _committed(side, device, 1), 20)
        conns = agent.connections()
        ports = [p for p, _, _ in conns]
        assert ports[-1] != first_port and ports[-1] in {p for _, p in addresses}, ports
        assert conns[-1][2], "NATS shares sessions across the cluster: the other node had this one"
        assert agent.alive
    finally:
        agent.terminate()
        if side is not None:
            side.close()
        if killed is not None and not killed.alive:
            nats_cluster.restart(killed)
