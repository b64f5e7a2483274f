"""Verdict sinks: where the line gets its verdicts (JSONL log, local MQTT topic, webhook, command hook).

:func:`build_sinks` turns the ``[sinks]`` section of a device config into running
:class:`~edge_agent.sinks.base.SinkWorker` s, one thread and one bounded queue each.
"""

from __future__ import annotations

from edge_agent.errors import EdgelineError
from edge_agent.secret_file import read_secret
from edge_agent.sinks.base import Record, Sink, SinkError, SinkWorker, encode, wanted
from edge_agent.sinks.command import CommandSink
from edge_agent.sinks.jsonl import JsonlSink
from edge_agent.sinks.mqtt import MqttSink
from edge_agent.sinks.webhook import WebhookSink
from edgeline.core.mqtt_link import LinkSettings
from firmware_configs.schema import SinksSection

__all__ = [
    "CommandSink",
    "JsonlSink",
    "MqttSink",
    "Record",
    "Sink",
    "SinkError",
    "SinkWorker",
    "WebhookSink",
    "build_sinks",
    "encode",
    "wanted",
]


#: the JSONL log is written in batches at most this late (the line's live sinks are immediate)
JSONL_LINGER_S = 0.05


def build_sinks(section: SinksSection, device_id: str) -> list[SinkWorker]:
    """Sink workers for the enabled sinks (not started)."""
    workers: list[SinkWorker] = []
    try:
        if section.jsonl is not None and section.jsonl.enabled:
            c = section.jsonl
            sink: Sink = JsonlSink(c.path, max_bytes=c.max_bytes, backups=c.backups, fsync=c.fsync)
            workers.append(
                SinkWorker(sink, queue_size=c.queue_size, include=c.include, events=c.events, linger_s=JSONL_LINGER_S)
            )
        if section.mqtt is not None and section.mqtt.enabled:
            m = section.mqtt
            settings = LinkSettings(
                host=m.host,
                port=m.port,
                client_id=f"edgeline-line-{device_id}",
                username=m.username,
                password=read_secret(m.password_file, "sinks.mqtt.password_file", SinkError),
                protocol=m.protocol,
                clean_start=True,
                reconnect_max_s=5.0,
            )
            sink = MqttSink(settings, device_id, prefix=m.topic_prefix, qos=m.qos, connect_wait_s=m.connect_wait_s)
            workers.append(SinkWorker(sink, queue_size=m.queue_size, include=m.include, events=m.events))
        if section.webhook is not None and section.webhook.enabled:
            w = section.webhook
            sink = WebhookSink(w.url, timeout_s=w.timeout_s, headers=dict(w.headers))
            workers.append(SinkWorker(sink, queue_size=w.queue_size, include=w.include, events=w.events))
        if section.command is not None and section.command.enabled:
            c2 = section.command
            sink = CommandSink(c2.argv, mode=c2.mode, timeout_s=c2.timeout_s)
            workers.append(SinkWorker(sink, queue_size=c2.queue_size, include=c2.include, events=c2.events))
    except EdgelineError:
        for w2 in workers:
            w2.close(0.1)
        raise
    return workers
