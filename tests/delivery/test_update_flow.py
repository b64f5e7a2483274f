"""End to end on a real Mosquitto: a device takes a signed deployment through every updater state."""

from __future__ import annotations

import json
from typing import Any

from edgeline.core.protocol.delivery import UpdaterState
from tests.delivery.conftest import BuiltBundle, Cloud, wait_for


def test_first_install_then_upgrade_walks_every_state(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any]
) -> None:
    dev = cloud.device("dev-1", frames=frames)
    assert dev.agent.current_model is None

    cloud.deploy(bundles[1], "dev-1")
    assert wait_for(lambda: dev.plugin.state == UpdaterState.COMMITTED)
    assert dev.version() == 1
    cloud.deploy(bundles[2], "dev-1")
    assert wait_for(lambda: dev.plugin.state == UpdaterState.COMMITTED and dev.version() == 2)
    kinds = dev.kinds()
    assert kinds == ["downloading", "verified", "staged", "activated", "committed"] * 2
    committed = [e for e in dev.events.events if e.kind == "committed"][-1]
    assert set(committed.timings) >= {"download", "verify", "stage", "load", "selftest", "trial"}
    # the slots: v2 in B is current, v1 kept in A for a fast rollback
    state_dir = dev.plugin.disk
    assert state_dir.current.resolve().name == "B"
    rec = json.loads(state_dir.record_path.read_text())
    assert rec["slots"]["A"]["version"] == 1 and rec["slots"]["B"]["version"] == 2
    # the registry saw the same events over MQTT, and the retained state tells the model
    assert wait_for(lambda: len([e for e in cloud.seen_events if e.kind == "committed"]) == 2)
    assert dev.link.state.model is not None and dev.link.state.model.version == 2
    assert dev.link.state.updater == UpdaterState.COMMITTED


def test_authorised_rollback_uses_the_other_slot_without_download(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any]
) -> None:
    dev = cloud.device("dev-2", frames=frames)
    cloud.deploy(bundles[1], "dev-2")
    assert wait_for(lambda: dev.plugin.state == UpdaterState.COMMITTED and dev.version() == 1)
    cloud.deploy(bundles[2], "dev-2")
    assert wait_for(lambda: dev.plugin.state == UpdaterState.COMMITTED and dev.version() == 2)
    cloud.deploy(bundles[1], "dev-2", allow_downgrade=True, publish_artifact=False)
    assert wait_for(lambda: dev.version() == 1 and dev.plugin.state == UpdaterState.COMMITTED)
    assert dev.plugin.download is not None and dev.plugin.download.stats.received == []
