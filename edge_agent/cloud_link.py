"""The device's connection to the fleet broker: one small class the updater and telemetry share.

* On every connect it publishes its **birth**: the retained :class:`DeviceState` (hardware class,
  agent version, groups, current model, slot, updater state, health, last event and error).
* Its **presence** (retained, ``devices/<id>/online``): ``online=true`` at every connect. The **Last
  Will** (retained, QoS 1, set once) is ``online=false`` on that topic and says nothing else: when the
  device vanishes the broker tells the fleet, and the retained state still says which model it ran
  and where its updater stood (a Will made at connect time would say what was true then).
* A **heartbeat** republishes the state every ``heartbeat_s``; the fleet view marks a device offline
  after three missed heartbeats even if no Will arrived (a half-open TCP connection).
* It subscribes to the device's desired topic, its groups' desired topics and the revocation list.

A clean :meth:`stop` publishes ``online=False`` itself, on both topics (a clean disconnect does not
fire the Will).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.errors import TransportError
from edge_agent.identity import DeviceIdentity
from edgeline.core.mqtt_link import LinkSettings, MqttLink, TlsSettings, Will
from edgeline.core.protocol.delivery import DeviceEvent, DevicePresence, DeviceState
from edgeline.core.protocol.topics import Topics
from firmware_configs.cloud_section import CloudSection

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes, bool], None]


def link_settings(cloud: CloudSection, identity: DeviceIdentity, will: Will | None) -> LinkSettings:
    password = None
    if cloud.password_file:
        try:
            password = Path(cloud.password_file).read_text("utf-8").strip()
        except OSError as exc:
            raise TransportError(f"cannot read password file {cloud.password_file}: {exc.strerror}") from exc
    tls = None
    if cloud.tls is not None:
        tls = TlsSettings(ca_file=cloud.tls.ca_file, cert_file=cloud.tls.cert_file, key_file=cloud.tls.key_file)
    (host, port), *others = cloud.addresses()
    return LinkSettings(
        host=host,
        port=port,
        brokers=tuple(others),
        connack_timeout_s=cloud.connect_timeout_s,
        client_id=f"edgeline-dev-{identity.device_id}",
        username=cloud.username,
        password=password,
        tls=tls,
        protocol=cloud.protocol,
        keepalive=cloud.keepalive_s,
        clean_start=False,
        session_expiry_s=cloud.session_expiry_s,
        reconnect_max_s=cloud.reconnect_max_s,
        will=will,
    )


class CloudLink:
    def __init__(self, cloud: CloudSection, identity: DeviceIdentity) -> None:
        self.cloud = cloud
        self.identity = identity
        self.topics = Topics(cloud.topic_root, cloud.fleet)
        self._lock = threading.Lock()
        self._state = DeviceState(
            device_id=identity.device_id,
            online=True,
            ts=time.time(),
            heartbeat_s=cloud.heartbeat_s,
            hardware_class=identity.hardware_class,
            groups=identity.groups,
            agent_version=identity.agent_version,
        )
        self._declared = True  # False: the birth waits for the first update_state (see defer_birth)
        self.link = MqttLink(link_settings(cloud, identity, self._will()))
        self.link.on_connect(self._on_connect)
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background (reconnecting forever) and start the heartbeat."""
        self._stop.clear()
        self.link.start()
        if self._heartbeat is None:
            self._heartbeat = threading.Thread(target=self._beat, name="edgeline-heartbeat", daemon=True)
            self._heartbeat.start()

    def connect(self, timeout: float = 10.0) -> None:
        self.start()
        if not self.link.wait_connected(timeout):
            where = ", ".join(f"{h}:{p}" for h, p in self.cloud.addresses())
            raise TransportError(f"fleet broker {where} not reached within {timeout}s")

    def stop(self) -> None:
        """Say goodbye (retained offline state) and disconnect cleanly."""
        self._stop.set()
        if self.link.connected:
            try:
                self.link.publish(self.topics.device_state(self.identity.device_id), self._offline_bytes(), 1, True)
                self.link.publish_sync(self._presence_topic, self._presence(False), 1, True, 2.0)
            except TransportError as exc:
                log.debug("could not publish offline state: %s", exc)
        self.link.stop()
        if self._heartbeat is not None:
            self._heartbeat.join(2.0)
            self._heartbeat = None

    @property
    def connected(self) -> bool:
        return self.link.connected

    def on_connect(self, listener: Callable[[bool], None]) -> None:
        self.link.on_connect(listener)

    def on_disconnect(self, listener: Callable[[], None]) -> None:
        self.link.on_disconnect(listener)

    def defer_birth(self) -> None:
        """Publish no state at connect until the first :meth:`update_state` (the updater's report of
        the model it serves), or the first heartbeat: a restarted device's birth must not say "no
        model" for the moment before its updater has read its record."""
        with self._lock:
            self._declared = False

    # -- state ----------------------------------------------------------------------------------
    @property
    def state(self) -> DeviceState:
        with self._lock:
            return self._state

    def update_state(self, **changes: Any) -> DeviceState:
        """Merge ``changes`` into the retained state and publish it (when connected)."""
        with self._lock:
            data = self._state.model_dump(by_alias=False)
            data.update(changes)
            data["ts"] = time.time()
            self._state = DeviceState.model_validate(data)
            state = self._state
            self._declared = True
            # published under the lock: the last state sent is the newest (a birth on paho's thread
            # racing with this change used to publish its older snapshot after it)
            self._publish_state(state)
        return state

    @property
    def _presence_topic(self) -> str:
        return self.topics.device_online(self.identity.device_id)

    def _presence(self, online: bool) -> bytes:
        return DevicePresence(
            device_id=self.identity.device_id, online=online, ts=time.time() if online else None
        ).to_bytes()

    def _will(self) -> Will:
        return Will(self._presence_topic, self._presence(False), qos=1, retain=True)

    def _offline_bytes(self, state: DeviceState | None = None) -> bytes:
        s = state or self.state
        return s.model_copy(update={"online": False, "ts": time.time()}).to_bytes()

    def _publish_state(self, state: DeviceState) -> None:
        if not self.link.connected:
            return
        try:
            self.link.publish(self.topics.device_state(self.identity.device_id), state.to_bytes(), 1, True)
        except TransportError as exc:
            log.debug("state not published: %s", exc)

    def _on_connect(self, session_present: bool) -> None:
        with self._lock:
            self._state = self._state.model_copy(update={"online": True, "ts": time.time()})
            try:  # presence first: a fleet view that sees the state online also sees the presence
                self.link.publish(self._presence_topic, self._presence(True), 1, True)
            except TransportError as exc:
                log.debug("presence not published: %s", exc)
            if self._declared:
                self._publish_state(self._state)

    def _beat(self) -> None:
        while not self._stop.wait(self.cloud.heartbeat_s):
            with self._lock:
                self._state = self._state.model_copy(update={"ts": time.time()})
                self._declared = True
                self._publish_state(self._state)

    # -- messages -------------------------------------------------------------------------------
    def send_event(self, event: DeviceEvent) -> None:
        """Publish an updater event at QoS 1. Raises :class:`TransportError` when offline."""
        self.link.publish(self.topics.device_events(self.identity.device_id), event.to_bytes(), 1, False)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> int:
        return self.link.publish(topic, payload, qos, retain)

    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        self.link.subscribe(topic_filter, handler, qos)

    def unsubscribe(self, topic_filter: str) -> None:
        self.link.unsubscribe(topic_filter)

    def subscribe_many(self, topic_filters: list[str], handler: MessageHandler, qos: int = 1) -> None:
        self.link.subscribe_many(topic_filters, handler, qos)

    def unsubscribe_many(self, topic_filters: list[str]) -> None:
        self.link.unsubscribe_many(topic_filters)

    def desired_topics(self) -> list[str]:
        t = self.topics
        return [t.device_desired(self.identity.device_id), *(t.group_desired(g) for g in self.identity.groups)]

    def subscribe_desired(self, handler: MessageHandler) -> None:
        for topic in self.desired_topics():
            self.subscribe(topic, handler, 1)

    def subscribe_revocations(self, handler: MessageHandler) -> None:
        self.subscribe(self.topics.trust_revocations(), handler, 1)
