"""The narrow MQTT communicator both sides use: connect, subscribe with handlers, publish.

Rules learned the hard way (see docs/decisions.md):

* ``connected`` becomes true only on a *successful* CONNACK, never on a bare socket connect.
* Persistent sessions: ``clean_start=False`` (MQTT 5) / ``clean_session=False`` (3.1.1) are sent
  explicitly, or paho starts every process with a clean session and the broker drops its queue.
* Subscriptions are remembered and re-sent on every connect, so a broker that lost its session
  state (restart without persistence) still delivers after reconnect.
* Handlers run on paho's network thread: they must be quick and must never block on a publish
  acknowledgement (that deadlocks). Hand work to a queue.
* Portable across brokers (docs/scaling.md): several broker addresses tried in turn, MQTT 5 only
  where the broker accepts it (:mod:`edgeline.core.mqtt.plan`), every SUBACK checked and refused
  subscriptions retried (:mod:`edgeline.core.mqtt.subacks`). One supervisor thread per link
  connects, runs paho's network thread while the connection lives, and picks where to go next.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgeline.core.errors import TransportError
from edgeline.core.mqtt.client import (
    LinkStats,
    MessageHandler,
    PublishAcks,
    Subscription,
    TryState,
    filter_matches,
    is_wildcard,
    make_client,
    wait_until,
)
from edgeline.core.mqtt.plan import Attempt, ConnectPlan, Outcome, Version, remember
from edgeline.core.mqtt.settings import LinkSettings, TlsSettings, Will, format_address
from edgeline.core.mqtt.subacks import SubackBook

__all__ = ["LinkSettings", "LinkStats", "MessageHandler", "MqttLink", "TlsSettings", "Will", "filter_matches"]
__all__ += ["wait_until"]


log = logging.getLogger(__name__)


_VERSION_REFUSED = {0x84, 0x01}  # MQTT 5 "unsupported protocol version"; 3.1.1 return code 1


@dataclass
class MqttLink:
    """One MQTT connection with automatic reconnect and failover. Thread-safe publish; handlers on
    paho's thread."""

    settings: LinkSettings
    stats: LinkStats = field(default_factory=LinkStats)

    def __post_init__(self) -> None:
        s = self.settings
        self._clients: dict[str, mqtt.Client] = {}
        self._client: mqtt.Client | None = None  # the one of the current attempt
        self._will: Will | None = s.will
        self._connected = threading.Event()
        self._generation = 0
        self._lock = threading.RLock()
        self._subs: dict[str, Subscription] = {}
        self._wild: set[str] = set()  # filters with wildcards or a $share prefix
        self._acks = PublishAcks()
        self._connect_listeners: list[Callable[[bool], None]] = []
        self._disconnect_listeners: list[Callable[[], None]] = []
        self._subacks = SubackBook(min_s=s.resubscribe_min_s, max_s=max(s.resubscribe_min_s, s.reconnect_max_s))
        self._try = TryState()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_address: tuple[str, int] | None = None
        self.plan = ConnectPlan(s.addresses, s.protocol, s.reconnect_min_s, s.reconnect_max_s)

    def _client_for(self, version: str) -> mqtt.Client:
        """One paho client per MQTT version, kept across reconnects (its in-flight QoS 1 messages are
        sent again on the next connection)."""
        client = self._clients.get(version)
        if client is None:
            client = make_client(self.settings, version, self._will)
            client.on_connect = self._on_connect
            client.on_disconnect = self._on_disconnect
            client.on_message = self._on_message
            client.on_publish = self._on_publish
            client.on_subscribe = self._on_subscribe
            self._clients[version] = client
        return client

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Begin connecting in the background; returns at once. Reconnects forever until :meth:`stop`."""
        if self._thread is not None:
            return
        self._client_for(self.plan.next().version)  # settings errors (TLS files) surface here
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="edgeline-mqtt", daemon=True)
        self._thread.start()

    def connect(self, timeout: float = 10.0) -> None:
        """Start and wait for a successful CONNACK; raise :class:`TransportError` otherwise."""
        self.start()
        if not self.wait_connected(timeout):
            reason = self.stats.last_refusal or "no answer"
            where = ", ".join(format_address(a) for a in self.settings.addresses)
            raise TransportError(f"not connected to {where} within {timeout}s ({reason})")

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self) -> None:
        """Disconnect cleanly (the broker then does NOT publish the Last Will) and stop the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self._try.event.set()
        thread.join(10.0)
        self._connected.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def generation(self) -> int:
        """Successful connects so far; it changes when :attr:`connected` becomes true (before the
        connect listeners run, on paho's thread)."""
        return self._generation

    def on_connect(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(session_present)`` after every successful connect (on paho's thread)."""
        self._connect_listeners.append(listener)

    def on_disconnect(self, listener: Callable[[], None]) -> None:
        self._disconnect_listeners.append(listener)

    def set_will(self, will: Will) -> None:
        """Replace the Last Will used from the next (re)connect on (a Will cannot change while connected)."""
        self._will = will
        for client in self._clients.values():
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)

    # -- the supervisor thread -----------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            attempt = self.plan.next()
            if attempt.delay_s > 0 and self._stopping.wait(attempt.delay_s):
                break
            try:
                outcome = self._attempt(attempt)
            except Exception as exc:  # never let the link's thread die: count it a failed attempt
                log.exception("connection attempt to %s failed", format_address(attempt.address))
                self.stats.last_refusal = f"{format_address(attempt.address)}: {exc}"
                outcome = "unreachable"
            if outcome is None:
                break
            self.plan.report(attempt, outcome)

    def _attempt(self, attempt: Attempt) -> Outcome | None:
        s = self.settings
        host, port = attempt.address
        client = self._client_for(attempt.version)
        self._try = tr = TryState()
        self._client = client
        try:
            if attempt.version == "5":
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = s.session_expiry_s
                client.connect(host, port, s.keepalive, clean_start=s.clean_start, properties=props)
            else:
                client.connect(host, port, s.keepalive)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.info("broker %s:%d not reached: %s", host, port, exc)
            self.stats.last_refusal = f"{host}:{port}: {exc}"
            return "unreachable"
        client.loop_start()
        deadline = time.monotonic() + (
            s.connack_timeout_s if attempt.probe else max(s.connack_timeout_s, s.connack_wait_s)
        )
        while tr.connack is None and not tr.lost and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            tr.event.wait(left)
            tr.event.clear()
        if tr.connack is None or tr.connack.is_failure or self._stopping.is_set():
            client.disconnect()
            client.loop_stop()
            if self._stopping.is_set():
                return None
            if tr.connack is None:
                self.stats.last_refusal = f"no CONNACK from {host}:{port} for MQTT {attempt.version}"
                log.log(logging.INFO if attempt.probe else logging.WARNING, "%s", self.stats.last_refusal)
                return "no_connack"
            return "version_refused" if tr.connack.value in _VERSION_REFUSED else "refused"
        self.plan.report(attempt, "connected")
        while not tr.lost and not self._stopping.is_set():  # connected: watch SUBACKs until it ends
            tr.event.wait(0.25)
            tr.event.clear()
            self._resubscribe_due(client)
        if self._stopping.is_set():
            client.disconnect()
        client.loop_stop()
        return None if self._stopping.is_set() else "lost"

    # -- subscribe -----------------------------------------------------------------------------
    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        self.subscribe_many([topic_filter], handler, qos)

    def wait_granted(self, timeout: float) -> bool:
        """Wait until the broker granted every subscription sent on this connection (False at
        ``timeout``): a persistent session queues messages only for filters it has granted."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._connected.is_set() and self._subacks.settled:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def unsubscribe(self, topic_filter: str) -> None:
        self.unsubscribe_many([topic_filter])

    def subscribe_many(self, topic_filters: list[str], handler: MessageHandler, qos: int = 1) -> None:
        """Subscribe several filters to one handler in a single SUBSCRIBE packet."""
        if not topic_filters:
            return
        with self._lock:
            for f in topic_filters:
                self._subs[f] = Subscription(qos, handler)
                if is_wildcard(f):
                    self._wild.add(f)
            client = self._client if self._connected.is_set() else None
        if client is not None:
            self._send_subscribe(client, [(f, qos) for f in topic_filters])

    def unsubscribe_many(self, topic_filters: list[str]) -> None:
        """Unsubscribe several filters in a single UNSUBSCRIBE packet."""
        if not topic_filters:
            return
        with self._lock:
            for f in topic_filters:
                self._subs.pop(f, None)
                self._wild.discard(f)
                self._subacks.forget(f)
            client = self._client if self._connected.is_set() else None
        if client is not None:
            client.unsubscribe(list(topic_filters))

    def _send_subscribe(self, client: mqtt.Client, pairs: list[tuple[str, int]]) -> None:
        for i in range(0, len(pairs), 64):
            batch = pairs[i : i + 64]
            with self._lock:  # the SUBACK may come before paho returns: book it under the lock first
                rc, mid = client.subscribe(batch)
                if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                    self._subacks.sent(mid, [f for f, _ in batch], time.monotonic())
                    self.stats.subscribes += 1

    def _resubscribe_due(self, client: mqtt.Client) -> None:
        now = time.monotonic()
        with self._lock:
            late = self._subacks.expired(now)
            self.stats.sub_unanswered += len(late)
            for f in late:
                log.warning("no SUBACK for %s from %s; subscribing again", f, self.stats.address)
            due = [(f, self._subs[f].qos) for f in self._subacks.due(now) if f in self._subs]
            self.stats.sub_retried += len(due)
        by_qos: dict[int, list[tuple[str, int]]] = {}
        for f, q in due:
            by_qos.setdefault(q, []).append((f, q))
        for pairs in by_qos.values():
            self._send_subscribe(client, pairs)

    # -- publish -------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> int:
        """Queue a publish; returns the message id. Raises :class:`TransportError` when not connected,
        so callers keep their own durable copy (paho's in-memory queue dies with the process)."""
        client = self._client
        if not self.connected or client is None:
            raise TransportError("not connected")
        data = payload.encode("utf-8") if isinstance(payload, str) else payload
        # Our lock must NOT be held across paho's publish: paho calls on_publish while holding its
        # own outgoing-message mutex, and on_publish takes our lock (lock-order deadlock). A PUBACK
        # that arrives before the waiter is registered is remembered in ``_early`` instead.
        info = client.publish(topic, data, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise TransportError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        if qos > 0:
            self._acks.expect(info.mid)
        return int(info.mid)

    def wait_published(self, mid: int, timeout: float) -> bool:
        """Wait for the broker's acknowledgement of a QoS>0 publish. Never call from a handler."""
        return self._acks.wait(mid, timeout)

    def publish_sync(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False, timeout: float = 10.0
    ) -> None:
        mid = self.publish(topic, payload, qos, retain)
        if qos > 0 and not self.wait_published(mid, timeout):
            raise TransportError(f"no acknowledgement for publish to {topic} within {timeout}s")

    def forget(self, mid: int) -> None:
        self._acks.forget(mid)

    # -- paho callbacks (network thread) --------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        tr = self._try
        where = f"{client.host}:{client.port}"
        if reason_code.is_failure:
            self.stats.refused += 1
            self.stats.last_refusal = f"{where}: {reason_code}"
            level = logging.INFO if reason_code.value in _VERSION_REFUSED else logging.WARNING
            log.log(level, "broker %s refused connection: %s", where, reason_code)
            tr.connack = reason_code
            tr.event.set()
            return
        session_present = bool(getattr(flags, "session_present", False))
        address = (client.host, client.port)
        version: Version = "5" if client.protocol == mqtt.MQTTv5 else "3.1.1"
        if self.settings.protocol == "auto":
            remember(address, version)  # before "connected": another link made now knows it already
        with self._lock:
            # snapshot and "connected" together: a subscribe racing with this reconnect is either in
            # the snapshot or sees connected and sends itself (it used to fall between the two)
            subs = list(self._subs.items())
            self._subacks.reset()
            self._generation += 1
            self._connected.set()
        if self._last_address is not None and self._last_address != address:
            self.stats.failovers += 1
        self._last_address = address
        self.stats.address, self.stats.protocol = where, version
        by_qos: dict[int, list[tuple[str, int]]] = {}
        for topic_filter, sub in subs:
            by_qos.setdefault(sub.qos, []).append((topic_filter, sub.qos))
        for pairs in by_qos.values():
            self._send_subscribe(client, pairs)
        self.stats.connects += 1
        log.info("connected to %s with MQTT %s (session present: %s)", where, version, session_present)
        tr.connack = reason_code
        tr.event.set()
        for listener in list(self._connect_listeners):
            try:
                listener(session_present)
            except Exception:
                log.exception("connect listener failed")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        tr = self._try
        was = self._connected.is_set()
        self._connected.clear()
        tr.lost = True
        tr.event.set()
        if was:
            self.stats.disconnects += 1
            log.info("disconnected from %s:%d: %s", client.host, client.port, reason_code)
            for listener in list(self._disconnect_listeners):
                try:
                    listener()
                except Exception:
                    log.exception("disconnect listener failed")

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, properties: Any) -> None:
        failed = [bool(getattr(c, "is_failure", int(getattr(c, "value", c)) >= 0x80)) for c in codes]
        with self._lock:
            refused = self._subacks.acked(mid, failed, time.monotonic())
            self.stats.sub_refused += len(refused)
        for f, c in zip(refused, [c for c, bad in zip(codes, failed, strict=False) if bad], strict=False):
            log.warning("broker %s:%d refused the subscription %s (%s); retrying", client.host, client.port, f, c)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.stats.received += 1
        with self._lock:
            # exact filters by lookup, only wildcard filters by matching (many chunk topics at once)
            exact = self._subs.get(msg.topic)
            subs = [self._subs[f] for f in self._wild if filter_matches(f, msg.topic)]
            if exact is not None and msg.topic not in self._wild:
                subs.insert(0, exact)
        handlers: list[MessageHandler] = []
        for sub in subs:  # one call per handler, however many of its filters match
            if sub.handler not in handlers:
                handlers.append(sub.handler)
        for handler in handlers:
            try:
                handler(msg.topic, bytes(msg.payload), bool(msg.retain))
            except Exception:
                self.stats.handler_errors += 1
                log.exception("handler for %s failed", msg.topic)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        refused = bool(getattr(reason_code, "is_failure", False))
        if refused:
            log.warning("broker refused publish mid=%d: %s", mid, reason_code)
        self._acks.acked(mid, str(reason_code) if refused else None)
