"""A station is addressed as ``<device>~<station>`` in one topic level (docs/stations.md). Measured
on the real servers: Mosquitto, a NATS node (MQTT over JetStream, refuses '.') and RabbitMQ's MQTT
plugin (maps '/' and '.') all accept the '~' level, deliver it live to the ``devices/+/...`` wildcard
the cloud subscribes to, answer an exact retained read of it, and keep it apart from the device's
own (station-less) topic."""

from __future__ import annotations

import itertools

import pytest

from edgeline.core.mqtt_link import LinkSettings, MqttLink, wait_until
from edgeline.core.protocol.topics import Topics, station_unit
from edgeline.demo.broker import MosquittoBroker
from tests.brokers.servers import NatsCluster, RabbitNode

pytestmark = pytest.mark.broker
_names = itertools.count()


def _link(port: int) -> MqttLink:
    link = MqttLink(
        LinkSettings(port=port, client_id=f"station-addr-{next(_names)}", protocol="3.1.1", clean_start=True)
    )
    link.connect(20)
    return link


@pytest.fixture(params=["mosquitto", "nats", "rabbitmq"])
def broker_port(request: pytest.FixtureRequest, tmp_path: object) -> object:
    if request.param == "mosquitto":
        broker = MosquittoBroker(tmp_path / "mosquitto")  # type: ignore[operator]
        broker.start()
        try:
            yield broker.port
        finally:
            broker.stop()
    elif request.param == "nats":
        node: NatsCluster = request.getfixturevalue("nats")
        yield node.addresses[0][1]
    else:
        rabbit: RabbitNode = request.getfixturevalue("rabbit")
        yield rabbit.mqtt_port


def test_a_station_address_travels_on_every_broker(broker_port: int) -> None:
    topics = Topics(fleet="stationaddr")
    unit = station_unit("press-7", "left_cam")
    pub, sub = _link(broker_port), _link(broker_port)
    try:
        live: list[tuple[str, bytes]] = []
        sub.subscribe(topics.all_device_states(), lambda t, p, _r: live.append((t, p)), 1)

        def published_and_seen() -> bool:  # RabbitMQ may take a moment to route a new subscription
            if len(live) < 2:
                live.clear()
                pub.publish(topics.device_state(unit), b"station", qos=1)
                pub.publish(topics.device_state("press-7"), b"device", qos=1)
            return len(live) >= 2

        assert wait_until(published_and_seen, 15, 0.3), live
        by_unit = {topics.device_id_from(t): p for t, p in live}
        assert by_unit == {unit: b"station", "press-7": b"device"}
        pub.publish(topics.device_state(unit), b"station", qos=1, retain=True)
        pub.publish(topics.device_state("press-7"), b"device", qos=1, retain=True)
        exact: list[bytes] = []
        reader = _link(broker_port)
        try:
            reader.subscribe(topics.device_state(unit), lambda _t, p, _r: exact.append(p), 1)
            assert wait_until(lambda: exact == [b"station"], 15, 0.02), exact
        finally:
            reader.stop()
        for t in (topics.device_state(unit), topics.device_state("press-7")):
            pub.publish(t, b"", qos=1, retain=True)
    finally:
        pub.stop()
        sub.stop()
