"""An MQTT link whose telemetry messages are acknowledged to the broker only after they are stored.

paho's manual acknowledgements (``manual_ack_set``): a QoS 1 message on one of the *batched*
filters is handed to a sink with its packet id and is PUBACKed only when the ingest calls
:meth:`AckingLink.ack` after the store's commit. Until then the broker keeps it in flight for this
session and sends it again after a reconnect (MQTT 3.1.1 and 5 alike), so a worker killed between
receiving and committing loses nothing. Every other subscription of the link (the fleet view's
states and events, say) is acknowledged at once, after its handlers ran, as before.

An acknowledgement is sent only on the connection the message came on (``generation``): after a
reconnect the broker sends the unacknowledged messages again, and those are acknowledged then.
The broker bounds how many messages it leaves unacknowledged (Mosquitto: ``max_inflight_messages``
for MQTT 3.1.1 clients, default 20; the client's Receive Maximum on MQTT 5), which bounds a batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from edgeline.core.mqtt_link import MqttLink, filter_matches


@dataclass(frozen=True, slots=True)
class Delivery:
    topic: str
    payload: bytes
    retained: bool
    mid: int
    qos: int
    generation: int


DeliverySink = Callable[[Delivery], None]


def _ignore(_topic: str, _payload: bytes, _retained: bool) -> None:
    return None


@dataclass
class AckingLink(MqttLink):
    def __post_init__(self) -> None:
        super().__post_init__()
        self._batched: list[str] = []
        self._sink: DeliverySink | None = None
        client = getattr(self, "_client", None)
        if client is not None:
            client.manual_ack_set(True)

    def _client_for(self, version: str) -> mqtt.Client:
        """Every paho client of the link (one per MQTT version it may speak) acknowledges by hand."""
        client = super()._client_for(version)
        client.manual_ack_set(True)
        return client

    def deliver(self, topic_filters: list[str], sink: DeliverySink, qos: int = 1) -> None:
        """Hand every message on ``topic_filters`` to ``sink`` unacknowledged (call :meth:`ack` after
        storing it). A filter another part already subscribed on this link keeps its handler."""
        self._sink = sink
        self._batched.extend(topic_filters)
        with self._lock:
            new = [f for f in topic_filters if f not in self._subs]
        self.subscribe_many(new, _ignore, qos)

    def ack(self, d: Delivery) -> bool:
        """PUBACK ``d`` if it came on the current connection; False when it did not (it comes again)."""
        if d.qos == 0:
            return True
        client = self._client
        if client is None or d.generation != self.generation or not self.connected:
            return False
        return bool(client.ack(d.mid, d.qos) == mqtt.MQTT_ERR_SUCCESS)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        batched = self._sink is not None and any(filter_matches(f, msg.topic) for f in self._batched)
        super()._on_message(client, userdata, msg)  # other handlers of the topic (the fleet view)
        if batched and self._sink is not None:
            self._sink(Delivery(msg.topic, bytes(msg.payload), bool(msg.retain), msg.mid, msg.qos, self.generation))
        else:
            client.ack(msg.mid, msg.qos)
