"""Drain the outbox through the MQTT link: QoS 1; a PUBACK marks a message sent, the ingest's
acknowledgement (:mod:`.acks`) deletes it.

The pump runs on its own thread (the telemetry worker), never on paho's network thread: it publishes
a batch, then waits for the PUBACKs with :meth:`MqttLink.wait_published`, which would deadlock inside
a paho callback. A message whose PUBACK does not come (disconnect, timeout) stays due and goes again
at the next drain; a sent one goes again after every reconnect (the broker may have crashed with it)
and after the outbox's resend delay. Delivery is at-least-once; the idempotency key makes the second
copy harmless. A message the broker refuses (e.g. not authorised) is deferred with backoff and, if
it is telemetry, dropped and counted after a few refusals.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from edge_agent.errors import TransportError
from edge_agent.outbox.store import Outbox, OutboxMessage
from edgeline.core.mqtt_link import MqttLink

log = logging.getLogger(__name__)


@dataclass
class PumpStats:
    published: int = 0
    acked: int = 0
    timeouts: int = 0
    refused: int = 0


@dataclass
class OutboxPump:
    outbox: Outbox
    link: MqttLink
    batch: int = 32
    ack_timeout_s: float = 10.0
    stats: PumpStats = field(default_factory=PumpStats)
    #: the link's connection generation the last rearm was for (None: not yet, rearm at the first
    #: drain). Read from the link, not set by a connect listener: the listener runs on paho's thread
    #: AFTER the link reports connected, so a drain in between sent a message that the late
    #: listener then made due again (a duplicate on every first connect).
    _rearmed_for: int | None = field(default=None, init=False, repr=False)

    def drain(self, max_messages: int | None = None) -> int:
        """Send until nothing is due, the link drops, or ``max_messages`` went. Returns how many
        messages the broker acknowledged. Blocks; call from a worker thread."""
        delivered = 0
        generation = self.link.generation
        if generation != self._rearmed_for:
            self._rearmed_for = generation
            again = self.outbox.rearm()
            if again:
                log.info("reconnected: %d sent but unconfirmed messages go again", again)
        while self.link.connected and (max_messages is None or delivered < max_messages):
            limit = self.batch if max_messages is None else min(self.batch, max_messages - delivered)
            msgs = self.outbox.peek(limit)
            if not msgs:
                break
            acked, complete = self._send(msgs)
            self.outbox.sent(acked)
            delivered += len(acked)
            if not complete:
                break
        return delivered

    def _send(self, msgs: list[OutboxMessage]) -> tuple[list[int], bool]:
        """Publish a batch and wait for its PUBACKs. Returns (acknowledged ids, whether all went)."""
        sent: list[tuple[OutboxMessage, int]] = []
        complete = True
        for msg in msgs:
            try:
                mid = self.link.publish(msg.topic, msg.payload, qos=1)
            except TransportError as exc:
                log.info("outbox pump paused: %s", exc)
                complete = False
                break
            sent.append((msg, mid))
            self.stats.published += 1
        acked: list[int] = []
        deadline = time.monotonic() + self.ack_timeout_s
        for msg, mid in sent:
            try:
                ok = self._wait(mid, deadline)
            except TransportError as exc:  # the broker answered with a failure reason code
                self.stats.refused += 1
                self.outbox.refused(msg.id, str(exc))
                continue
            if ok:
                acked.append(msg.id)
                self.stats.acked += 1
            else:
                self.link.forget(mid)
                self.stats.timeouts += 1
                complete = False
        return acked, complete

    def _wait(self, mid: int, deadline: float) -> bool:
        """Wait for one PUBACK until ``deadline``, giving up early when the link drops."""
        while True:
            remaining = deadline - time.monotonic()
            if self.link.wait_published(mid, max(0.0, min(0.1, remaining))):
                return True
            if remaining <= 0 or not self.link.connected:
                return False
