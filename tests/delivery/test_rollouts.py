"""Rollouts end to end on a real broker: the registry, the runner and in-process devices."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloud_registry.fleet import FleetWatcher
from cloud_registry.publisher import Publisher
from cloud_registry.registry import Registry
from cloud_registry.rollout import Rollout
from cloud_registry.rollout_runner import RolloutRunner, request
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.signing import TrustStore
from tests.delivery.conftest import BuiltBundle, Cloud, wait_for


@dataclass
class RegistrySide:
    registry: Registry
    link: MqttLink
    fleet: FleetWatcher
    runner: RolloutRunner

    def close(self) -> None:
        self.link.stop()
        self.registry.close()


def registry_side(cloud: Cloud, tmp: Path, name: str = "registry") -> RegistrySide:
    reg = Registry.open(f"sqlite:///{tmp / 'registry.db'}", f"file://{tmp / 'artifacts'}")
    link = MqttLink(LinkSettings(port=cloud.broker.port, client_id=f"edgeline-{name}", clean_start=True))
    fleet = FleetWatcher(link, cloud.topics)
    link.connect(10)
    runner = RolloutRunner(reg, Publisher(link, cloud.topics, cloud.signer), fleet)
    return RegistrySide(reg, link, fleet, runner)


@pytest.fixture
def side(cloud: Cloud, bundles: dict[int, BuiltBundle], trust: TrustStore, tmp_path: Path) -> Iterator[RegistrySide]:
    s = registry_side(cloud, tmp_path)
    for v in (1, 2):
        s.registry.add_bundle(bundles[v].path, trust, selftest=False)
    try:
        yield s
    finally:
        s.close()


def versions(cloud: Cloud) -> dict[str, int | None]:
    return {d.agent.device_id: d.version() for d in cloud.devices}


def test_waves_then_canary_failure_aborts_and_rolls_back(
    cloud: Cloud, side: RegistrySide, bundles: dict[int, BuiltBundle], frames: list[Any]
) -> None:
    devs = {d: cloud.device(d, groups=("line-1",), frames=frames) for d in ("a-1", "a-2", "a-3", "a-4")}
    assert wait_for(lambda: len(side.fleet.view.members("line-1")) == 4)

    r = side.runner.create("tiny@1", "group:line-1", waves="2,all")
    assert [len(w) for w in r.plan.waves] == [2, 2]
    r = side.runner.run(r.plan.id, timeout_s=30)
    assert r.status == "completed", r.log
    assert r.log == ("started", "wave 1 dispatched", "wave 2 dispatched", "completed")

    def first(dev: str, kind: str) -> float:
        return min(e.ts for e in devs[dev].events.events if e.kind == kind)

    # wave 2 started only after both devices of wave 1 had committed
    assert min(first("a-3", "downloading"), first("a-4", "downloading")) >= max(
        first("a-1", "committed"), first("a-2", "committed")
    )
    assert versions(cloud) == dict.fromkeys(devs, 1)

    devs["a-2"].agent.fail_sha = bundles[2].manifest.artifact.sha256  # v2 errors on a-2's live frames
    r = side.runner.create("tiny@2", "group:line-1", canary=2, max_failure_pct=50)
    r = side.runner.run(r.plan.id, timeout_s=30)
    assert r.status == "aborted" and r.reason == "canary failed", r.log
    assert r.settled
    st = {d: t.status.value for d, t in r.devices.items()}
    assert st == {"a-1": "rolled_back", "a-2": "rolled_back", "a-3": "skipped", "a-4": "skipped"}
    assert r.devices["a-2"].reason == "trial_errors"
    assert wait_for(lambda: versions(cloud) == dict.fromkeys(devs, 1))
    a1 = [(e.kind.value, e.model.version if e.model else None) for e in devs["a-1"].events.events]
    assert ("committed", 2) in a1 and a1[-1] == ("committed", 1)  # updated, then sent back
    assert all(e.model is None or e.model.version == 1 for e in devs["a-3"].events.events)  # never offered v2
    row = side.registry.store.get_rollout(r.plan.id)
    assert row.status == "aborted"


def test_offline_device_converges_when_it_returns(
    cloud: Cloud, side: RegistrySide, bundles: dict[int, BuiltBundle], frames: list[Any], tmp_path: Path
) -> None:
    for d in ("b-1", "b-2", "b-3"):
        dev = cloud.device(d, groups=("line-2",), frames=frames)
        cloud.deploy(bundles[1], d)
        assert wait_for(lambda dev=dev: dev.version() == 1 and dev.plugin.state == "COMMITTED")
    b3 = cloud.devices.pop()
    b3.stop()  # goes offline (its retained state says so, with the model it runs)
    assert wait_for(lambda: side.fleet.view.row("b-3", 0).status == "offline")

    r = side.runner.create("tiny@2", "group:line-2")
    box: dict[str, Rollout] = {}
    t = threading.Thread(target=lambda: box.setdefault("r", side.runner.run(r.plan.id, timeout_s=40)))
    t.start()
    try:
        assert wait_for(lambda: versions(cloud) == {"b-1": 2, "b-2": 2})
        assert side.runner.load(r.plan.id).status == "running"  # the wave waits for b-3
        request(side.registry, r.plan.id, "pause")
        assert wait_for(lambda: side.runner.load(r.plan.id).status == "paused")
        request(side.registry, r.plan.id, "resume")
        back = cloud.device("b-3", groups=("line-2",), frames=frames, state_dir=cloud.tmp / "b-3")
        assert wait_for(lambda: back.version() == 2 and back.plugin.state == "COMMITTED", 20)
    finally:
        t.join(45)
    assert box["r"].status == "completed", box["r"].log
    assert {d: x.status.value for d, x in box["r"].devices.items()} == dict.fromkeys(("b-1", "b-2", "b-3"), "committed")


def test_delivery_survives_registry_down_and_broker_restart(
    cloud: Cloud, side: RegistrySide, bundles: dict[int, BuiltBundle], frames: list[Any], tmp_path: Path
) -> None:
    dev = cloud.device("c-1", groups=("line-3",), frames=frames)
    cloud.deploy(bundles[1], "c-1")
    assert wait_for(lambda: dev.version() == 1 and dev.plugin.state == "COMMITTED")
    cloud.devices.pop().stop()
    assert wait_for(lambda: side.fleet.view.row("c-1", 0).status == "offline")
    r = side.runner.create("tiny@2", "group:line-3")
    rollout_id = r.plan.id
    side.close()  # the registry process is gone
    cloud.link.stop()
    cloud.broker.restart()  # and the broker restarts (graceful: persistence saved)
    back = cloud.device("c-1", groups=("line-3",), frames=frames, state_dir=cloud.tmp / "c-1")
    assert wait_for(lambda: back.version() == 2 and back.plugin.state == "COMMITTED", 20)
    # the registry comes back later and learns the outcome from the retained state
    again = registry_side(cloud, tmp_path, "registry-2")
    try:
        r = again.runner.run(rollout_id, timeout_s=20)
        assert r.status == "completed" and r.devices["c-1"].status == "committed"
    finally:
        again.close()


def test_a_control_applied_by_another_process_is_not_overwritten_by_the_runner(
    cloud: Cloud, side: RegistrySide, bundles: dict[int, BuiltBundle], frames: list[Any], tmp_path: Path
) -> None:
    """``edgeline rollout abort`` acts itself when the runner's heartbeat looks stale (a loaded
    machine); the runner, alive after all, must follow that abort, not save its own state over it."""
    for d in ("w-1", "w-2"):
        dev = cloud.device(d, groups=("line-w",), frames=frames)
        cloud.deploy(bundles[1], d)
        assert wait_for(lambda dev=dev: dev.version() == 1 and dev.plugin.state == "COMMITTED")
    cloud.devices.pop().stop()  # w-2 offline: the rollout waits for it
    assert wait_for(lambda: side.fleet.view.row("w-2", 0).status == "offline")
    r = side.runner.create("tiny@2", "group:line-w")
    box: dict[str, Rollout] = {}
    t = threading.Thread(target=lambda: box.setdefault("r", side.runner.run(r.plan.id, timeout_s=30)))
    t.start()
    other = registry_side(cloud, tmp_path, "edgeline-cli")  # another process on the same store
    try:
        assert wait_for(lambda: versions(cloud) == {"w-1": 2})
        aborted = other.runner.apply_control(other.runner.load(r.plan.id), "abort")
        other.registry.store.save_rollout(r.plan.id, aborted.status.value, aborted.to_dict())  # as the CLI does
        assert wait_for(lambda: versions(cloud) == {"w-1": 1}, 20)  # sent back by the other process
    finally:
        t.join(35)
        other.close()
    assert box["r"].status == "aborted" and box["r"].reason == "abort requested", box["r"].log
    assert side.registry.store.get_rollout(r.plan.id).status == "aborted"


def test_a_control_asked_while_the_broker_is_down_is_carried_out_when_it_returns(
    cloud: Cloud, side: RegistrySide, bundles: dict[int, BuiltBundle], frames: list[Any]
) -> None:
    """The runner keeps driving through a broker outage: an abort whose send-backs cannot be published
    is neither lost nor the end of the runner; it is carried out once the broker is back."""
    for d in ("o-1", "o-2"):
        dev = cloud.device(d, groups=("line-o",), frames=frames)
        cloud.deploy(bundles[1], d)
        assert wait_for(lambda dev=dev: dev.version() == 1 and dev.plugin.state == "COMMITTED")
    cloud.devices.pop().stop()  # o-2 offline: the rollout waits for it
    assert wait_for(lambda: side.fleet.view.row("o-2", 0).status == "offline")
    r = side.runner.create("tiny@2", "group:line-o")
    box: dict[str, Rollout] = {}
    t = threading.Thread(target=lambda: box.setdefault("r", side.runner.run(r.plan.id, timeout_s=40)))
    t.start()
    try:
        assert wait_for(lambda: versions(cloud) == {"o-1": 2})
        cloud.broker.stop()
        assert wait_for(lambda: not side.link.connected, 10)
        request(side.registry, r.plan.id, "abort")
        time.sleep(1.5)  # rounds of the runner: each takes the abort, fails to publish, asks for it again
        assert side.registry.store.get_rollout(r.plan.id).control == "abort"
        assert t.is_alive() and side.runner.load(r.plan.id).status == "running"  # waiting, nothing lost
        cloud.broker.start()
        assert wait_for(lambda: versions(cloud) == {"o-1": 1}, 30)  # sent back once the broker is back
    finally:
        t.join(45)
    assert box["r"].status == "aborted" and box["r"].reason == "abort requested", box["r"].log


@pytest.mark.parametrize("url", ["sqlite", "postgresql"])
def test_rollout_saves_compare_and_set(url: str, tmp_path: Path) -> None:
    import uuid

    from cloud_registry.store import RolloutRow, open_store
    from tests.delivery.test_registry_store import PG_URL, _pg_available

    if url == "sqlite":
        store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    else:
        if not _pg_available():
            pytest.fail(f"PostgreSQL is not reachable at {PG_URL}")
        store = open_store(f"{PG_URL}?schema=edgeline_test_{uuid.uuid4().hex[:10]}")
    try:
        store.put_rollout(RolloutRow("r1", "running", {"n": 0}, 1.0, 1.0, None, 1.0))
        first = store.save_rollout("r1", "running", {"n": 1}, expect_updated_at=1.0)
        assert first is not None and first > 1.0
        assert store.save_rollout("r1", "running", {"n": 2}, expect_updated_at=1.0) is None  # stale: refused
        assert store.get_rollout("r1").doc == {"n": 1}
        theirs = store.save_rollout("r1", "aborted", {"n": 3})  # unconditional, as the CLI writes
        assert theirs is not None and store.save_rollout("r1", "running", {"n": 4}, expect_updated_at=first) is None
        assert store.get_rollout("r1").status == "aborted"
    finally:
        if url != "sqlite":
            store.drop_schema()  # type: ignore[attr-defined]
        store.close()
