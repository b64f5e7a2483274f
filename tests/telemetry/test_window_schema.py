"""The wire window: strict, bounded, and unable to carry pixels or feature vectors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edge_agent.errors import ProtocolError
from edge_agent.preprocessing import STAT_BINS
from edgeline.core.protocol.telemetry import CONF_BINS, MAX_WINDOW_BYTES, TelemetryWindow, parse_window


def body(**over: Any) -> dict[str, Any]:
    b: dict[str, Any] = {
        "schema": "edgeline.telemetry/1",
        "key": "0" * 32,
        "device": "f" * 32,
        "group": "hall-1",
        "model": {"name": "plates", "version": 3, "sha256": "b" * 64},
        "start": 1000.0,
        "end": 1060.0,
        "frames": 120,
        "class_counts": {"ok": 100, "dent": 20},
        "confidence": [0] * (CONF_BINS - 1) + [120],
        "input_stats": {"brightness": [0] * 10 + [120] + [0] * (STAT_BINS - 11)},
        "stats_frames": 120,
        "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0, "max": 4.0},
        "drift": {"brightness": {"psi": 0.01, "threshold": 0.2, "drifted": False}},
    }
    b.update(over)
    return b


def test_round_trip_is_canonical() -> None:
    w = parse_window(json.dumps(body()).encode())
    again = parse_window(w.encode())
    assert again == w
    assert w.encode() == again.encode()


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"image": "iVBORw0KGgo="}, "image"),
        ({"features": [0.1] * 512}, "features"),
        ({"confidence": [1] * (CONF_BINS + 1)}, "confidence"),
        ({"input_stats": {"brightness": [1] * (STAT_BINS + 5)}}, "input_stats"),
        ({"input_stats": {"embedding": [0] * STAT_BINS}}, "input_stats"),
        ({"confidence": [0.5] * CONF_BINS}, "confidence"),
        ({"class_counts": {"x" * 200: 1}}, "class_counts"),
        ({"class_counts": {f"c{i}": 1 for i in range(40)}}, "class_counts"),
        ({"device": "line-7-cam-2"}, "device"),
        ({"frames": -1}, "frames"),
        ({"end": 10.0}, "window"),
        ({"drift": {"pixels": {"psi": 0.1, "threshold": 0.2, "drifted": False}}}, "drift"),
    ],
)
def test_rejects_what_is_not_an_aggregate(over: dict[str, Any], field: str) -> None:
    with pytest.raises(ProtocolError, match="telemetry field"):
        parse_window(json.dumps(body(**over)).encode())


def test_rejects_oversized_truncated_and_non_json() -> None:
    raw = json.dumps(body()).encode()
    with pytest.raises(ProtocolError, match="exceeds"):
        parse_window(raw + b" " * MAX_WINDOW_BYTES)
    with pytest.raises(ProtocolError, match="not valid JSON"):
        parse_window(raw[: len(raw) // 2])
    with pytest.raises(ProtocolError, match="not valid JSON"):
        parse_window(b"\x89PNG\r\n\x1a\n" + raw)
    with pytest.raises(ProtocolError, match="JSON object"):
        parse_window(b"[1, 2, 3]")
    with pytest.raises(ProtocolError, match="not valid JSON"):
        parse_window(raw.replace(b"1060.0", b"NaN"))


def test_encode_refuses_a_window_over_the_limit() -> None:
    w = TelemetryWindow.model_validate(body(class_counts={f"{'x' * 60}{i:02d}": 1 for i in range(32)}))
    assert len(w.encode()) < MAX_WINDOW_BYTES  # the largest legal window still fits
