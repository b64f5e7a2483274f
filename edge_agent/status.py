"""The agent's status: a JSON document written atomically to a local file (read by ``edgeline agent
status``), and the same figures in the Prometheus text exposition format (``GET /metrics``).

Both are built from the dict returned by ``Agent.counters()``; the rendering here is pure.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edge_agent.counters import (
    API_ENDPOINTS,
    DROP_REASONS,
    ERROR_KINDS,
    KNOWN_VERDICTS,
    LATENCY_BUCKETS_MS,
    process_figures,
)
from edge_agent.errors import EdgeAgentError
from edge_agent.source_state import SourceState
from edgeline.core.fsutil import write_atomic

log = logging.getLogger(__name__)

SCHEMA = "edgeline.agent-status/1"
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class StatusError(EdgeAgentError):
    """The status file is missing, unreadable or not an agent status document."""


def write_status(path: Path, status: dict[str, Any]) -> None:
    write_atomic(Path(path), json.dumps(status, indent=1, sort_keys=True, default=str).encode("utf-8"))


def read_status(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError as exc:
        raise StatusError(f"no status file at {path}: is the agent running with this config?") from exc
    except OSError as exc:
        raise StatusError(f"cannot read {path}: {exc.strerror}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StatusError(f"{path} is not a JSON status document: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise StatusError(f"{path} is not an edgeline agent status document")
    return data


#: Camera states in which a live camera delivers no frames (after a loss, or never opened).
_CAMERA_DOWN = frozenset({"RECONNECTING", "FAILED"})


def health(status: dict[str, Any], has_model: bool | None = None) -> dict[str, Any]:
    """``ok`` or ``degraded``, with the reasons: no model serving, or a camera that is lost, stalled
    (the stall watchdog turns a frozen stream into a loss) or failed. A file or folder source that
    reached its end is not a fault. ``has_model`` overrides the document's ``model`` entry."""
    reasons: list[str] = []
    if not (bool(status.get("model")) if has_model is None else has_model):
        reasons.append("no model serving")
    camera = status.get("camera") or {}
    state = str(camera.get("state", ""))
    error = str(camera.get("last_error", "") or "")
    if state in _CAMERA_DOWN or (state == "CONNECTING" and error):
        reasons.append(f"camera {state.lower()}" + (f": {error}" if error else ""))
    return {"status": "degraded" if reasons else "ok", "ok": not reasons, "reasons": reasons}


def with_health(status: dict[str, Any]) -> dict[str, Any]:
    """The status document with its ``health`` section (see :func:`health`)."""
    return {**status, "health": health(status)} if status else status


def with_process(status: dict[str, Any]) -> dict[str, Any]:
    """The status document with this process's CPU and memory figures (``process``)."""
    proc = process_figures()
    return {**status, "process": proc} if status and proc else status


class StatusWriter:
    """Writes ``snapshot()`` to ``path`` every ``interval_s`` on its own thread, and once at stop."""

    def __init__(self, path: Path, snapshot: Callable[[], dict[str, Any]], interval_s: float = 2.0) -> None:
        self.path = Path(path)
        self.snapshot = snapshot
        self.interval_s = interval_s
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status", daemon=True)

    def start(self) -> None:
        self.write_once()
        self._thread.start()

    def write_once(self) -> bool:
        try:
            write_status(self.path, with_process(with_health(self.snapshot())))
            return True
        except OSError as exc:
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.warning("cannot write status file %s: %s (%d failures)", self.path, exc.strerror, self.errors)
            return False

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.write_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self.write_once()


# -- Prometheus text exposition ------------------------------------------------------------------


def _esc(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, object]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items()) + "}"


def _num(v: float) -> str:
    if isinstance(v, float) and math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if isinstance(v, float) else str(v)


class _Doc:
    def __init__(self, device: str) -> None:
        self.lines: list[str] = []
        self.device = device

    def metric(self, name: str, kind: str, help_: str, samples: Iterable[tuple[dict[str, object], float]]) -> None:
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels({'device': self.device, **labels})} {_num(value)}")


