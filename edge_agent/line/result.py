"""The fields of a triggered result, the same for every interface (sinks, TCP line, Modbus, OPC UA).

An inspected result is the verdict record of :func:`edge_agent.inference.verdict_record` plus the line's
fields; a result with no inspection behind it (missed, refused, error) has the same keys, its verdict
fields ``None``."""

from __future__ import annotations

from typing import Any

from edge_agent.line.matcher import ResultState, Trigger

Record = dict[str, Any]

#: the keys a triggered result adds to a verdict record, in this order
LINE_FIELDS: tuple[str, ...] = (
    "part_id",
    "result_id",
    "result_seq",
    "trigger_id",
    "origin",
    "state",
    "detail",
    "class_index",
    "trigger_ts",
    "frame_ts",
    "times",
)


def line_fields(
    trigger: Trigger,
    *,
    result_id: str,
    seq: int,
    state: ResultState,
    detail: str = "",
    class_index: int = -1,
    frame_ts: float | None = None,
    wait_ms: float | None = None,
    inspect_ms: float | None = None,
    total_ms: float = 0.0,
) -> Record:
    return {
        "part_id": trigger.part_id,
        "result_id": result_id,
        "result_seq": seq,
        "trigger_id": trigger.trigger_id,
        "origin": trigger.origin,
        "state": state.value,
        "detail": detail,
        "class_index": class_index,
        "trigger_ts": trigger.received if trigger.ts is None else trigger.ts,
        "frame_ts": frame_ts,
        "times": {"wait_ms": wait_ms, "inspect_ms": inspect_ms, "total_ms": total_ms},
    }


def empty_verdict(device_id: str, model: dict[str, Any] | None, ts: float) -> Record:
    """The verdict record's keys with nothing inspected (the keys of ``verdict_record``)."""
    return {
        "type": "verdict",
        "device": device_id,
        "ref": "",
        "frame_id": None,
        "verdict": None,
        "label": None,
        "confidence": None,
        "uncertain": False,
        "model": None if model is None else model["name"],
        "model_version": None if model is None else model["version"],
        "latency_ms": None,
        "ts": ts,
        "sha256": None if model is None else model["sha256"],
        "anomaly_score": None,
        "region": None,
    }


#: the verdict codes of the Modbus register and the OPC UA ``Verdict`` variable
VERDICT_CODES: dict[str | None, int] = {None: 0, "ok": 1, "defect": 2, "unknown": 3}
#: result states as codes (Modbus ``result_state``)
STATE_CODES: dict[str, int] = {"ok": 1, "late": 2, "missed": 3, "refused": 4, "error": 5}
