"""The report's field-rates section: per line and model version, escape and false reject from the
camera's ground truth beside the cloud's field rates from the simulated operator's feedback."""

from __future__ import annotations

from typing import Any

from edgeline.demo.field_view import field_text, pct
from edgeline.demo.report.widgets import esc, table


def field_rates(s: dict[str, Any]) -> str:
    block = s.get("field") or {}
    title = "Field rates: camera truth and operator feedback"
    if not block.get("rows"):
        body = '<p class="note">No field rates: the run stopped before the lines had verdicts.</p>'
        return f'<section id="field"><h2>{esc(title)}</h2>{body}</section>'
    shares = ", ".join(
        f"{d} {100 * float(o['share']):.0f}% ({o['stored']} parts)" for d, o in sorted(block["operator"].items())
    )
    lead = (
        "A simulated operator checked a seeded share of each line's parts and told the line's agent what "
        f"they were, through its local API (POST /feedback by result id): {esc(shares)}. The feedback went "
        "into the telemetry windows as counts only; the cloud's field rates below come from those counts "
        f"alone ({block['feedback_arrived']} of {block['feedback_given']} feedbacks arrived), beside the "
        "camera's ground truth for every verdict. Below "
        f"{esc(block.get('min_parts'))} parts with feedback the cloud says it cannot tell."
    )
    rows = []
    for r in block["rows"]:
        f = r["field"] or {}
        rows.append(
            [
                r["device"],
                f"v{r['version']}",
                r["frames_scored"],
                f"{r['feedback_arrived']}" + ("" if r["counts_match"] else f" of {r['feedback_given']} given"),
                pct(r["camera"]["escape"]),
                field_text(f.get("escape")),
                pct(r["camera"]["false_reject"]),
                field_text(f.get("false_reject")),
            ]
        )
    head = [
        "line",
        "model",
        "verdicts",
        "with feedback",
        "escape: camera truth",
        "escape: from feedback",
        "false reject: camera truth",
        "false reject: from feedback",
    ]
    return f'<section id="field"><h2>{esc(title)}</h2><p class="lead">{lead}</p>{table(head, rows, (2, 3))}</section>'
