"""Triggers and results on the line's local MQTT broker (``[line.mqtt]``): a real Mosquitto, the paho
client as the line's controller, a real agent in trigger mode."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge_agent.runtime import Agent
from edgeline.demo.broker import MosquittoBroker
from tests.agent.helpers import read_jsonl, wait_for
from tests.line.conftest import MakeAgent

TRIGGER = "line/dev-1/trigger"
RESULTS = "line/dev-1/results"


class Controller:
    """The line's controller: publishes triggers, collects results."""

    def __init__(self, port: int) -> None:
        self.results: queue.Queue[dict[str, Any]] = queue.Queue()
        self.ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="plc")
        self.c.on_connect = lambda c, *_: c.subscribe(RESULTS, qos=1)
        self.c.on_subscribe = lambda *_: self.ready.set()
        self.c.on_message = lambda _c, _u, m: self.results.put(json.loads(m.payload))
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.ready.wait(5.0)

    def send(self, payload: bytes | str, retain: bool = False) -> None:
        self.c.publish(TRIGGER, payload, qos=1, retain=retain).wait_for_publish(5.0)

    def take(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        return [self.results.get(timeout=timeout) for _ in range(n)]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def plc(mosquitto: MosquittoBroker) -> Iterator[Controller]:
    c = Controller(mosquitto.port)
    yield c
    c.close()


def _agent(make_agent: MakeAgent, port: int) -> Agent:
    agent = make_agent({"mqtt": {"port": port}})
    assert wait_for(lambda: agent.line.by_name("mqtt").link.connected, 10.0)
    time.sleep(0.3)  # the agent subscribes right after its CONNACK
    return agent


def test_triggers_on_the_local_broker_give_one_result_each(
    make_agent: MakeAgent, mosquitto: MosquittoBroker, plc: Controller, tmp_path: Any
) -> None:
    agent = _agent(make_agent, mosquitto.port)
    for i in range(20):
        plc.send(json.dumps({"part_id": f"M-{i}"}))
    got = plc.take(20)
    assert sorted(r["part_id"] for r in got) == sorted(f"M-{i}" for i in range(20))
    assert all(r["origin"] == "mqtt" and r["state"] == "ok" and r["verdict"] in ("ok", "defect") for r in got)
    plc.send(b"")  # an empty trigger: a part id is assigned
    (assigned,) = plc.take(1)
    assert assigned["part_id"].startswith("part-")
    assert agent.sinks[0].wait_idle(5.0)
    sunk = {r["result_id"] for r in read_jsonl(tmp_path / "verdicts.jsonl") if r.get("origin") == "mqtt"}
    assert sunk == {r["result_id"] for r in [*got, assigned]}
    stats = agent.counters()["line"]["interfaces"]["mqtt"]
    assert stats["triggers"] == 21 and stats["published"] == 21 and stats["bad_requests"] == 0


def test_bad_triggers_are_counted_and_never_reach_the_station(
    make_agent: MakeAgent, mosquitto: MosquittoBroker, plc: Controller
) -> None:
    agent = _agent(make_agent, mosquitto.port)
    for bad in [b"{not json", b"[1]", b'{"part_id": "a b"}', b'{"wait_ms": 100}', b'{"ts": "now"}', b"x" * 5000]:
        plc.send(bad)
    plc.send(json.dumps({"part_id": "OK-1"}))
    (r,) = plc.take(1)
    assert r["part_id"] == "OK-1"
    stats = agent.counters()["line"]["interfaces"]["mqtt"]
    assert stats["bad_requests"] == 6 and stats["triggers"] == 1
    assert agent.counters()["line"]["triggers"] == {"mqtt": 1}
    with pytest.raises(queue.Empty):
        plc.results.get(timeout=0.5)  # nothing else was inspected


def test_a_retained_trigger_is_not_a_part_arriving_now(make_agent: MakeAgent, mosquitto: MosquittoBroker) -> None:
    plc = Controller(mosquitto.port)
    try:
        plc.send(json.dumps({"part_id": "STALE"}), retain=True)  # left on the broker before the agent starts
        agent = _agent(make_agent, mosquitto.port)
        assert wait_for(lambda: agent.counters()["line"]["interfaces"]["mqtt"]["bad_requests"] == 1, 5.0)
        with pytest.raises(queue.Empty):
            plc.results.get(timeout=0.5)
    finally:
        plc.close()


def test_the_agent_reaches_a_broker_that_starts_later(make_agent: MakeAgent, mosquitto: MosquittoBroker) -> None:
    mosquitto.stop()
    agent = make_agent({"mqtt": {"port": mosquitto.port}})  # starts and inspects with the broker down
    assert not agent.line.by_name("mqtt").link.connected
    mosquitto.start()
    assert wait_for(lambda: agent.line.by_name("mqtt").link.connected, 15.0)
    plc = Controller(mosquitto.port)
    try:
        time.sleep(0.3)  # the agent subscribes right after its CONNACK
        plc.send(json.dumps({"part_id": "LATE-BROKER"}))
        (r,) = plc.take(1)
        assert r["part_id"] == "LATE-BROKER" and r["state"] == "ok"
    finally:
        plc.close()


@pytest.mark.parametrize(
    ("section", "word"),
    [({"topic_prefix": "line.b"}, "topic_prefix"), ({"port": 0}, "port"), ({"qos": 2}, "qos"), ({"bogus": 1}, "bogus")],
)
def test_bad_line_mqtt_sections_are_refused(section: dict[str, Any], word: str) -> None:
    from firmware_configs.errors import ConfigError
    from firmware_configs.loader import parse_config

    doc = {"device": {"id": "d"}, "source": {"kind": "folder", "path": "/tmp"}, "line": {"mqtt": section}}
    with pytest.raises(ConfigError, match=word):
        parse_config(doc, "test")
