"""The TCP fault proxy itself, between a real MQTT client and a real Mosquitto: each fault does what
the campaigns rely on it to do."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edge_agent.errors import TransportError
from edgeline.core.mqtt_link import LinkSettings, MqttLink, wait_until
from edgeline.demo.broker import MosquittoBroker
from tests.faults.tools.proxy import FaultProxy

TOPIC = "faults/proxy/test"


@pytest.fixture
def proxy(mosquitto: MosquittoBroker) -> Iterator[FaultProxy]:
    with FaultProxy(mosquitto.port) as p:
        yield p


@pytest.fixture
def pair(mosquitto: MosquittoBroker, proxy: FaultProxy) -> Iterator[tuple[MqttLink, list[bytes]]]:
    """A publisher behind the proxy, a subscriber straight on the broker."""
    got: list[bytes] = []
    sub = MqttLink(LinkSettings(port=mosquitto.port, client_id="proxy-sub", clean_start=True))
    sub.subscribe(TOPIC, lambda t, p, r: got.append(p))
    sub.connect(10)
    pub = MqttLink(LinkSettings(port=proxy.port, client_id="proxy-pub", keepalive=5, reconnect_max_s=1.0))
    pub.connect(10)
    try:
        yield pub, got
    finally:
        pub.stop()
        sub.stop()


def test_refuses_anything_but_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy(1883, upstream_host="10.0.0.1")


def test_cut_resets_connections_and_the_client_reconnects(
    pair: tuple[MqttLink, list[bytes]], proxy: FaultProxy
) -> None:
    pub, got = pair
    assert proxy.cut() == 1
    assert wait_until(lambda: pub.stats.disconnects >= 1, 10)
    assert wait_until(lambda: pub.connected and pub.stats.connects >= 2, 10)
    pub.publish_sync(TOPIC, b"after-cut")
    assert wait_until(lambda: got == [b"after-cut"], 10)


def test_refuse_keeps_clients_out_until_it_ends(pair: tuple[MqttLink, list[bytes]], proxy: FaultProxy) -> None:
    pub, _ = pair
    proxy.refuse()
    proxy.cut()
    assert wait_until(lambda: proxy.stats.refused >= 1, 10)
    assert not pub.connected
    with pytest.raises(TransportError):
        pub.publish(TOPIC, b"x")
    proxy.refuse(False)
    assert wait_until(lambda: pub.connected, 10)


def test_stall_delays_bytes_but_loses_none(pair: tuple[MqttLink, list[bytes]], proxy: FaultProxy) -> None:
    pub, got = pair
    proxy.stall()
    mids = [pub.publish(TOPIC, f"m{i}".encode(), qos=1) for i in range(5)]
    assert not wait_until(lambda: bool(got), 0.5)  # nothing moves while stalled
    proxy.stall(False)
    assert all(pub.wait_published(mid, 10) for mid in mids)
    assert wait_until(lambda: len(got) == 5, 10)
    assert got == [f"m{i}".encode() for i in range(5)]
    assert pub.stats.disconnects == 0


def test_drop_black_holes_bytes_then_resets_the_desynchronised_connection(
    pair: tuple[MqttLink, list[bytes]], proxy: FaultProxy
) -> None:
    pub, got = pair
    proxy.drop()
    mid = pub.publish(TOPIC, b"into-the-void", qos=1)
    assert not pub.wait_published(mid, 0.5)
    assert wait_until(lambda: proxy.stats.bytes_dropped > 0, 5)
    assert got == []
    proxy.drop(False)
    assert proxy.stats.reset_after_drop == 1
    assert wait_until(lambda: pub.stats.connects >= 2 and pub.connected, 10)
    # paho re-sends the unacknowledged QoS 1 message on the resumed session
    assert wait_until(lambda: got == [b"into-the-void"], 10)


def test_delay_keeps_order(pair: tuple[MqttLink, list[bytes]], proxy: FaultProxy) -> None:
    pub, got = pair
    proxy.delay(0.05)
    mids = [pub.publish(TOPIC, f"d{i}".encode(), qos=1) for i in range(20)]
    assert all(pub.wait_published(mid, 10) for mid in mids)
    assert wait_until(lambda: len(got) == 20, 10)
    assert got == [f"d{i}".encode() for i in range(20)]
    assert proxy.stats.faults == {"delay": 1}
