"""The lines' escape and false-reject rates two ways, side by side (pure: no I/O).

* **camera truth**: every verdict of a line and model version scored against the camera simulator's
  ground truth (:mod:`edgeline.demo.scoring`): what really happened;
* **operator feedback**: the cloud's field rates (:mod:`cloud_registry.telemetry.field_report`, read
  from the telemetry store the ingest filled) from the feedback counts the windows carried, for the
  parts the simulated operator (:mod:`edgeline.demo.line_operator`) checked: what the cloud can know
  without a camera's truth, with its 95% intervals or "too little feedback to tell".

Escape = defective parts passed (verdict ``ok``) / defective parts; false reject = good parts told
``defect`` or ``unknown`` / good parts (docs/decisions.md). A row also says whether the feedback the
operator gave reached the cloud in full (the counts per side and truth are compared cell by cell).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from converters.operating_point import clopper_pearson
from edgeline.demo.line_operator import LineTally
from edgeline.demo.scoring import Scored

#: the operator's (truth, verdict) pairs -> the field report's count cells
CELLS: dict[tuple[str, str], str] = {
    ("ok", "ok"): "pass_ok",
    ("defect", "ok"): "pass_defect",
    ("ok", "defect"): "reject_ok",
    ("defect", "defect"): "reject_defect",
    ("ok", "unknown"): "unknown_ok",
    ("defect", "unknown"): "unknown_defect",
}


def truth_rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = clopper_pearson(k, n) if n else (0.0, 1.0)
    return {"events": k, "n": n, "value": k / n if n else None, "low": lo, "high": hi}


def camera_rates(frames: Sequence[Scored]) -> dict[str, dict[str, Any]]:
    """Escape and false reject of ``frames`` by the camera's truth."""
    bad = [f for f in frames if f.truth != "ok"]
    good = [f for f in frames if f.truth == "ok"]
    return {
        "escape": truth_rate(sum(1 for f in bad if f.verdict == "ok"), len(bad)),
        "false_reject": truth_rate(sum(1 for f in good if f.verdict in ("defect", "unknown")), len(good)),
    }


def given_counts(said: Counter[tuple[str, str]] | None) -> dict[str, int]:
    out = dict.fromkeys(CELLS.values(), 0)
    for pair, n in (said or Counter()).items():
        if pair in CELLS:
            out[CELLS[pair]] += n
    return out


def field_block(
    report: Mapping[str, Any],
    frames: Sequence[Scored],
    tallies: Mapping[str, LineTally],
    line_of: Mapping[str, str],
) -> dict[str, Any]:
    """Per line and model version: the camera's figures beside the cloud's from operator feedback.
    ``report``: the field report (``FieldReport.to_dict()``) with ``line`` rows; ``line_of``: the
    report's line value (a pseudonym's first 12 digits) -> the device id."""
    rows_by_key = {
        (line_of.get(str(r["value"]), str(r["value"])), int(r["version"])): r
        for r in report.get("rows", [])
        if r.get("scope") == "line"
    }
    versions: dict[str, set[int]] = {}
    for f in frames:
        versions.setdefault(f.device, set()).add(f.version)
    for device, version in rows_by_key:
        versions.setdefault(device, set()).add(version)
    out: list[dict[str, Any]] = []
    for device in sorted(versions):
        tally = tallies.get(device)
        for version in sorted(versions[device]):
            mine = [f for f in frames if f.device == device and f.version == version]
            row = rows_by_key.get((device, version))
            given = given_counts(tally.said.get(version) if tally is not None else None)
            arrived = row["counts"] if row is not None else dict.fromkeys(CELLS.values(), 0)
            out.append(
                {
                    "device": device,
                    "version": version,
                    "share": tally.share if tally is not None else None,
                    "frames_scored": len(mine),
                    "camera": camera_rates(mine),
                    "feedback_given": sum(given.values()),
                    "feedback_arrived": int(row["feedback"]) if row is not None else 0,
                    "counts_given": given,
                    "counts_arrived": {k: int(arrived.get(k, 0)) for k in CELLS.values()},
                    "counts_match": all(int(arrived.get(k, 0)) == v for k, v in given.items()),
                    "field": None
                    if row is None
                    else {"escape": row["escape"], "false_reject": row["false_reject"], "frames": row["frames"]},
                }
            )
    given_all = sum(r["feedback_given"] for r in out)
    arrived_all = sum(r["feedback_arrived"] for r in out)
    return {
        "what": "escape and false reject per line and model version: from the camera's ground truth, and "
        "from operator feedback alone (the cloud's field rates, telemetry counts only)",
        "min_parts": report.get("min_parts"),
        "escape_limit": report.get("escape_limit"),
        "false_reject_limit": report.get("false_reject_limit"),
        "operator": {d: t.to_dict() for d, t in sorted(tallies.items())},
        "feedback_given": given_all,
        "feedback_arrived": arrived_all,
        "rows": out,
    }


def pct(rate: Mapping[str, Any] | None) -> str:
    """A camera-truth rate as text."""
    if not rate or not rate["n"]:
        return "no parts"
    return (
        f"{100 * rate['value']:.1f}% ({rate['events']}/{rate['n']}, 95% CI "
        f"{100 * rate['low']:.1f}-{100 * rate['high']:.1f}%)"
    )


def field_text(rate: Mapping[str, Any] | None) -> str:
    """A field rate as text (its own words: a figure with its interval, or "too little feedback")."""
    if not rate:
        return "no feedback arrived"
    events, n, st = rate.get("events"), rate.get("n"), rate.get("status")
    if not isinstance(events, int) or not isinstance(n, int) or not n or st in ("none", "noisy"):
        return str(rate.get("text", ""))
    if st == "too_little":  # short: the report's own words are in summary.json and `edgeline field report`
        return f"too little feedback to tell ({events}/{n})"
    return f"{100 * events / n:.1f}% ({events}/{n}, 95% CI {100 * rate['low']:.1f}-{100 * rate['high']:.1f}%)"
