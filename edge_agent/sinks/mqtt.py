"""Verdicts on a topic of the LINE's local broker (``line/<device>/verdicts``), through the same narrow
MQTT client as the rest of edgeline. This never goes to the cloud broker."""

from __future__ import annotations

import time

from edge_agent.sinks.base import Record, SinkError, encode
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.topics import line_verdict_topic


class MqttSink:
    name = "mqtt"

    def __init__(
        self, settings: LinkSettings, device_id: str, *, prefix: str = "line", qos: int = 0, connect_wait_s: float = 3.0
    ) -> None:
        self.topic = line_verdict_topic(device_id, prefix)
        self.qos = qos
        self.link = MqttLink(settings)
        self.link.start()  # connects in the background and reconnects forever
        # At start-up, the first records wait (on this sink's thread) for the first connection.
        self._grace_until = time.monotonic() + connect_wait_s

    def write(self, record: Record) -> None:
        grace = self._grace_until - time.monotonic()
        if grace > 0 and not self.link.connected:
            self.link.wait_connected(grace)
        if not self.link.connected:
            raise SinkError(f"local broker {self.link.settings.host}:{self.link.settings.port} is not connected")
        try:
            self.link.publish_sync(self.topic, encode(record), qos=self.qos, timeout=5.0)
        except Exception as exc:
            raise SinkError(f"publish to {self.topic} failed: {exc}") from exc

    def close(self) -> None:
        self.link.stop()
