"""Scoring of the triggered scenario (pure): what the PLC read, what the station's sink wrote, and what
the camera showed, per part.

A part's truth comes from the camera's ground-truth log through the frame the station inspected for it
(the result's ``ref``), exactly as the main story scores free-run verdicts. Escape = a defective part
the PLC was told ``ok``; false reject = a good part told ``defect`` or ``unknown`` (``unknown`` goes to
review, not the good bin, so it counts against the good parts); 95% Clopper-Pearson intervals.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from converters.operating_point import clopper_pearson
from edgeline.demo.plc import PlcRead
from edgeline.demo.scoring import TruthRow, score_device

STATION = "station-1"


def _rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = clopper_pearson(k, n) if n else (0.0, 1.0)
    return {"count": k, "of": n, "rate": k / n if n else None, "ci95": [lo, hi]}


def _quantiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    s = sorted(values)
    return {
        "p50": statistics.median(s),
        "p99": s[min(len(s) - 1, int(0.99 * len(s)))],
        "max": s[-1],
    }


def truth_of(records: Iterable[dict[str, Any]], truth: dict[int, list[TruthRow]]) -> dict[str, str]:
    """part id -> the camera's label of the frame the station inspected for it."""
    out: dict[str, str] = {}
    for r in records:
        if r.get("type") != "verdict" or not r.get("part_id") or r.get("verdict") is None:
            continue
        scored, _ = score_device(STATION, [r], truth, (0.0, 1.0))
        if scored:
            out[str(r["part_id"])] = scored[0].truth
    return out


def score_parts(
    reads: Sequence[PlcRead], records: Sequence[dict[str, Any]], truth: dict[int, list[TruthRow]]
) -> dict[str, Any]:
    """The scenario's figures; ``ok`` when every part got one result, on Modbus and in the sink alike,
    and every inspected part could be matched to the camera's truth."""
    by_part = {str(r["part_id"]): r for r in records if r.get("type") == "verdict" and r.get("part_id")}
    labels = truth_of(records, truth)
    agree = sum(1 for p in reads if p.part_id in by_part and by_part[p.part_id].get("verdict") == p.verdict_or_none)
    inspected = [p for p in reads if p.verdict in ("ok", "defect", "unknown")]
    good = [p for p in inspected if labels.get(p.part_id) == "ok"]
    bad = [p for p in inspected if p.part_id in labels and labels[p.part_id] != "ok"]
    unmatched = [p.part for p in inspected if p.part_id not in labels]
    times = [r.get("times") or {} for r in by_part.values()]
    inspect_ms = [float(t["inspect_ms"]) for t in times if t.get("inspect_ms") is not None]
    wait_ms = [float(t["wait_ms"]) for t in times if t.get("wait_ms") is not None]
    missing_in_sink = [p.part for p in reads if p.part_id not in by_part]
    summary = {
        "parts": len(reads),
        "plc_states": dict(Counter(p.state for p in reads)),
        "plc_verdicts": dict(Counter(p.verdict for p in reads)),
        "sink_results": len(by_part),
        "missing_in_sink": missing_in_sink[:20],
        "modbus_equals_sink": {"count": agree, "of": len(reads)},
        "unmatched_to_truth": unmatched[:20],
        "truth": {"good": len(good), "defective": len(bad), "kinds": dict(Counter(labels[p.part_id] for p in bad))},
        "escape": _rate(sum(1 for p in bad if p.verdict == "ok"), len(bad)),
        "false_reject": _rate(sum(1 for p in good if p.verdict != "ok"), len(good)),
        "trigger_to_modbus_ms": _quantiles([p.latency_ms for p in reads if p.latency_ms is not None]),
        "inspect_ms": _quantiles(inspect_ms),
        #: the trigger's wait for the camera's next frame (at most one frame interval)
        "frame_wait_ms": _quantiles(wait_ms),
    }
    summary["ok"] = bool(
        reads
        and all(p.state in ("ok", "late") for p in reads)
        and agree == len(reads)
        and not missing_in_sink
        and not unmatched
    )
    return summary
