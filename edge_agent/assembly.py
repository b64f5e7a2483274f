"""One place where a device's parts are put together from its configuration (``DeviceConfig``).

``edgeline agent run`` calls :func:`build_plugins`: it makes the device's one connection to the
fleet broker (:class:`~edge_agent.cloud_link.CloudLink`, when ``[cloud]`` is on and a plugin needs
it), the durable outboxes with their pumps, and hands them to the updater and the telemetry plugin.
Nothing is cached between calls: each call builds its own parts, and the parts only know what they
are handed (the plugin modules import no factory).

The device keeps two outbox databases of the one outbox class (:mod:`edge_agent.outbox`), as it
always has, so existing state directories carry on: deployment events in
``<updater.state_dir>/events.db`` (stored before the updater goes on, drained by the event
publisher's thread as soon as one is stored) and telemetry windows at ``[telemetry] outbox_path``
(default ``<updater.state_dir>/outbox.db``, with the telemetry section's cap, TTL, drop policy and
resend schedule, drained by the telemetry worker). One acknowledgement subscription serves both
(:func:`edge_agent.outbox.acks.ack_router`).
"""

from __future__ import annotations

import atexit
import logging
from pathlib import Path

from edge_agent.cloud_link import CloudLink
from edge_agent.identity import DeviceIdentity
from edge_agent.outbox.pump import OutboxPump
from edge_agent.outbox.store import Outbox
from edge_agent.plugins import AgentPlugin
from edge_agent.remote_config.plugin import RemoteConfigPlugin
from edge_agent.remote_config.store import ConfigStore, state_dir_of
from edge_agent.telemetry.plugin import TelemetryPlugin
from edge_agent.telemetry.privacy import load_secret, new_secret
from edge_agent.updater.events import OutboxEventPublisher
from edge_agent.updater.link import load_trust
from edge_agent.updater.plugin import UpdaterPlugin
from edge_agent.updater.slots import SlotDisk
from edgeline.core.protocol.signing import TrustStore
from edgeline.core.protocol.topics import Topics
from firmware_configs.schema import DeviceConfig

log = logging.getLogger(__name__)

#: the deployment events' outbox, in the updater's state directory
EVENTS_DB = "events.db"
#: the telemetry windows' outbox when ``[telemetry] outbox_path`` is not set
TELEMETRY_DB = "outbox.db"
#: the device's own pseudonym secret when ``[telemetry] pseudonym_key_file`` is not set
TELEMETRY_KEY = "telemetry.key"


def build_plugins(config: DeviceConfig) -> list[AgentPlugin]:
    """The plugin factory of ``edgeline agent run`` (``edge_agent.plugin_loader.DEFAULT_PLUGINS``): the
    updater (when ``[updater]`` and ``[cloud]`` are on) and telemetry (when ``[telemetry]`` is on;
    offline-only, outbox and local alarm, when ``[cloud]`` is off), sharing one cloud link."""
    cloud = device_link(config) if _needs_link(config) else None
    plugins: list[AgentPlugin] = []
    updater = build_updater(config, cloud)
    if updater is not None:
        plugins.append(updater)
    telemetry = build_telemetry(config, cloud)
    if telemetry is not None:
        plugins.append(telemetry)
    remote = build_remote_config(config, cloud, updater.trust if updater is not None else None)
    if remote is not None:
        plugins.append(remote)
    return plugins


def cloud_link_of(plugins: list[AgentPlugin]) -> CloudLink | None:
    """The cloud link the plugins of :func:`build_plugins` share (None when they have none)."""
    for plugin in plugins:
        for attr in ("cloud", "link"):
            link = getattr(plugin, attr, None)
            if isinstance(link, CloudLink):
                return link
    return None


def _needs_link(config: DeviceConfig) -> bool:
    return config.cloud.enabled and (config.updater.enabled or config.telemetry.enabled or config.remote_config.enabled)


