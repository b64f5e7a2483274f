"""The narrow MQTT communicator both sides use: connect, subscribe with handlers, publish.

Rules learned the hard way (see docs/decisions.md):

* ``connected`` becomes true only on a *successful* CONNACK, never on a bare socket connect.
* Persistent sessions: ``clean_start=False`` (MQTT 5) / ``clean_session=False`` (3.1.1) are sent
  explicitly, or paho starts every process with a clean session and the broker drops its queue.
* Subscriptions are remembered and re-sent on every connect, so a broker that lost its session
  state (restart without persistence) still delivers after reconnect.
* Handlers run on paho's network thread: they must be quick and must never block on a publish
  acknowledgement (that deadlocks). Hand work to a queue.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgeline.core.errors import TransportError

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes, bool], None]  # (topic, payload, retained)


@dataclass(frozen=True)
class TlsSettings:
    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None
    server_hostname_check: bool = True


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class LinkSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""
    username: str | None = None
    password: str | None = None
    tls: TlsSettings | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive: int = 30
    clean_start: bool = False
    session_expiry_s: int = 7 * 86400
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 10.0
    will: Will | None = None
    max_inflight: int = 64
    max_queued: int = 0


@dataclass
class _Subscription:
    qos: int
    handler: MessageHandler


@dataclass
class LinkStats:
    connects: int = 0
    disconnects: int = 0
    refused: int = 0
    last_refusal: str = ""
    received: int = 0
    handler_errors: int = 0


@dataclass
class MqttLink:
    """One MQTT connection with automatic reconnect. Thread-safe publish; handlers on paho's thread."""

    settings: LinkSettings
    stats: LinkStats = field(default_factory=LinkStats)

    def __post_init__(self) -> None:
        s = self.settings
        proto = mqtt.MQTTv5 if s.protocol == "5" else mqtt.MQTTv311
        kwargs: dict[str, Any] = {"client_id": s.client_id, "protocol": proto}
        if proto == mqtt.MQTTv311:
            kwargs["clean_session"] = s.clean_start
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, **kwargs)
        self._client.max_inflight_messages_set(s.max_inflight)
        self._client.max_queued_messages_set(s.max_queued)
        self._client.reconnect_delay_set(
            min_delay=max(1, int(s.reconnect_min_s)), max_delay=max(1, int(s.reconnect_max_s))
        )
        if s.username is not None:
            self._client.username_pw_set(s.username, s.password)
        if s.tls is not None:
            self._client.tls_set(
                ca_certs=s.tls.ca_file,
                certfile=s.tls.cert_file,
                keyfile=s.tls.key_file,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            self._client.tls_insecure_set(not s.tls.server_hostname_check)
        if s.will is not None:
            self._client.will_set(s.will.topic, s.will.payload, qos=s.will.qos, retain=s.will.retain)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._connected = threading.Event()
        self._generation = 0
        self._lock = threading.RLock()
        self._subs: dict[str, _Subscription] = {}
        self._wild: set[str] = set()  # filters with wildcards or a $share prefix
        self._acked: dict[int, threading.Event] = {}
        self._refused: dict[int, str] = {}
        self._early: dict[int, bool] = {}
        self._connect_listeners: list[Callable[[bool], None]] = []
        self._disconnect_listeners: list[Callable[[], None]] = []
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Begin connecting in the background; returns at once. Reconnects forever until :meth:`stop`."""
        if self._started:
            return
        s = self.settings
        props = None
        clean: Any = mqtt.MQTT_CLEAN_START_FIRST_ONLY
        if s.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = s.session_expiry_s
            clean = s.clean_start
        try:
            if s.protocol == "5":
                self._client.connect_async(s.host, s.port, s.keepalive, clean_start=clean, properties=props)
            else:
                self._client.connect_async(s.host, s.port, s.keepalive)
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot connect to {s.host}:{s.port}: {exc}") from exc
        self._client.loop_start()
        self._started = True

    def connect(self, timeout: float = 10.0) -> None:
        """Start and wait for a successful CONNACK; raise :class:`TransportError` otherwise."""
        self.start()
        if not self.wait_connected(timeout):
            reason = self.stats.last_refusal or "no answer"
            raise TransportError(
                f"not connected to {self.settings.host}:{self.settings.port} within {timeout}s ({reason})"
            )

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self) -> None:
        """Disconnect cleanly (the broker then does NOT publish the Last Will) and stop the thread."""
        if not self._started:
            return
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        self._started = False

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def generation(self) -> int:
        """How many successful connects so far; it changes at the same moment :attr:`connected`
        becomes true, so a reader that sees a connection also sees its generation (a connect
        listener runs later, on paho's thread)."""
        return self._generation

    def on_connect(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(session_present)`` after every successful connect (on paho's thread)."""
        self._connect_listeners.append(listener)

    def on_disconnect(self, listener: Callable[[], None]) -> None:
        self._disconnect_listeners.append(listener)

    def set_will(self, will: Will) -> None:
        """Replace the Last Will used from the next (re)connect on (e.g. to carry the current model)."""
        self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)

    # -- subscribe -----------------------------------------------------------------------------
    def subscribe(self, topic_filter: str, handler: MessageHandler, qos: int = 1) -> None:
        self.subscribe_many([topic_filter], handler, qos)

    def unsubscribe(self, topic_filter: str) -> None:
        self.unsubscribe_many([topic_filter])

    def subscribe_many(self, topic_filters: list[str], handler: MessageHandler, qos: int = 1) -> None:
        """Subscribe several filters to one handler in a single SUBSCRIBE packet."""
        if not topic_filters:
            return
        with self._lock:
            for f in topic_filters:
                self._subs[f] = _Subscription(qos, handler)
                if _is_wildcard(f):
                    self._wild.add(f)
            send = self._connected.is_set()
        if send:
            self._client.subscribe([(f, qos) for f in topic_filters])

    def unsubscribe_many(self, topic_filters: list[str]) -> None:
        """Unsubscribe several filters in a single UNSUBSCRIBE packet."""
        if not topic_filters:
            return
        with self._lock:
            for f in topic_filters:
                self._subs.pop(f, None)
                self._wild.discard(f)
            send = self._connected.is_set()
        if send:
            self._client.unsubscribe(list(topic_filters))

    # -- publish -------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> int:
        """Queue a publish; returns the message id. Raises :class:`TransportError` when not connected,
        so callers keep their own durable copy (paho's in-memory queue dies with the process)."""
        if not self.connected:
            raise TransportError("not connected")
        data = payload.encode("utf-8") if isinstance(payload, str) else payload
        # Our lock must NOT be held across paho's publish: paho calls on_publish while holding its
        # own outgoing-message mutex, and on_publish takes our lock (lock-order deadlock). A PUBACK
        # that arrives before the waiter is registered is remembered in ``_early`` instead.
        info = self._client.publish(topic, data, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise TransportError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        if qos > 0:
            with self._lock:
                ev = threading.Event()
                if self._early.pop(info.mid, None) is not None:
                    ev.set()
                self._acked[info.mid] = ev
        return int(info.mid)

    def wait_published(self, mid: int, timeout: float) -> bool:
        """Wait for the broker's acknowledgement of a QoS>0 publish. Never call from a handler."""
        with self._lock:
            ev = self._acked.get(mid)
        if ev is None:
            return True
        ok = ev.wait(timeout)
        if ok:
            with self._lock:
                self._acked.pop(mid, None)
                refusal = self._refused.pop(mid, None)
            if refusal is not None:
                raise TransportError(f"broker refused the publish: {refusal}")
        return ok

    def publish_sync(
        self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False, timeout: float = 10.0
    ) -> None:
        mid = self.publish(topic, payload, qos, retain)
        if qos > 0 and not self.wait_published(mid, timeout):
            raise TransportError(f"no acknowledgement for publish to {topic} within {timeout}s")

    def forget(self, mid: int) -> None:
        with self._lock:
            self._acked.pop(mid, None)

    # -- paho callbacks (network thread) --------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.stats.refused += 1
            self.stats.last_refusal = str(reason_code)
            log.warning("broker %s:%d refused connection: %s", self.settings.host, self.settings.port, reason_code)
            return
        session_present = bool(getattr(flags, "session_present", False))
        with self._lock:
            # snapshot and "connected" together: a subscribe racing with this reconnect is either in
            # the snapshot or sees connected and sends itself (it used to fall between the two)
            subs = list(self._subs.items())
            self._generation += 1
            self._connected.set()
        for topic_filter, sub in subs:
            client.subscribe(topic_filter, sub.qos)
        self.stats.connects += 1
        log.info("connected to %s:%d (session present: %s)", self.settings.host, self.settings.port, session_present)
        for listener in list(self._connect_listeners):
            try:
                listener(session_present)
            except Exception:
                log.exception("connect listener failed")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was:
            self.stats.disconnects += 1
            log.info("disconnected from %s:%d: %s", self.settings.host, self.settings.port, reason_code)
            for listener in list(self._disconnect_listeners):
                try:
                    listener()
                except Exception:
                    log.exception("disconnect listener failed")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.stats.received += 1
        with self._lock:
            # exact filters by lookup, only wildcard filters by matching (many chunk topics at once)
            exact = self._subs.get(msg.topic)
            subs = [self._subs[f] for f in self._wild if filter_matches(f, msg.topic)]
            if exact is not None and msg.topic not in self._wild:
                subs.insert(0, exact)
        for sub in subs:
            try:
                sub.handler(msg.topic, bytes(msg.payload), bool(msg.retain))
            except Exception:
                self.stats.handler_errors += 1
                log.exception("handler for %s failed", msg.topic)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        refused = bool(getattr(reason_code, "is_failure", False))
        with self._lock:
            ev = self._acked.get(mid)
            if refused:
                self._refused[mid] = str(reason_code)
            if ev is None:
                self._early[mid] = True
                while len(self._early) > 4096:  # QoS 0 sends also land here; keep it bounded
                    self._early.pop(next(iter(self._early)))
        if refused:
            log.warning("broker refused publish mid=%d: %s", mid, reason_code)
        if ev is not None:
            ev.set()


def _is_wildcard(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter or topic_filter.startswith("$")


def filter_matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching that also understands MQTT 5 shared subscriptions: messages of
    ``$share/<group>/<filter>`` arrive with the plain topic, so match them against ``<filter>``.
    Runs for every message on a wildcard subscription (every artifact chunk), so it splits and
    compares levels instead of building paho's matcher tree for each call."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        if len(parts) == 3:
            topic_filter = parts[2]
    if topic.startswith("$") != topic_filter.startswith("$"):
        return False  # wildcards never match $-topics (MQTT 4.7.2)
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return i == len(f_levels) - 1
        if i >= len(t_levels) or (level != "+" and level != t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout``; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
