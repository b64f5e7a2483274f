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

import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from edgeline.core.mqtt_link import MqttLink


@dataclass(frozen=True, slots=True)
class Delivery:
    topic: str
    payload: bytes
    retained: bool
    mid: int
    qos: int
    generation: int
    #: which of the ingest's links it came on (one per session: :mod:`.ingest_sessions`)
    source: int = 0


DeliverySink = Callable[[Delivery], None]
_PUBACK = struct.Struct("!BBH")  # fixed header, remaining length 2, packet id


def _ignore(_topic: str, _payload: bytes, _retained: bool) -> None:
    return None


@dataclass
class AckingLink(MqttLink):
    def __post_init__(self) -> None:
        super().__post_init__()
        self._batched: list[str] = []
        self._sink: DeliverySink | None = None
        self._pattern: re.Pattern[str] | None = None
        self._foreign = False
        self._subs_seen = -1
        self.source = 0
        #: batched messages that came with the DUP flag (sent again by the broker)
        self.redelivered = 0
        client = getattr(self, "_client", None)
        if client is not None:
            client.manual_ack_set(True)

    def _client_for(self, version: str) -> mqtt.Client:
        """Every paho client of the link (one per MQTT version it may speak) acknowledges by hand."""
        client = super()._client_for(version)
        client.manual_ack_set(True)
        return client

    def deliver(
        self, topic_filters: list[str], sink: DeliverySink, qos: int = 1, *, routed: Sequence[str] = ()
    ) -> None:
        """Hand every message on ``topic_filters`` to ``sink`` unacknowledged (call :meth:`ack` after
        storing it). A filter another part already subscribed on this link keeps its handler.
        ``routed``: filters not subscribed here whose messages still go to ``sink`` (what a session
        subscribed to before the filters moved to sessions of their own still brings)."""
        self._sink = sink
        self._batched.extend([*topic_filters, *routed])
        self._pattern = _pattern(self._batched) if self._batched else None
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

    def ack_many(self, deliveries: list[Delivery]) -> int:
        """PUBACK every delivery of the current connection at once; returns how many. The PUBACKs
        (4 bytes each) go to paho's send queue as ONE write: one wake-up of the network thread for a
        whole batch instead of one per message (measured: the per-message wake-ups and the thread
        switches behind them cost more than storing the window)."""
        client = self._client
        gen = self.generation
        mids = [d.mid for d in deliveries if d.qos == 1 and d.generation == gen]
        if client is None or not mids or not self.connected:
            return 0
        queue = getattr(client, "_packet_queue", None)
        if queue is None:  # a paho without the one send queue: one PUBACK at a time
            return sum(client.ack(mid, 1) == mqtt.MQTT_ERR_SUCCESS for mid in mids)
        queue(mqtt.PUBACK, b"".join(_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in mids), 0, 1)
        return len(mids)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        topic = msg.topic
        if self._sink is None or self._pattern is None or not self._pattern.match(topic):
            super()._on_message(client, userdata, msg)
            client.ack(msg.mid, msg.qos)
            return
        if self._foreign_handlers():
            super()._on_message(client, userdata, msg)  # other handlers of the topic (the fleet view)
        else:
            self.stats.received += 1
        if msg.dup:
            self.redelivered += 1
        d = Delivery(topic, bytes(msg.payload), bool(msg.retain), msg.mid, msg.qos, self.generation, self.source)
        self._sink(d)

    def _foreign_handlers(self) -> bool:
        """Whether a handler other than the batch's is subscribed (recomputed when subscriptions change)."""
        n = len(self._subs)
        if n != self._subs_seen:
            with self._lock:
                self._foreign = any(sub.handler is not _ignore for sub in self._subs.values())
                self._subs_seen = n
        return self._foreign


def _pattern(topic_filters: list[str]) -> re.Pattern[str]:
    """One regular expression matching the topics of ``topic_filters`` (``$share/<group>/`` removed)."""
    alts = []
    for raw in topic_filters:
        f = raw.split("/", 2)[2] if raw.startswith("$share/") else raw
        levels = ["[^/]+" if lv == "+" else ".*" if lv == "#" else re.escape(lv) for lv in f.split("/")]
        alts.append("/".join(levels))
    return re.compile("^(?:" + "|".join(alts) + ")$")
