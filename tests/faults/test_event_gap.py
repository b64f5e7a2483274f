"""The narrowest power cut: after the updater persisted a transition (``updater.json``) and before the
event of that transition reached the durable event outbox. A SIGKILL cannot be aimed at that gap from
outside, so the device runs in process and its event publisher freezes there for good (the thread
never returns, as if the power went); a second updater then starts on the same disk, as after the
reboot. The deduplicated event history the cloud receives must still be complete."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from cloud_registry.publisher import reissue
from converters.keys import KeyPaths
from edge_agent.cloud_link import CloudLink, DeviceIdentity
from edge_agent.outbox.store import Outbox
from edge_agent.updater.events import OutboxEventPublisher
from edge_agent.updater.machine import Identity
from edge_agent.updater.plugin import UpdaterPlugin
from edgeline.core.protocol.delivery import DeviceEvent
from firmware_configs.updater_section import UpdaterSection
from tests.delivery.conftest import BuiltBundle, Cloud, wait_for
from tests.delivery.sim_agent import SimAgent
from tests.faults.tools.ledger import EventLedger, history_problems


class PowerCutAt:
    """Stores events durably until the first event of ``kind``; there the thread stops for good."""

    def __init__(self, inner: OutboxEventPublisher, kind: str) -> None:
        self.inner = inner
        self.kind = kind
        self.hit = threading.Event()
        self._never = threading.Event()

    def publish_event(self, event: DeviceEvent) -> None:
        if event.kind.value == self.kind and not self.hit.is_set():
            self.hit.set()
            self._never.wait()  # the power is gone: this event never reaches the disk
            return
        self.inner.publish_event(event)

    def release(self) -> None:
        self._never.set()


class Device:
    def __init__(self, cloud: Cloud, device_id: str, state_dir: Path, frames: list[Any], cut_at: str | None) -> None:
        cfg = UpdaterSection(
            state_dir=str(state_dir),
            trust_file=str(KeyPaths(cloud.key_dir).trust),
            trial_frames=3,
            trial_timeout_s=20.0,
            trial_latency_budget_ms=2000.0,
            min_free_bytes=0,
        )
        state_dir.mkdir(parents=True, exist_ok=True)
        self.link = CloudLink(cloud.cloud_section(heartbeat_s=1.0), DeviceIdentity(device_id))
        self.durable = OutboxEventPublisher(
            Outbox(state_dir / "events.db"), self.link.link, self.link.topics, device_id
        )
        self.cut: PowerCutAt | None = PowerCutAt(self.durable, cut_at) if cut_at else None
        self.plugin = UpdaterPlugin(
            cfg, Identity(device_id, "generic", frozenset()), self.link, self.cut or self.durable
        )
        self.agent = SimAgent(device_id, frames)
        self.link.start()
        self.agent.add(self.plugin)
        self.agent.run(0.005)

    def power_cut(self) -> None:
        """Everything stops where it is: no clean shutdown of the updater or its outbox."""
        self.agent._stop.set()
        self.link.link.stop()
        self.durable.close()

    def stop(self) -> None:
        self.agent.stop()
        self.link.stop()


@pytest.mark.parametrize("cut_at", ["downloading", "verified", "staged", "activated", "committed"])
def test_a_power_cut_between_a_transition_and_its_event_loses_no_event(
    cloud: Cloud, chunky: dict[int, BuiltBundle], frames: list[Any], tmp_path: Path, ledger: EventLedger, cut_at: str
) -> None:
    dev_id = f"gap-{cut_at}"
    v1 = chunky[1]
    cloud.publisher.publish_artifact(v1.manifest, v1.data)
    first = Device(cloud, dev_id, tmp_path / dev_id, frames, cut_at)
    seq = cloud.next_sequence()
    cloud.publisher.publish_desired(dev_id, reissue(v1.manifest, sequence=seq, devices=(dev_id,)))
    assert first.cut is not None
    assert first.cut.hit.wait(30), "the updater never reached the cut"
    first.power_cut()

    second = Device(cloud, dev_id, tmp_path / dev_id, frames, None)  # the reboot, same disk
    try:
        ended = ("rolled_back",) if cut_at == "activated" else ("committed",)
        assert wait_for(lambda: any(e.kind.value in ended for e in ledger.of(dev_id)), 30), [
            e.kind.value for e in ledger.of(dev_id)
        ]
        assert wait_for(lambda: history_problems(ledger.of(dev_id)) == [], 10), history_problems(ledger.of(dev_id))
    finally:
        second.stop()
        first.cut.release()