#: Every state of the agent (``edge_agent.runtime.AgentState``; a test keeps the two equal). The
#: runtime imports this module, so the names are listed here rather than imported.
AGENT_STATES: tuple[str, ...] = ("CREATED", "STARTING", "NO_MODEL", "RUNNING", "STOPPING", "STOPPED", "FAILED")
CAMERA_STATES: tuple[str, ...] = tuple(s.value for s in SourceState)


def _states(current: object, every: Iterable[str]) -> list[tuple[dict[str, object], float]]:
    """One 0/1 sample per state, so no series vanishes when the state changes (an unexpected current
    state gets its own sample)."""
    names = list(every)
    if current not in names:
        names.append(str(current))
    return [({"state": name}, 1 if name == current else 0) for name in names]


def _seeded(values: dict[str, Any], known: Iterable[str]) -> list[tuple[str, Any]]:
    """``values`` with every ``known`` key present (0 when absent), sorted."""
    out = dict.fromkeys(known, 0)
    out.update(values)
    return sorted(out.items())


def prometheus_text(status: dict[str, Any]) -> str:
    """Render a status document in the Prometheus text format (version 0.0.4). Every counter has its
    known series from 0, every state gauge one 0/1 series per state. Process figures come from the
    document (the status file) or, for this very process, are read now."""
    dev = str(status.get("device", {}).get("id", ""))
    d = _Doc(dev)
    frames = status.get("frames", {})
    d.metric("edgeline_frames_total", "counter", "Frames read from the camera source.", [({}, frames.get("in", 0))])
    d.metric("edgeline_inspected_total", "counter", "Frames that got a verdict.", [({}, frames.get("inspected", 0))])
    d.metric("edgeline_queue_frames", "gauge", "Frames waiting for inference.", [({}, frames.get("queued", 0))])
    d.metric(
        "edgeline_dropped_total",
        "counter",
        "Frames read but not inspected, by reason (queue_full, no_model, error).",
        [({"reason": k}, v) for k, v in _seeded(status.get("dropped", {}), (*DROP_REASONS, "queue_full"))],
    )
    verdicts = status.get("verdicts", {})
    by_verdict = {k: v for k, v in verdicts.get("by_verdict", {}).items() if k != "uncertain"}
    d.metric(
        "edgeline_verdicts_total",
        "counter",
        "Verdicts by outcome; each frame counted once.",
        [({"verdict": k}, v) for k, v in _seeded(by_verdict, KNOWN_VERDICTS)],
    )
    uncertain = verdicts.get("uncertain", verdicts.get("by_verdict", {}).get("uncertain", 0))
    d.metric(
        "edgeline_uncertain_verdicts_total",
        "counter",
        "Verdicts given with low confidence (routed to review); also counted in edgeline_verdicts_total.",
        [({}, uncertain)],
    )
    labels = (status.get("model") or {}).get("labels", [])
    d.metric(
        "edgeline_class_total",
        "counter",
        "Verdicts by predicted class (the serving model's classes from 0).",
        [({"label": k}, v) for k, v in _seeded(verdicts.get("by_class", {}), labels)],
    )
    sinks = status.get("sinks", {})
    d.metric(
        "edgeline_sink_errors_total",
        "counter",
        "Failed deliveries, per sink.",
        [({"sink": k}, s.get("errors", 0)) for k, s in sorted(sinks.items())],
    )
    d.metric(
        "edgeline_sink_dropped_total",
        "counter",
        "Records a full sink queue dropped, per sink.",
        [({"sink": k}, s.get("dropped", 0)) for k, s in sorted(sinks.items())],
    )
    d.metric(
        "edgeline_plugin_errors_total",
        "counter",
        "Exceptions raised by plugins (the loop went on), per plugin.",
        [({"plugin": k}, v) for k, v in _seeded(status.get("plugin_errors", {}), status.get("plugins", []))],
    )
    d.metric(
        "edgeline_errors_total",
        "counter",
        "Frames that failed preprocessing or inference, by error kind.",
        [({"kind": k}, v) for k, v in _seeded(status.get("errors", {}), ERROR_KINDS)],
    )
    models = status.get("models", {})
    d.metric(
        "edgeline_models_total",
        "counter",
        "Models activated and models rejected since start.",
        [({"result": "activated"}, models.get("activated", 0)), ({"result": "rejected"}, models.get("rejected", 0))],
    )
    _api(d, status.get("api") or {})
    _line(d, status.get("line") or {})
    _link(d, status.get("link") or {})
    _latency(d, dev, status.get("latency", {}))
    camera = status.get("camera", {})
    d.metric(
        "edgeline_camera_reconnects_total",
        "counter",
        "Times the camera source was opened again after a loss or a failed open.",
        [({}, camera.get("reconnects", 0))],
    )
    d.metric(
        "edgeline_camera_state",
        "gauge",
        "Camera source state: 1 for the current state, 0 for every other.",
        _states(camera.get("state", "IDLE"), CAMERA_STATES),
    )
    d.metric(
        "edgeline_agent_state",
        "gauge",
        "Agent state: 1 for the current state, 0 for every other.",
        _states(status.get("state", "CREATED"), AGENT_STATES),
    )
    model = status.get("model")
    d.metric("edgeline_model_loaded", "gauge", "1 while a model serves, 0 without one.", [({}, 1 if model else 0)])
    if model:
        d.metric(
            "edgeline_model_info",
            "gauge",
            "The model serving now (always 1; its identity is in the labels).",
            [({"name": model["name"], "version": model["version"], "sha256": model["sha256"]}, 1)],
        )
    d.metric(
        "edgeline_uptime_seconds", "gauge", "Seconds since the agent started.", [({}, status.get("uptime_s", 0.0))]
    )
    proc = status.get("process")
    if not proc and status.get("pid") == os.getpid():
        proc = process_figures()
    _process(d, proc or {})
    return "\n".join(d.lines) + "\n"