def device_identity(config: DeviceConfig) -> DeviceIdentity:
    dev = config.device
    return DeviceIdentity(dev.id, dev.hardware_class, tuple(dev.groups))


def device_link(config: DeviceConfig) -> CloudLink:
    """A new connection of this device to the fleet broker (not started). A clean exit of the
    process says goodbye on it (the retained offline state)."""
    link = CloudLink(config.cloud, device_identity(config))
    atexit.register(link.stop)
    return link


def build_updater(config: DeviceConfig, cloud: CloudLink | None) -> UpdaterPlugin | None:
    """The updater on ``cloud`` with its durable event outbox; starts the link. None when the
    config disables the updater or the cloud connection."""
    if not config.updater.enabled or cloud is None:
        return None
    dev = config.device
    state_dir = Path(config.updater.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    outbox = Outbox(state_dir / EVENTS_DB)
    events = OutboxEventPublisher(outbox, cloud.link, cloud.topics, dev.id, pump=OutboxPump(outbox, cloud.link))
    plugin = UpdaterPlugin(
        config.updater,
        cloud.identity,
        cloud,
        events,
        threads=config.inference.threads,
        shadow=config.shadow,
    )
    cloud.defer_birth()  # the first state published says the model the updater serves
    cloud.start()
    return plugin


def build_remote_config(
    config: DeviceConfig, cloud: CloudLink | None, trust: TrustStore | None = None
) -> RemoteConfigPlugin | None:
    """Signed remote configuration on ``cloud`` (docs/remote-config.md), checked against ``trust``
    (the updater's, so revocations it applies count here too). None when ``[remote_config]`` or the
    cloud connection is off."""
    if not config.remote_config.enabled or cloud is None:
        return None
    if trust is None:
        trust = load_trust(Path(config.trust_file), SlotDisk(Path(config.updater.state_dir)))
    return RemoteConfigPlugin(config, cloud, ConfigStore(state_dir_of(config)), trust)


def build_telemetry(config: DeviceConfig, cloud: CloudLink | None) -> TelemetryPlugin | None:
    """Telemetry through ``cloud``, or offline-only when it is None. None when ``[telemetry]`` is off."""
    section = config.telemetry
    if not section.enabled:
        return None
    outbox = telemetry_outbox(config)
    secret = telemetry_secret(config)
    topics = cloud.topics if cloud is not None else Topics(config.cloud.topic_root, config.cloud.fleet)
    groups = tuple(config.device.groups)
    plugin = TelemetryPlugin(
        section,
        outbox=outbox,
        secret=secret,
        topics=topics,
        link=cloud.link if cloud is not None else None,
        group=groups[0] if groups else None,
        pump=OutboxPump(outbox, cloud.link) if cloud is not None else None,
    )
    plugin.cloud = cloud
    return plugin


def telemetry_outbox(config: DeviceConfig) -> Outbox:
    """The telemetry windows' outbox, with the ``[telemetry]`` section's limits and resend schedule."""
    section = config.telemetry
    path = Path(section.outbox_path) if section.outbox_path else Path(config.updater.state_dir) / TELEMETRY_DB
    return Outbox(
        path,
        max_bytes=section.outbox_max_bytes,
        ttl_s=section.outbox_ttl_s,
        policy=section.drop_policy,
        resend_s=section.ack_resend_s,
        resend_max_s=section.ack_resend_max_s,
        unconfirmed_sends=section.ack_unconfirmed_sends,
    )


def telemetry_secret(config: DeviceConfig) -> bytes:
    """The pseudonym secret. Without ``pseudonym_key_file`` the device makes its own random secret
    (``<state_dir>/telemetry.key``): its pseudonym is then stable but nobody, the fleet operator
    included, can tell which device it is."""
    section = config.telemetry
    if section.pseudonym_key_file is not None:
        return load_secret(Path(section.pseudonym_key_file))
    own = Path(config.updater.state_dir) / TELEMETRY_KEY
    return load_secret(own) if own.exists() else new_secret(own)
