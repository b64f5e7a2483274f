"""Build the updater plugin from a device configuration: the shared cloud link, a durable event
outbox next to the slots, and the trust store."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.cloud_link import shared_cloud_link
from edge_agent.outbox.store import Outbox
from edge_agent.updater.events import OutboxEventPublisher
from edge_agent.updater.machine import Identity
from edge_agent.updater.plugin import UpdaterPlugin

if TYPE_CHECKING:
    from firmware_configs.schema import DeviceConfig

log = logging.getLogger(__name__)

EVENTS_DB = "events.db"


def build_plugin(config: DeviceConfig) -> UpdaterPlugin | None:
    """Factory used by ``edgeline agent run`` (see ``edge_agent.cli.agent.DEFAULT_PLUGINS``). None
    when the config disables the updater or the cloud connection."""
    if not config.updater.enabled or not config.cloud.enabled:
        return None
    link = shared_cloud_link(config)
    assert link is not None
    dev = config.device
    state_dir = Path(config.updater.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    events = OutboxEventPublisher(Outbox(state_dir / EVENTS_DB), link.link, link.topics, dev.id)
    plugin = UpdaterPlugin(
        config.updater,
        Identity(dev.id, dev.hardware_class, frozenset(dev.groups)),
        link,
        events,
        threads=config.inference.threads,
    )
    link.start()
    return plugin
