"""A simulated operator at the triggered station, and the field rates its feedback gives.

The operator checks a random share of the parts the station inspected and tells the station what
each really was (the camera's truth), through the station's local API (``POST /feedback`` by part
id), as a person at the station screen or a re-inspection would. The field rates are then computed
from the counts the station's feedback store holds, the very cells a telemetry window carries
(:func:`edge_agent.telemetry.field.read_feedback`), by the cloud's field-rate code: so the demo
shows, beside the camera's ground truth, what the cloud learns from operator feedback alone.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud_registry.telemetry.field_rates import FieldRate, FieldTotals, measured
from edge_agent.feedback.store import FeedbackStore
from edge_agent.telemetry.field import FieldTally, read_feedback
from edgeline.core.protocol.field_window import FieldMetrics
from edgeline.demo.errors import DemoError

log = logging.getLogger(__name__)

#: the share of inspected parts the simulated operator checks
DEFAULT_SHARE = 0.25


@dataclass(frozen=True)
class OperatorRun:
    checked: int
    accepted: int
    refused: dict[str, int]


def give_feedback(
    host: str, port: int, truth_by_part: Mapping[str, str], *, share: float = DEFAULT_SHARE, seed: int = 0
) -> OperatorRun:
    """Post the truth of a random ``share`` of the parts (``part id -> camera label``) to the station."""
    if not 0.0 < share <= 1.0:
        raise DemoError(f"the operator's share of parts must be in (0, 1], got {share}")
    rng = random.Random(seed)
    parts = sorted(truth_by_part)
    chosen = [p for p in parts if rng.random() < share]
    accepted = 0
    refused: dict[str, int] = {}
    for part in chosen:
        truth = "ok" if truth_by_part[part] == "ok" else "defect"
        body = json.dumps({"part_id": part, "truth": truth, "by": "demo operator"}).encode()
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("POST", "/feedback", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            doc: dict[str, Any] = json.loads(resp.read() or b"{}")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise DemoError(f"the station's feedback API at {host}:{port} failed: {exc}") from exc
        finally:
            conn.close()
        if resp.status == 200 and doc.get("ok"):
            accepted += 1
        else:
            reason = str(doc.get("reason", resp.status))
            refused[reason] = refused.get(reason, 0) + 1
    log.info("operator checked %d parts: %d stored, refused %s", len(chosen), accepted, refused)
    return OperatorRun(len(chosen), accepted, refused)


def field_rates(feedback_db: Path, parts: int, *, min_parts: int = 10) -> tuple[FieldRate, FieldRate, int]:
    """(escape, false reject, verdicts with feedback) from the station's feedback store, as the cloud
    would compute them from the windows' counts."""
    store = FeedbackStore(feedback_db)
    try:
        counts, _ = read_feedback(store, 0)
    finally:
        store.close()
    tally = FieldTally()
    tally.add_feedback(counts)
    wire: FieldMetrics = tally.wire()
    totals = FieldTotals()
    totals.frames = parts
    for fv in wire.feedback:
        totals.add_feedback(fv.added, fv.retracted, wire.feedback_gap)
    esc, fr = measured(totals, min_parts=min_parts)
    return esc, fr, totals.feedback
