"""Feedback over the line's local MQTT broker: a real Mosquitto, the paho client as a downstream check
(a re-inspection station answering the results topic), a real agent in trigger mode. Stored once,
answered with the caller's ref, retained and malformed feedback refused, and the channel back after a
broker outage."""

from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt

from edge_agent.runtime import Agent
from edgeline.demo.broker import MosquittoBroker
from tests.agent.helpers import wait_for
from tests.feedback.conftest import FeedbackAgent, triggered

FEEDBACK = "line/dev-1/feedback"
ANSWERS = "line/dev-1/feedback/answers"
RESULTS = "line/dev-1/results"


class Checker:
    """A downstream check: reads results, publishes feedback, collects the answers."""

    def __init__(self, port: int) -> None:
        self.answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self.results: queue.Queue[dict[str, Any]] = queue.Queue()
        self.ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="eol-test")
        self.c.on_connect = lambda c, *_: c.subscribe([(ANSWERS, 1), (RESULTS, 1)])
        self.c.on_subscribe = lambda *_: self.ready.set()
        self.c.on_message = lambda _c, _u, m: (self.answers if m.topic == ANSWERS else self.results).put(
            json.loads(m.payload)
        )
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.ready.wait(5.0)

    def send(self, payload: bytes | str | dict[str, Any], retain: bool = False) -> None:
        data = json.dumps(payload) if isinstance(payload, dict) else payload
        self.c.publish(FEEDBACK, data, qos=1, retain=retain).wait_for_publish(5.0)

    def answer(self) -> dict[str, Any]:
        return self.answers.get(timeout=10.0)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def _agent(feedback_agent: FeedbackAgent, port: int) -> Agent:
    agent = feedback_agent({"mqtt": {"port": port}})
    assert wait_for(lambda: agent.line.by_name("mqtt").link.connected, 10.0)
    time.sleep(0.3)  # the agent subscribes right after its CONNACK
    return agent


def test_feedback_on_the_local_broker_is_stored_once_and_answered(
    feedback_agent: FeedbackAgent, mosquitto: MosquittoBroker
) -> None:
    check = Checker(mosquitto.port)
    # a feedback left on the broker before the agent subscribed is not one anybody waits for now
    check.send({"result_id": "dev-1-0-1", "truth": "ok", "ref": "stale"}, retain=True)
    agent = _agent(feedback_agent, mosquitto.port)
    try:
        stale = check.answer()
        assert not stale["ok"] and "retained" in stale["error"] and "ref" not in stale
        check.c.publish(FEEDBACK, b"", qos=1, retain=True).wait_for_publish(5.0)  # clear it
        # a downstream check answers each result as soon as it sees it
        for i in range(5):
            agent.trigger(f"M-{i}", None, "mqtt-test")
        seen = [check.results.get(timeout=10.0) for _ in range(5)]
        for r in seen:
            check.send({"result_id": r["result_id"], "truth": "defect", "by": "eol-tester", "ref": f"q-{r['part_id']}"})
        answers = [check.answer() for _ in range(5)]
        assert all(a["ok"] and a["truth"] == "defect" and a["replaced"] == 0 for a in answers), answers
        assert {a["ref"] for a in answers} == {f"q-M-{i}" for i in range(5)}
        check.send({"part_id": "M-0", "truth": "ok", "ref": "again"})
        again = check.answer()
        assert again["ok"] and again["replaced"] == 1 and again["previous"] == "defect" and again["ref"] == "again"
        for bad, reason in (
            (b"{oops", "bad_request"),
            ({"result_id": "dev-1-0-1234", "truth": "ok"}, "unknown_result"),
            ({"result_id": seen[1]["result_id"], "truth": "ok", "by": "eve\r\nforged"}, "bad_by"),
            (b"{" + b" " * 5000 + b"}", "too_large"),
        ):
            check.send(bad)
            got = check.answer()
            assert not got["ok"] and got["reason"] == reason, (bad, got)
    finally:
        check.close()
    rows = {x["part_id"]: x for x in agent.feedback.store.feedback_rows()}
    assert len(rows) == 5 and all(x["source"] == "mqtt" for x in rows.values())
    assert rows["M-0"]["truth"] == "ok" and rows["M-0"]["replaced"] == 1 and rows["M-2"]["truth"] == "defect"
    fb = agent.counters()["line"]["feedback"]
    assert fb["accepted"] == {"mqtt": 6} and sum(fb["refused"].values()) >= 5


def test_feedback_comes_back_after_a_broker_outage(feedback_agent: FeedbackAgent, mosquitto: MosquittoBroker) -> None:
    agent = _agent(feedback_agent, mosquitto.port)
    r = triggered(agent, "O-1")
    mosquitto.stop()
    assert wait_for(lambda: not agent.line.by_name("mqtt").link.connected, 10.0)
    r2 = triggered(agent, "O-2")  # inspection and the index go on without the broker
    mosquitto.start()
    assert wait_for(lambda: agent.line.by_name("mqtt").link.connected, 15.0)
    time.sleep(0.3)
    check = Checker(mosquitto.port)
    try:
        check.send({"result_id": r["result_id"], "truth": "ok"})
        check.send({"result_id": r2["result_id"], "truth": "defect"})
        assert [check.answer()["ok"], check.answer()["ok"]] == [True, True]
    finally:
        check.close()
    assert len(agent.feedback.store.feedback_rows()) == 2
