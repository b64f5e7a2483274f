"""The agent's status document: what the status file, the local API's ``/status`` and ``/metrics`` show.

Read-only over the agent's parts (counters, camera machine, queue, sinks, station, line interfaces)."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any

from edge_agent.inference import model_info
from edge_agent.status import SCHEMA

if TYPE_CHECKING:
    from edge_agent.runtime import Agent


def status_document(agent: Agent) -> dict[str, Any]:
    snap = agent.counters_.snapshot()
    dropped = dict(snap.pop("dropped"))
    if agent.queue.dropped:
        dropped["queue_full"] = agent.queue.dropped
    m = agent.reader.machine
    api_url = getattr(agent.api, "url", None)
    return {
        "schema": SCHEMA,
        "device": {
            "id": agent.device_id,
            "groups": list(agent.config.device.groups),
            "hardware_class": agent.config.device.hardware_class,
        },
        "state": agent.state.value,
        "pid": os.getpid(),
        "updated_at": time.time(),
        "camera": {
            "state": m.state.value,
            "source": agent.reader.capture.describe(),
            "frames_read": agent.reader.frames_read,
            "reconnects": m.reconnects,
            "last_error": m.last_error,
        },
        "model": model_info(agent.current_model),
        "frames": {"in": agent.reader.frames_read, "inspected": snap["inspected"], "queued": len(agent.queue)},
        "dropped": dropped,
        "verdicts": snap["verdicts"],
        "latency": snap["latency"],
        "errors": snap["errors"],
        "plugins": [getattr(p, "name", type(p).__name__) for p in agent.plugins],
        "plugin_errors": snap["plugin_errors"],
        "sinks": {s.name: s.stats() for s in agent.sinks},
        "models": {
            "activated": snap["models_activated"],
            "rejected": snap["models_rejected"],
            "last_rejection": agent.last_rejection,
        },
        "api": {"url": api_url, "requests": snap["api_requests"], **snap["api"]} if api_url else None,
        "line": _line_stats(agent),
        "remote_config": _remote_config(agent),
        "shadow": agent.shadow.stats()
        if agent.shadow is not None
        else ({"refused": agent.shadow_refused} if agent.shadow_refused else None),
        "link": _link_stats(agent),
        "heartbeat": agent.heartbeat.to_dict(agent.reader.blocked_s()),
        "uptime_s": snap["uptime_s"],
        "first_verdict_s": (
            None
            if agent._first_verdict_at is None or agent._started_at is None
            else agent._first_verdict_at - agent._started_at
        ),
    }


def _link_stats(agent: Agent) -> dict[str, Any] | None:
    """The cloud link's counters (``LinkStats``) when the plugins share one, and whether it is up."""
    from edge_agent.assembly import cloud_link_of  # the assembly imports the runtime, which imports this

    cloud = cloud_link_of(list(agent.plugins))
    if cloud is None:
        return None
    return {"connected": cloud.link.connected, **dataclasses.asdict(cloud.link.stats)}


def _line_stats(agent: Agent) -> dict[str, Any] | None:
    if agent.station is None and agent.line is None:
        return None
    out: dict[str, Any] = agent.station.stats() if agent.station is not None else {"mode": "free"}
    if agent.line is not None:
        out["interfaces"] = agent.line.stats()
    if getattr(agent, "feedback", None) is not None:
        out["feedback"] = agent.feedback.stats()
    return out


def _remote_config(agent: Agent) -> dict[str, Any] | None:
    """The remote config plugin's state (version, trial, last refusal and rollback), when it runs."""
    for p in agent.plugins:
        status = getattr(p, "status", None)
        if getattr(p, "name", "") == "remote_config" and callable(status):
            result: dict[str, Any] = status()
            return result
    return None
