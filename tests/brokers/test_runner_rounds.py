"""A rollout runner's round ends at its deadline while observations keep coming.

Found by bench_fleet's 1,000-device rollout: a wave reports thousands of events and states, and a
round that drained the whole queue lasted 6 s on Mosquitto. Meanwhile the rollout was not saved and
its ``runner_seen`` went stale, so another process (``edgeline rollout pause``) took its control
request as if no runner were driving. The real registry side on a real Mosquitto here: registry,
publisher, fleet watcher and runner, two devices known from their retained births."""

from __future__ import annotations

import time
from pathlib import Path

from cloud_registry import rollout as ro
from cloud_registry.fleet import FleetWatcher
from cloud_registry.publisher import Publisher
from cloud_registry.registry import Registry
from cloud_registry.rollout_runner import RolloutRunner, runner_alive
from converters.keys import SigningKey
from edgeline.core.mqtt_link import LinkSettings, MqttLink, wait_until
from edgeline.core.protocol.delivery import DeviceEvent, DeviceState, EventKind, UpdaterState
from edgeline.core.protocol.signing import TrustStore
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker

DEVICES = ("round-1", "round-2")
BACKLOG = 100_000  # far more than one 0.2 s round takes (about 10,000 here; 2 s for all of them)


def test_a_round_ends_at_its_deadline_under_a_flood_of_observations(
    mosquitto: MosquittoBroker, tiny_bundle: Path, signing_key: SigningKey, trust: TrustStore, tmp_path: Path
) -> None:
    topics = Topics()
    reg = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}", f"file://{tmp_path / 'artifacts'}")
    link = MqttLink(LinkSettings(port=mosquitto.port, client_id="rounds-registry", clean_start=True))
    try:
        mv = reg.add_bundle(tiny_bundle, trust, selftest=False)
        fleet = FleetWatcher(link, topics, book=reg.store)
        link.connect(10)
        for d in DEVICES:
            birth = DeviceState(device_id=d, online=True, ts=time.time(), heartbeat_s=60.0, groups=("rounds",))
            link.publish_sync(topics.device_state(d), birth.to_bytes(), 1, True)
        assert wait_until(lambda: len(fleet.view.members("rounds")) == len(DEVICES), 10)
        runner = RolloutRunner(reg, Publisher(link, topics, signing_key), fleet)
        r = runner.create(f"{mv.name}@{mv.version}", "group:rounds")
        assert {t.status for t in r.devices.values()} == {ro.DeviceStatus.SENT}

        # the fleet watcher hands every event to the runner's listener: a wave's worth, and more
        first = DEVICES[0]
        event = DeviceEvent(
            device_id=first,
            kind=EventKind.DOWNLOADING,
            state=UpdaterState.DOWNLOADING,
            sequence=r.devices[first].sequence,
        )
        for _ in range(BACKLOG):
            runner._on_fleet("event", first, event)
        before = reg.store.get_rollout(r.plan.id).runner_seen

        t0 = time.monotonic()
        r = runner.step(r, wait_s=0.2)
        took = time.monotonic() - t0
        left = runner._obs.qsize()
        assert took < 1.0, f"one round took {took:.2f} s"
        assert 0 < left < BACKLOG, left  # it took some and left the rest to the next rounds
        assert r.devices[first].status == ro.DeviceStatus.UPDATING
        row = reg.store.get_rollout(r.plan.id)
        assert row.runner_seen > before and runner_alive(row)  # saved: other processes see a runner

        rounds = 1
        while runner._obs.qsize() and rounds < 1000:
            r = runner.step(r, wait_s=0.2)
            rounds += 1
            assert runner_alive(reg.store.get_rollout(r.plan.id))
        assert runner._obs.qsize() == 0 and rounds > 1
        assert r.devices[DEVICES[1]].status == ro.DeviceStatus.SENT  # nothing invented for the other
    finally:
        link.stop()
        reg.close()
