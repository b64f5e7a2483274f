"""What the link does about each broker's quirks, measured against the real servers: MQTT 5 refused
(NATS: CONNACK 0x84) or never answered (RabbitMQ), a refused subscription (NATS refuses '.'), and
retained messages that never reach a wildcard subscription (RabbitMQ)."""

from __future__ import annotations

import time

from edgeline.core.mqtt import plan
from edgeline.core.mqtt_link import LinkSettings, MqttLink, wait_until
from tests.brokers.servers import NatsCluster, RabbitNode


def _link(port: int, name: str, **kw: object) -> MqttLink:
    return MqttLink(LinkSettings(port=port, client_id=name, clean_start=True, **kw))  # type: ignore[arg-type]


def test_nats_refuses_5_the_link_falls_back_once_and_remembers(nats: NatsCluster) -> None:
    port = nats.addresses[0][1]
    plan.remember(("127.0.0.1", port), None)
    first = _link(port, "quirk-n1")
    t0 = time.monotonic()
    first.connect(10)
    took = time.monotonic() - t0
    try:
        assert first.stats.protocol == "3.1.1" and first.stats.refused == 1
        assert "Unsupported protocol version" in first.stats.last_refusal
        assert took < 3.0  # a refusal, not a timeout
        assert plan.remembered(("127.0.0.1", port)) == "3.1.1"
    finally:
        first.stop()
    second = _link(port, "quirk-n2")
    second.connect(10)
    try:
        assert second.stats.protocol == "3.1.1" and second.stats.refused == 0  # no second MQTT 5 try
    finally:
        second.stop()


def test_forced_mqtt5_on_nats_never_connects(nats: NatsCluster) -> None:
    link = _link(nats.addresses[0][1], "quirk-n5", protocol="5", reconnect_min_s=0.1, reconnect_max_s=0.2)
    link.start()
    try:
        assert wait_until(lambda: link.stats.refused >= 2, 10)
        assert not link.connected
    finally:
        link.stop()


def test_rabbitmq_never_answers_5_the_link_falls_back(rabbit: RabbitNode) -> None:
    plan.remember(("127.0.0.1", rabbit.mqtt_port), None)
    link = _link(rabbit.mqtt_port, "quirk-r1", connack_timeout_s=2.0)
    link.connect(15)
    try:
        assert link.stats.protocol == "3.1.1" and link.stats.refused == 0
        assert "no CONNACK" in link.stats.last_refusal
    finally:
        link.stop()


def test_a_refused_subscription_is_counted_logged_and_retried(nats: NatsCluster, caplog: object) -> None:
    link = _link(nats.addresses[0][1], "quirk-sub", resubscribe_min_s=0.2, reconnect_max_s=1.0)
    link.connect(10)
    try:
        got: list[bytes] = []
        link.subscribe("edgeline/bad.segment/x", lambda _t, p, _r: got.append(p))  # '.': NATS says 0x80
        link.subscribe("edgeline/good-segment/x", lambda _t, p, _r: got.append(p))
        assert wait_until(lambda: link.stats.sub_refused >= 3 and link.stats.sub_retried >= 2, 10), link.stats
        refused_at = link.stats.sub_refused
        link.unsubscribe("edgeline/bad.segment/x")  # no more retries once the caller gives up
        time.sleep(1.5)
        assert link.stats.sub_refused <= refused_at + 1
        link.publish_sync("edgeline/good-segment/x", b"ok", 1)
        assert wait_until(lambda: got == [b"ok"], 5)  # the good one was granted and delivers
    finally:
        link.stop()


def test_rabbitmq_keeps_retained_messages_from_wildcards(rabbit: RabbitNode) -> None:
    """Why downloads and the fleet view read exact topics: the same retained message reaches an
    exact subscription and never a wildcard one (live messages reach both)."""
    links = {n: _link(rabbit.mqtt_port, f"quirk-r{n}") for n in ("pub", "exact", "wild")}
    for link in links.values():
        link.connect(15)
    try:
        links["pub"].publish_sync("quirk/retained/one", b"kept", 1, True)
        exact: list[bytes] = []
        wild: list[bytes] = []
        links["wild"].subscribe("quirk/+/one", lambda _t, p, _r: wild.append(p))
        links["exact"].subscribe("quirk/retained/one", lambda _t, p, _r: exact.append(p))
        assert wait_until(lambda: exact == [b"kept"], 5)
        time.sleep(0.5)
        assert wild == []
        links["pub"].publish_sync("quirk/retained/one", b"live", 1, False)
        assert wait_until(lambda: wild == [b"live"] and exact == [b"kept", b"live"], 5)
    finally:
        links["pub"].publish_sync("quirk/retained/one", b"", 1, True)
        for link in links.values():
            link.stop()
