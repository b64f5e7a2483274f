"""The link's small parts: a configured paho client, its counters, publish acknowledgements, and
MQTT filter matching."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgeline.core.errors import TransportError
from edgeline.core.mqtt.settings import LinkSettings, Will

MessageHandler = Callable[[str, bytes, bool], None]  # (topic, payload, retained)


@dataclass
class LinkStats:
    connects: int = 0
    disconnects: int = 0
    refused: int = 0
    last_refusal: str = ""
    received: int = 0
    handler_errors: int = 0
    #: the broker and MQTT version of the current (or last) connection
    address: str = ""
    protocol: str = ""
    #: connections made to another address than the previous one
    failovers: int = 0
    #: SUBSCRIBE packets, filters refused in a SUBACK or left unanswered, filters sent again
    subscribes: int = 0
    sub_refused: int = 0
    sub_unanswered: int = 0
    sub_retried: int = 0


@dataclass
class Subscription:
    qos: int
    handler: MessageHandler


@dataclass
class TryState:
    """One connection attempt, as paho's callbacks see it."""

    event: threading.Event = field(default_factory=threading.Event)
    connack: Any = None
    lost: bool = False


def make_client(s: LinkSettings, version: str, will: Will | None) -> mqtt.Client:
    """A paho client for MQTT ``version`` that never reconnects by itself (the link decides where)."""
    kwargs: dict[str, object] = {"client_id": s.client_id, "reconnect_on_failure": False}
    if version == "5":
        kwargs["protocol"] = mqtt.MQTTv5
    else:
        # 3.1.1 keeps no session for an empty client id (the broker assigns one): clean it must be
        kwargs.update(protocol=mqtt.MQTTv311, clean_session=s.clean_start or not s.client_id)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, **kwargs)  # type: ignore[arg-type]
    client.max_inflight_messages_set(s.max_inflight)
    client.max_queued_messages_set(s.max_queued)
    client.connect_timeout = max(1.0, s.connack_timeout_s)
    if s.username is not None:
        client.username_pw_set(s.username, s.password)
    if s.tls is not None:
        try:
            client.tls_set(
                ca_certs=s.tls.ca_file,
                certfile=s.tls.cert_file,
                keyfile=s.tls.key_file,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ValueError) as exc:
            raise TransportError(f"TLS settings refused: {exc}") from exc
        client.tls_insecure_set(not s.tls.server_hostname_check)
    if will is not None:
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    return client


class PublishAcks:
    """Waiters for QoS>0 acknowledgements. A PUBACK that arrives before its waiter is registered
    (paho may call back before ``publish`` returns) is remembered as early."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._acked: dict[int, threading.Event] = {}
        self._refused: dict[int, str] = {}
        self._early: dict[int, bool] = {}

    def expect(self, mid: int) -> None:
        with self._lock:
            ev = threading.Event()
            if self._early.pop(mid, None) is not None:
                ev.set()
            self._acked[mid] = ev

    def acked(self, mid: int, refusal: str | None) -> None:
        with self._lock:
            ev = self._acked.get(mid)
            if refusal is not None:
                self._refused[mid] = refusal
            if ev is None:
                self._early[mid] = True
                while len(self._early) > 4096:  # QoS 0 sends also land here; keep it bounded
                    self._early.pop(next(iter(self._early)))
        if ev is not None:
            ev.set()

    def wait(self, mid: int, timeout: float) -> bool:
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

    def forget(self, mid: int) -> None:
        with self._lock:
            self._acked.pop(mid, None)


def is_wildcard(topic_filter: str) -> bool:
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