def _api(d: _Doc, api: dict[str, Any]) -> None:
    d.metric(
        "edgeline_api_requests_total",
        "counter",
        "Requests the local API answered, per endpoint (other: any unknown path).",
        [({"endpoint": k}, v) for k, v in _seeded(api.get("by_endpoint", {}), API_ENDPOINTS)],
    )
    d.metric(
        "edgeline_api_errors_total",
        "counter",
        "Requests the local API answered with a 4xx or 5xx status, per endpoint.",
        [({"endpoint": k}, v) for k, v in _seeded(api.get("errors_by_endpoint", {}), API_ENDPOINTS)],
    )


#: the cloud link's counters (edgeline.core.mqtt.client.LinkStats) as Prometheus counters
LINK_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("connects", "edgeline_link_connects_total", "Connections made to the fleet broker."),
    ("disconnects", "edgeline_link_disconnects_total", "Connections to the fleet broker lost or closed."),
    ("refused", "edgeline_link_refused_total", "Connection attempts the broker refused or never answered."),
    ("failovers", "edgeline_link_failovers_total", "Connections made to another broker address than the last."),
    ("received", "edgeline_link_received_total", "Messages received from the fleet broker."),
    ("handler_errors", "edgeline_link_handler_errors_total", "Received messages whose handler raised."),
    ("subscribes", "edgeline_link_subscribes_total", "SUBSCRIBE packets sent."),
    ("sub_refused", "edgeline_link_subscriptions_refused_total", "Filters a SUBACK refused."),
    ("sub_unanswered", "edgeline_link_subscriptions_unanswered_total", "Filters left without a SUBACK."),
    ("sub_retried", "edgeline_link_subscriptions_retried_total", "Filters subscribed again after a refusal."),
)


