"""Triggers and results on the LINE's local MQTT broker (``[line.mqtt]``), never the cloud broker.

The line's controller (a PLC with an MQTT client, a Node-RED flow, a MES adapter) publishes a JSON
trigger on ``<prefix>/<device>/trigger`` (``{"part_id": "A-1042", "ts": 1764750000.1}``, every field
optional; :mod:`edge_agent.line.trigger_request`), and receives each triggered result, the same
record as every other interface gets, on ``<prefix>/<device>/results``. A malformed trigger is
counted and logged (the first, then every 100th), never passed to the station."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from edge_agent.line.result import Record
from edge_agent.line.trigger_request import TriggerRequestError, parse_trigger
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.topics import line_result_topic, line_trigger_topic
from firmware_configs.line_section import MqttLineSection

log = logging.getLogger(__name__)

#: submit(part_id, ts, origin) -> the trigger, or None in free-run mode
Submit = Callable[[str, float | None, str], Any]
#: the largest trigger message taken
MAX_TRIGGER_BYTES = 4096


class MqttLineServer:
    name = "mqtt"

    def __init__(self, section: MqttLineSection, device_id: str, submit: Submit, password: str | None) -> None:
        self.section = section
        self.trigger_topic = line_trigger_topic(device_id, section.topic_prefix)
        self.result_topic = line_result_topic(device_id, section.topic_prefix)
        self._submit = submit
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

    def close(self) -> None:
        """The outlet's close; the link stops with :meth:`stop`."""
