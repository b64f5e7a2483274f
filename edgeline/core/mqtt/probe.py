"""What a broker offers, measured with real clients (``edgeline broker check``): the MQTT versions it
accepts, whether retained messages reach exact and wildcard subscriptions, shared subscriptions,
the QoS levels it grants, and the largest payload that goes through. Every probe topic is under
``<root>/<fleet>/probe/<token>/`` and its retained messages are cleared afterwards."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgeline.core.mqtt.client import make_client
from edgeline.core.mqtt.settings import LinkSettings
from edgeline.core.protocol.topics import Topics

PAYLOAD_STEPS = (1024, 64 * 1024, 256 * 1024, 1024 * 1024, 4 * 1024 * 1024, 16 * 1024 * 1024)


@dataclass
class BrokerReport:
    address: str
    versions: dict[str, str] = field(default_factory=dict)  # "5"/"3.1.1" -> accepted | refused: ... | no answer
    retained_exact: bool | None = None
    retained_wildcard: bool | None = None
    shared_subscriptions: str = "untested"  # split | not split | refused | no delivery | untested
    qos_granted: dict[str, int | None] = field(default_factory=dict)  # asked -> granted (None: refused)
    max_payload_ok: int = 0
    max_payload_failed: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """edgeline works here: some MQTT version, QoS 1 and retained messages on exact topics."""
        return (
            any(v == "accepted" for v in self.versions.values())
            and self.qos_granted.get("1") == 1
            and bool(self.retained_exact)
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"usable": self.usable}


class _Client:
    """One probe connection: a paho client on its own network thread, with waits."""

    def __init__(self, settings: LinkSettings, version: str, name: str) -> None:
        self.s = settings
        self.version = version
        self.c = make_client(replace(settings, client_id=name, clean_start=True), version, None)
        self._ev = threading.Condition()
        self.connack: Any = None
        self.closed = False
        self.subacks: dict[int, list[Any]] = {}
        self.pubacks: dict[int, Any] = {}
        self.messages: list[tuple[str, bytes, bool]] = []
        self.c.on_connect = lambda _c, _u, _f, rc, _p: self._note("connack", rc)
        self.c.on_disconnect = lambda _c, _u, _f, _rc, _p: self._note("closed", True)
        self.c.on_subscribe = lambda _c, _u, mid, codes, _p: self._note_map(self.subacks, mid, list(codes))
        self.c.on_publish = lambda _c, _u, mid, rc, _p: self._note_map(self.pubacks, mid, rc)
        self.c.on_message = lambda _c, _u, m: self._note_msg(m)

    def _note(self, attr: str, value: Any) -> None:
        with self._ev:
            setattr(self, attr, value)
            self._ev.notify_all()

    def _note_map(self, into: dict[int, Any], mid: int, value: Any) -> None:
        with self._ev:
            into[mid] = value
            self._ev.notify_all()

    def _note_msg(self, m: mqtt.MQTTMessage) -> None:
        with self._ev:
            self.messages.append((m.topic, bytes(m.payload), bool(m.retain)))
            self._ev.notify_all()

    def wait(self, pred: Any, timeout: float) -> bool:
        with self._ev:
            return self._ev.wait_for(pred, timeout)

    def connect(self, host: str, port: int, timeout: float) -> str:
        try:
            if self.version == "5":
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = 0
                self.c.connect(host, port, 30, clean_start=True, properties=props)
            else:
                self.c.connect(host, port, 30)
        except (OSError, ValueError) as exc:
            return f"unreachable: {exc}"
        self.c.loop_start()
        if not self.wait(lambda: self.connack is not None or self.closed, timeout) or self.connack is None:
            return "no answer"
        return f"refused: {self.connack}" if self.connack.is_failure else "accepted"

    def subscribe(self, topic_filter: str, qos: int, timeout: float) -> int | str | None:
        """The granted QoS, None when refused, "no answer" without a SUBACK."""
        rc, mid = self.c.subscribe(topic_filter, qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            return None
        if not self.wait(lambda: mid in self.subacks, timeout):
            return "no answer"
        code = self.subacks[mid][0]
        value = int(getattr(code, "value", code))
        return None if value >= 0x80 else value

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool, timeout: float) -> bool:
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        if qos == 0:
            return True
        if not self.wait(lambda: info.mid in self.pubacks or self.closed, timeout):
            return False
        rc = self.pubacks.get(info.mid)
        return rc is not None and not bool(getattr(rc, "is_failure", False))

    def got(self, topic: str, payload: bytes | None = None) -> int:
        with self._ev:
            return sum(1 for t, p, _ in self.messages if t == topic and (payload is None or p == payload))

    def stop(self) -> None:
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()


def probe_broker(
    settings: LinkSettings, topics: Topics, *, timeout: float = 5.0, max_payload: int = 16 * 1024 * 1024
) -> BrokerReport:
    host, port = settings.host, settings.port
    report = BrokerReport(f"{host}:{port}")
    token = f"p{os.getpid()}x{int(time.time() * 1000) % 10**9}"
    clients: list[_Client] = []

    def client(version: str, tag: str) -> _Client | None:
        c = _Client(settings, version, f"edgeline-check-{token}-{tag}")
        clients.append(c)
        return c if c.connect(host, port, timeout) == "accepted" else None

    try:
        for version in ("5", "3.1.1"):
            c = _Client(settings, version, f"edgeline-check-{token}-v{version[0]}")
            clients.append(c)
            report.versions[version] = c.connect(host, port, timeout)
        version = "5" if report.versions.get("5") == "accepted" else "3.1.1"
        if report.versions.get(version) != "accepted":
            report.notes.append("no MQTT version accepted: nothing else was checked")
            return report
        pub, sub_exact, sub_wild = client(version, "pub"), client(version, "exact"), client(version, "wild")
        if pub is None or sub_exact is None or sub_wild is None:
            report.notes.append("a second connection was refused: nothing else was checked")
            return report
        _retained(report, topics, token, pub, sub_exact, sub_wild, timeout)
        _qos(report, topics, token, sub_exact, timeout)
        a, b = client(version, "share-a"), client(version, "share-b")
        if a is not None and b is not None:
            _shared(report, topics, token, pub, a, b, timeout)
        _payloads(report, topics, token, pub, sub_exact, timeout, max_payload)
    finally:
        for c in clients:
            c.stop()
    if report.versions.get("5") != "accepted":
        report.notes.append("MQTT 5 not accepted: edgeline falls back to 3.1.1 (protocol = auto)")
    if report.retained_wildcard is False:
        report.notes.append("retained messages do not reach wildcard subscriptions: edgeline reads exact topics")
    if report.qos_granted.get("2") != 2:
        report.notes.append("QoS 2 not granted: edgeline uses QoS 0 and 1 only")
    return report


def _retained(
    report: BrokerReport, topics: Topics, token: str, pub: _Client, ex: _Client, wild: _Client, t: float
) -> None:
    topic = topics.probe(token, "retained")
    if not pub.publish(topic, b"kept", 1, True, t):
        report.notes.append("a retained QoS 1 publish was not acknowledged")
        return
    ex.subscribe(topic, 1, t)
    wild.subscribe(topics.probe_filter(token), 1, t)
    report.retained_exact = ex.wait(lambda: ex.got(topic) > 0, t)
    report.retained_wildcard = wild.wait(lambda: wild.got(topic) > 0, min(t, 2.0))
    pub.publish(topic, b"", 1, True, t)  # clear it


def _qos(report: BrokerReport, topics: Topics, token: str, c: _Client, t: float) -> None:
    for qos in (0, 1, 2):
        granted = c.subscribe(topics.probe(token, f"qos{qos}"), qos, t)
        report.qos_granted[str(qos)] = granted if isinstance(granted, int) else None


def _shared(report: BrokerReport, topics: Topics, token: str, pub: _Client, a: _Client, b: _Client, t: float) -> None:
    topic = topics.probe(token, "shared")
    share = f"$share/edgeline-check/{topic}"
    ga, gb = a.subscribe(share, 1, t), b.subscribe(share, 1, t)
    if ga is None or gb is None or isinstance(ga, str) or isinstance(gb, str):
        report.shared_subscriptions = "refused"
        return
    time.sleep(0.2)
    n = 8
    for i in range(n):
        pub.publish(topic, f"m{i}".encode(), 1, False, t)
    a.wait(lambda: a.got(topic) + b.got(topic) >= n, t)
    time.sleep(0.3)
    total = a.got(topic) + b.got(topic)
    if total == 0:
        report.shared_subscriptions = "no delivery"
    elif total == n and a.got(topic) and b.got(topic):
        report.shared_subscriptions = "split"
    elif total == n:
        report.shared_subscriptions = "one subscriber got all"
    else:
        report.shared_subscriptions = "not split" if total >= 2 * n else f"lost {n - total} of {n}"


def _arrived(sub: _Client, topic: str, data: bytes) -> Any:
    return lambda: sub.got(topic, data) > 0


def _payloads(report: BrokerReport, topics: Topics, token: str, pub: _Client, sub: _Client, t: float, cap: int) -> None:
    topic = topics.probe(token, "payload")
    if sub.subscribe(topic, 1, t) is None:
        return
    for size in (s for s in PAYLOAD_STEPS if s <= cap):
        data = os.urandom(size)
        if pub.closed or not pub.publish(topic, data, 1, False, t) or not sub.wait(_arrived(sub, topic, data), t):
            report.max_payload_failed = size
            return
        report.max_payload_ok = size
