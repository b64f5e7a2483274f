"""The console's fleet view starts from the registry's book of devices (the fleet it knew), not
only from what a wildcard read of the retained states brings (RabbitMQ brings nothing)."""

from __future__ import annotations

import time
from pathlib import Path

from cloud_registry.registry import Registry
from edgeline.console.live import LiveView
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.delivery import DeviceState
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker


def test_the_live_view_knows_the_registrys_devices_at_start(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    reg = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}", f"file://{tmp_path / 'artifacts'}")
    state = DeviceState(device_id="cell-7", online=True, ts=time.time(), heartbeat_s=60, groups=("line-a",))
    reg.store.upsert_device("cell-7", {"state": state.model_dump(mode="json"), "online": True}, state.ts)
    link = MqttLink(LinkSettings(port=mosquitto.port, client_id="console-book", clean_start=True))
    try:
        live = LiveView(link, Topics(), book=reg.store)
        assert live.watcher.book is reg.store
        # nothing retained on the broker: the device is known from the book alone
        assert live.watcher.view.state("cell-7") is not None
        assert live.watcher.view.members("line-a") == ["cell-7"]
    finally:
        link.stop()
        reg.close()
