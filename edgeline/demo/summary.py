"""The run's summary: the one dict ``--json`` prints, ``summary.json`` holds and the HTML report renders.

It is assembled from the stages' outcomes, the devices' verdicts scored against ground truth, the
telemetry the cloud stored, the updater events and the final fleet view.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from edge_agent.telemetry.privacy import PrivacyError, load_secret, pseudonym
from edgeline.demo.context import DemoContext, Outcome
from edgeline.demo.errors import DemoError
from edgeline.demo.field_view import field_block, field_text, pct
from edgeline.demo.models import model_facts
from edgeline.demo.scoring import Scored, confusion, load_truth, score_device
from edgeline.demo.telemetry_view import histograms, line_view, series

SCHEMA = "edgeline.demo/1"
#: fewest scored frames for an accuracy to count
MIN_FRAMES = 20


@dataclass
class StageRecord:
    name: str
    title: str
    status: str  # passed | failed | skipped
    seconds: float = 0.0
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "ok": self.ok,
            "status": self.status,
            "seconds": round(self.seconds, 2),
            "summary": self.summary,
            "details": self.details,
        }


def fleet_snapshot(ctx: DemoContext) -> list[dict[str, Any]]:
    cloud = ctx.need_cloud()
    now = time.time()
    rows = []
    for d, proc in ctx.devices.items():
        row = cloud.fleet.view.row(d, now).to_dict()
        st = proc.status() or {}
        model = row.get("model") or {}
        last = row.get("last_event") or {}
        verdicts = st.get("verdicts", {}).get("by_verdict", {})
        rows.append(
            {
                "device": d,
                "online": row["status"] == "online",
                "status": row["status"],
                "model_version": model.get("version"),
                "slot": row.get("slot") or "",
                "updater": row.get("updater") or "",
                "health": row.get("health"),
                "last_event": f"{last.get('kind', '')} {last.get('reason', '')}".strip(),
                "last_error": row.get("last_error") or "",
                "frames": st.get("frames", {}).get("in", 0),
                "inspected": st.get("frames", {}).get("inspected", 0),
                "defects": verdicts.get("defect", 0),
                "agent_state": st.get("state", ""),
            }
        )
    return rows


def scored_frames(ctx: DemoContext) -> tuple[list[Scored], int]:
    s = ctx.settings
    frames: list[Scored] = []
    unmatched = 0
    for d, proc in ctx.devices.items():
        got, missed = score_device(
            d, proc.records(), load_truth(ctx.ws.root / "truth" / f"{d}.csv"), (s.drift_brightness, s.drift_contrast)
        )
        frames += got
        unmatched += missed
    return frames, unmatched


def _accuracy(frames: Sequence[Scored], labels: Sequence[str]) -> dict[str, Any]:
    c = confusion(frames, labels)
    return {"accuracy": c.accuracy, "confusion": c.to_dict()}


def score(ctx: DemoContext) -> tuple[Outcome, dict[str, Any]]:
    """Accuracy of v1 and v2 on clean and drifted frames, from the devices' own verdicts."""
    if ctx.v1 is None:
        raise DemoError("nothing to score: v1 was never built")
    labels = list(ctx.v1.manifest.labels)
    frames, unmatched = scored_frames(ctx)
    table: dict[str, dict[str, Any]] = {}
    for version in (1, 2):
        for cond in ("clean", "drifted"):
            sel = [f for f in frames if f.version == version and f.condition == cond]
            table[f"v{version}_{cond}"] = {**_accuracy(sel, labels), "frames": len(sel)}
    v1d, v2d = table["v1_drifted"], table["v2_drifted"]
    enough = v1d["frames"] >= MIN_FRAMES and v2d["frames"] >= MIN_FRAMES
    gain = (v2d["accuracy"] - v1d["accuracy"]) if enough else None
    ok = gain is not None and gain >= ctx.settings.min_gain
    details = {
        "frames_scored": len(frames),
        "unmatched": unmatched,
        "accuracy": {k: (round(v["accuracy"], 4) if v["accuracy"] is not None else None) for k, v in table.items()},
        "frames": {k: v["frames"] for k, v in table.items()},
        "gain_on_drifted": round(gain, 4) if gain is not None else None,
        "min_gain": ctx.settings.min_gain,
    }
    if gain is None:
        summary = (
            f"too few scored frames on the drifted line (v1 {v1d['frames']}, v2 {v2d['frames']}; need {MIN_FRAMES})"
        )
    else:
        summary = (
            f"drifted line: v1 {v1d['accuracy']:.1%} → v2 {v2d['accuracy']:.1%} "
            f"({v1d['frames']} / {v2d['frames']} frames); "
            f"normal lighting: v1 {table['v1_clean']['accuracy'] or 0:.1%}, v2 {table['v2_clean']['accuracy'] or 0:.1%}"
        )
    return Outcome(ok, summary, details), table