def _link(d: _Doc, link: dict[str, Any]) -> None:
    """The device's connection to the fleet broker (only when the agent has one)."""
    if not link:
        return
    d.metric(
        "edgeline_link_connected",
        "gauge",
        "1 while connected to the fleet broker.",
        [({}, int(bool(link.get("connected"))))],
    )
    for key, name, help_ in LINK_COUNTERS:
        d.metric(name, "counter", help_, [({}, link.get(key, 0))])
    if link.get("address"):
        d.metric(
            "edgeline_link_info",
            "gauge",
            "The broker of the current (or last) connection and the MQTT version spoken (always 1).",
            [({"address": link["address"], "protocol": link.get("protocol", "")}, 1)],
        )


#: the states of a triggered result (edge_agent.line.matcher.ResultState), exported from 0
TRIGGER_STATES: tuple[str, ...] = ("ok", "late", "missed", "refused", "error")
TRIGGER_ORIGINS: tuple[str, ...] = ("modbus", "opcua", "tcp", "api")


def _line(d: _Doc, line: dict[str, Any]) -> None:
    """Triggered inspection and the line interfaces (only when the agent has them)."""
    if not line:
        return
    if line.get("mode") == "trigger":
        d.metric(
            "edgeline_triggers_total",
            "counter",
            "Triggers received, per interface.",
            [({"origin": k}, v) for k, v in _seeded(line.get("triggers", {}), TRIGGER_ORIGINS)],
        )
        d.metric(
            "edgeline_trigger_results_total",
            "counter",
            "Triggered results published, by state (ok, late, missed, refused, error); one per trigger.",
            [({"state": k}, v) for k, v in _seeded(line.get("results", {}), TRIGGER_STATES)],
        )
        d.metric("edgeline_triggers_pending", "gauge", "Triggers waiting for a frame.", [({}, line.get("pending", 0))])
    interfaces = line.get("interfaces", {})
    d.metric(
        "edgeline_line_dropped_total",
        "counter",
        "Results a full line-interface queue dropped, per interface.",
        [({"interface": k}, s.get("dropped", 0)) for k, s in sorted(interfaces.items())],
    )
    d.metric(
        "edgeline_line_errors_total",
        "counter",
        "Results a line interface failed to publish, per interface.",
        [({"interface": k}, s.get("errors", 0)) for k, s in sorted(interfaces.items())],
    )


def _latency(d: _Doc, dev: str, lat: dict[str, Any]) -> None:
    bounds, counts = lat.get("buckets_ms", list(LATENCY_BUCKETS_MS)), lat.get("bucket_counts", [])
    counts = list(counts) + [0] * (len(bounds) + 1 - len(counts))
    cum, samples = 0, []
    for bound, c in zip([*bounds, math.inf], counts, strict=False):
        cum += c
        samples.append(({"le": "+Inf" if math.isinf(bound) else _num(bound / 1000.0)}, cum))
    d.lines.append("# HELP edgeline_inference_seconds Per-frame preprocessing, inference and decision time.")
    d.lines.append("# TYPE edgeline_inference_seconds histogram")
    for labels, value in samples:
        d.lines.append(f"edgeline_inference_seconds_bucket{_labels({'device': dev, **labels})} {value}")
    d.lines.append(
        f"edgeline_inference_seconds_sum{_labels({'device': dev})} {float(lat.get('sum_ms', 0.0)) / 1000.0!r}"
    )
    d.lines.append(f"edgeline_inference_seconds_count{_labels({'device': dev})} {lat.get('count', 0)}")


def _process(d: _Doc, proc: dict[str, Any]) -> None:
    """The standard process metrics (the names the Prometheus client libraries use)."""
    for name, kind, help_, key in (
        ("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", "cpu_seconds"),
        ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", "resident_memory_bytes"),
        ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", "virtual_memory_bytes"),
        ("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", "start_time"),
        ("process_open_fds", "gauge", "Number of open file descriptors.", "open_fds"),
        ("process_max_fds", "gauge", "Maximum number of open file descriptors.", "max_fds"),
    ):
        if key in proc:
            d.metric(name, kind, help_, [({}, proc[key])])
