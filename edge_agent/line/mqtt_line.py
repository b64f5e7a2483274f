"""Triggers and results on the LINE's local MQTT broker (``[line.mqtt]``), never the cloud broker.

The line's controller (a PLC with an MQTT client, a Node-RED flow, a MES adapter) publishes a JSON
trigger on ``<prefix>/<device>/trigger`` (``{"part_id": "A-1042", "ts": 1764750000.1}``, every field
optional; :mod:`edge_agent.line.trigger_request`), and receives each triggered result, the same
record as every other interface gets, on ``<prefix>/<device>/results``. A malformed trigger is
counted and logged (the first, then every 100th), never passed to the station.

With ``[feedback]`` enabled, a feedback on ``<prefix>/<device>/feedback`` (``{"result_id" | "part_id",
"truth", "by", "ref"}``, :mod:`edge_agent.feedback.rules`) is stored on a worker thread of its own (a
commit waits for the disk; paho's network thread, which carries the triggers, never does) and answered
on ``<prefix>/<device>/feedback/answers`` (the answer of ``POST /feedback``, with the caller's ``ref``).
Retained, malformed and oversized feedback is refused and counted (an empty message, which clears a
retained one, is ignored); more than :data:`MAX_FEEDBACK_PENDING`
waiting at once is refused as ``busy``."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from edge_agent.feedback.rules import MAX_REQUEST_BYTES, FeedbackError, FeedbackRequest, parse_request
from edge_agent.line.result import Record
from edge_agent.line.trigger_request import TriggerRequestError, parse_trigger
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.topics import (
    line_feedback_answer_topic,
    line_feedback_topic,
    line_result_topic,
    line_trigger_topic,
)
from firmware_configs.line_section import MqttLineSection

log = logging.getLogger(__name__)

#: submit(part_id, ts, origin) -> the trigger, or None in free-run mode
Submit = Callable[[str, float | None, str], Any]
#: the largest trigger message taken
MAX_TRIGGER_BYTES = 4096
#: feedback waiting for the store at once; more is refused (``busy``)
MAX_FEEDBACK_PENDING = 64


class MqttLineServer:
    name = "mqtt"

    def __init__(
        self, section: MqttLineSection, device_id: str, submit: Submit, password: str | None, feedback: Any = None
    ) -> None:
        self.section = section
        self.trigger_topic = line_trigger_topic(device_id, section.topic_prefix)
        self.result_topic = line_result_topic(device_id, section.topic_prefix)
        self.feedback_topic = line_feedback_topic(device_id, section.topic_prefix)
        self.answer_topic = line_feedback_answer_topic(device_id, section.topic_prefix)
        self._submit = submit
        #: the agent's :class:`~edge_agent.feedback.service.FeedbackService` (None: not enabled)
        self._feedback = feedback
        self._pool: ThreadPoolExecutor | None = None
        self._pending = 0
        self._pending_lock = threading.Lock()
        self.link = MqttLink(
            LinkSettings(
                host=section.host,
                port=section.port,
                client_id=f"edgeline-line-trigger-{device_id}",
                username=section.username,
                password=password,
                protocol=section.protocol,
                clean_start=True,
                reconnect_max_s=5.0,
            )
        )
        self.triggers = 0
        self.bad_requests = 0
        self.published = 0
        self.publish_errors = 0

    def start(self) -> None:
        """Connects in the background and keeps reconnecting (the broker may start after the agent);
        the subscription is renewed at every connect."""
        self.link.subscribe(self.trigger_topic, self._on_trigger, qos=1)
        if self._feedback is not None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="line-mqtt-feedback")
            self.link.subscribe(self.feedback_topic, self._on_feedback, qos=1)
        self.link.start()

    def _on_trigger(self, topic: str, payload: bytes, retained: bool) -> None:
        if retained:  # a trigger left on the broker from another run is not a part arriving now
            self._bad(f"ignored a retained trigger on {topic}")
            return
        if len(payload) > MAX_TRIGGER_BYTES:
            self._bad(f"a trigger of {len(payload)} bytes (at most {MAX_TRIGGER_BYTES})")
            return
        try:
            req = parse_trigger(payload, allow_wait=False)
        except TriggerRequestError as exc:
            self._bad(str(exc))
            return
        if self._submit(req.part_id, req.ts, "mqtt") is None:
            self._bad('a trigger while the source runs free (triggers need [source] mode = "trigger")')
            return
        self.triggers += 1

    # -- feedback (paho's thread hands it to the worker) --------------------------------------------
    def _on_feedback(self, topic: str, payload: bytes, retained: bool) -> None:
        service, pool = self._feedback, self._pool
        assert service is not None and pool is not None
        if not payload:
            return  # how a retained message is cleared: nothing asked
        try:
            if retained:  # left on the broker by another run: nobody is waiting for its answer now
                raise FeedbackError(f"a retained feedback on {topic}")
            if len(payload) > MAX_REQUEST_BYTES:
                raise FeedbackError(
                    f"a feedback of {len(payload)} bytes (at most {MAX_REQUEST_BYTES})", reason="too_large"
                )
            req = parse_request(payload)
        except FeedbackError as exc:
            self._answer(service.refuse("mqtt", exc).doc(), "")
            return
        with self._pending_lock:
            busy = self._pending >= MAX_FEEDBACK_PENDING
            if not busy:
                self._pending += 1
        if busy:
            self._answer(
                service.refuse("mqtt", FeedbackError("too many feedbacks waiting", reason="busy")).doc(), req.ref
            )
            return
        pool.submit(self._store, req)

    def _store(self, req: FeedbackRequest) -> None:
        try:
            assert self._feedback is not None
            self._answer(self._feedback.submit(req, "mqtt").doc(), req.ref)
        finally:
            with self._pending_lock:
                self._pending -= 1

    def _answer(self, doc: dict[str, Any], ref: str) -> None:
        if ref:
            doc["ref"] = ref
        try:
            self.link.publish(self.answer_topic, json.dumps(doc, sort_keys=True), qos=1)
        except Exception as exc:  # the broker went away: the feedback is stored (or refused) all the same
            log.debug("line mqtt: a feedback answer was not sent: %s", exc)

    def _bad(self, why: str) -> None:
        self.bad_requests += 1
        if self.bad_requests == 1 or self.bad_requests % 100 == 0:
            log.warning("line mqtt: %s (%d refused so far)", why, self.bad_requests)

    # -- the outlet side (the bus's worker thread) ---------------------------------------------------
    def write(self, record: Record) -> None:
        if record.get("type") != "verdict" or "trigger_id" not in record:
            return  # free-run verdicts and events are the sinks' business
        try:
            self.link.publish(self.result_topic, json.dumps(record, default=str), qos=self.section.qos)
            self.published += 1
        except Exception:
            self.publish_errors += 1
            raise

    def stats(self) -> dict[str, Any]:
        return {
            "connected": self.link.connected,
            "triggers": self.triggers,
            "bad_requests": self.bad_requests,
            "published": self.published,
            "publish_errors": self.publish_errors,
        }

    def stop(self) -> None:
        self.link.stop()
        if self._pool is not None:  # the feedback taken is stored before the store closes
            self._pool.shutdown(wait=True)

    def close(self) -> None:
        """The outlet's close; the link stops with :meth:`stop`."""