def _v3_block(ctx: DemoContext) -> dict[str, Any]:
    """v3, the inspection model: it is judged in the line's terms (its build's escape and false-reject
    rates) and on the new defect kind, not by accuracy over the classifier's labels."""
    if ctx.v3 is None:
        return {}
    nk = ctx.new_kind
    build = nk.get("v3", {}).get("build", {})
    return {
        **model_facts(ctx.v3.manifest),
        "model_kind": ctx.v3.kind,
        "lineage": "inspection model built from v1's training images",
        "false_reject": build.get("false_reject"),
        "escape": build.get("escape"),
        "new_kind_caught": nk.get("live", {}).get("caught"),
    }


def _model_block(ctx: DemoContext, key: str, table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if key == "v3":
        return _v3_block(ctx)
    manifest = ctx.v1.manifest if key == "v1" and ctx.v1 else (ctx.v2.manifest if key == "v2" and ctx.v2 else None)
    if manifest is None:
        return {}
    parent = manifest.lineage.get("parent_version")
    block: dict[str, Any] = {
        **model_facts(manifest),
        "lineage": f"retrained from v{parent} on drift evidence" if parent else "trained on normal lighting",
    }
    for cond in ("clean", "drifted"):
        row = table.get(f"{key}_{cond}")
        if row:
            block[f"accuracy_{cond}"] = round(row["accuracy"], 4) if row["accuracy"] is not None else None
            block[f"frames_{cond}"] = row["frames"]
            block[f"confusion_{cond}"] = row["confusion"] if row["frames"] else None
    return block


def _local_alarm(ctx: DemoContext, device: str) -> float | None:
    """When the device's own offline alarm (a local event to the line) first fired on input drift."""
    proc = ctx.devices.get(device)
    if proc is None:
        return None
    times = [
        float(r["ts"])
        for r in proc.records()
        if r.get("type") == "event" and r.get("kind") == "drift_alarm" and r.get("channel") == "input"
    ]
    return min(times, default=None)


def drift_block(ctx: DemoContext) -> dict[str, Any]:
    if ctx.v1 is None:
        return {}
    windows = ctx.windows
    line = ctx.settings.drifted_device
    since = ctx.t0 + ctx.marks.get("drift_full", float("inf"))
    devices = {}
    for d in ctx.devices:
        view = line_view(d, windows)
        field_windows = [w for w in view.windows if w.model.version == 1 and w.start >= since]
        pts = series(view, ctx.t0)
        first = view.first_alarm()
        local = _local_alarm(ctx, d)
        devices[d] = {
            "drifted": d == line,
            "alarm": view.alarm,
            "local_alarm_s": round(local - ctx.t0, 2) if local is not None else None,
            "first_alarm_s": round(first - ctx.t0, 2) if first is not None else None,
            "windows": len(view.windows),
            "max_score": max((p["score"] for p in pts), default=0.0),
            "series": pts,
            "hist": histograms(field_windows, ctx.v1.manifest.reference),
        }
    return {
        "line": line,
        "score": "largest PSI / calibrated threshold over the input statistics (> 1: the window drifted)",
        "rule": "3 of the last 4 windows drifted",
        "threshold": 1.0,
        "devices": devices,
    }


def _field(ctx: DemoContext) -> dict[str, Any]:
    """The lines' rates from the camera's truth beside the cloud's from operator feedback."""
    if ctx.operator is None and not ctx.field_report:
        return {}
    try:
        secret = load_secret(ctx.ws.pseudonym_key)
        line_of = {pseudonym(d, secret)[:12]: d for d in ctx.devices}
    except PrivacyError:
        line_of = {}
    frames, _ = scored_frames(ctx)
    tallies = ctx.operator.tallies() if ctx.operator is not None else {}
    return field_block(ctx.field_report, frames, tallies, line_of)


def build_summary(ctx: DemoContext, records: list[StageRecord], table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    broker = ctx.broker
    kind = "mosquitto" if broker is not None and broker.protocol == "5" else "amqtt"
    events = [e.to_dict() for e in (ctx.cloud.events.snapshot() if ctx.cloud is not None else [])]
    for e in events:  # a refused deployment names no model the device would trust: say what it claimed
        if e["version"] is None and e["sequence"] == ctx.tampered.get("sequence"):
            e["version"] = ctx.tampered.get("version")
    return {
        "schema": SCHEMA,
        "ok": bool(records) and all(r.ok for r in records),
        "started_at": ctx.t0,
        "duration_s": round(time.time() - ctx.t0, 1),
        "workdir": str(ctx.ws.root),
        "report": str(ctx.ws.report_path),
        "broker": f"{kind} on 127.0.0.1:{broker.port} (MQTT {broker.protocol})" if broker else "not started",
        "settings": ctx.settings.to_dict(),
        "stages": [r.to_dict() for r in records],
        "models": {k: b for k in ("v1", "v2", "v3") if (b := _model_block(ctx, k, table))},
        "new_kind": ctx.new_kind,
        "drift": drift_block(ctx),
        "rollouts": ctx.rollouts,
        "timeline": events,
        "marks": ctx.marks,
        "fleet": ctx.fleet,
        "tampered": ctx.tampered,
        "field": _field(ctx),
    }


def summary_table(summary: dict[str, Any]) -> Table:
    t = Table(
        title=f"edgeline demo: {'all stages passed' if summary['ok'] else 'a stage FAILED'}", title_justify="left"
    )
    t.add_column("stage")
    t.add_column("outcome")
    t.add_column("s", justify="right")
    t.add_column("what happened", overflow="fold")
    for st in summary["stages"]:
        mark = {"passed": "[green]passed[/]", "failed": "[bold red]FAILED[/]"}.get(st["status"], "[dim]skipped[/]")
        t.add_row(st["title"], mark, f"{st['seconds']:.1f}", st["summary"])
    return t


def field_table(summary: dict[str, Any]) -> Table | None:
    """Escape and false reject per line and version: the camera's truth, and operator feedback alone."""
    block = summary.get("field") or {}
    if not block.get("rows"):
        return None
    t = Table(
        title=(
            f"Field rates per line: camera truth beside operator feedback (simulated; "
            f"{block['feedback_arrived']} of {block['feedback_given']} feedbacks arrived in telemetry)"
        ),
        title_justify="left",
    )
    for col in ("line", "model", "checked", "escape: camera truth", "escape: from feedback"):
        t.add_column(col, overflow="fold")
    t.add_column("false reject: camera truth", overflow="fold")
    t.add_column("false reject: from feedback", overflow="fold")
    for r in block["rows"]:
        f = r["field"] or {}
        share = f"{100 * r['share']:.0f}%: " if r["share"] is not None else ""
        mark = "" if r["counts_match"] else " [yellow](not all arrived)[/]"
        t.add_row(
            r["device"],
            f"v{r['version']}",
            f"{share}{r['feedback_arrived']}/{r['frames_scored']}{mark}",
            pct(r["camera"]["escape"]),
            field_text(f.get("escape")),
            pct(r["camera"]["false_reject"]),
            field_text(f.get("false_reject")),
        )
    return t
