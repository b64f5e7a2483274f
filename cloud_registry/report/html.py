"""Render the demo summary (the same dict ``edgeline demo --json`` writes) as one self-contained HTML page."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import Any

from cloud_registry.report import plots

CSS = """
:root { --ink:#1f2933; --muted:#7b8794; --line:#e4e7eb; --ok:#1e8e3e; --bad:#d93025; --accent:#2f6fdf; }
* { box-sizing:border-box; }
body { margin:0; font:14px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
       color:var(--ink); background:#f5f7fa; }
header { background:#102a43; color:#fff; padding:28px 40px 22px; }
header h1 { margin:0 0 4px; font-size:24px; font-weight:600; letter-spacing:.2px; }
header p { margin:0; color:#bcccdc; }
.badge { display:inline-block; padding:2px 10px; border-radius:999px; font-size:12px; font-weight:600;
         vertical-align:middle; margin-left:10px; }
.badge.ok { background:#d3f9d8; color:#0b5b1d; } .badge.bad { background:#ffe3e3; color:#8a1c1c; }
main { max-width:1180px; margin:0 auto; padding:24px 40px 60px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(200px,1fr)); gap:14px; margin:-46px 0 22px; }
.card { background:#fff; border:1px solid var(--line); border-radius:10px; padding:14px 16px;
        box-shadow:0 1px 2px rgba(16,42,67,.06); }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.6px; }
.card .v { font-size:26px; font-weight:600; margin-top:2px; }
.card .s { color:var(--muted); font-size:12px; }
section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:18px 22px; margin:0 0 18px; }
section h2 { margin:0 0 4px; font-size:17px; }
section > p.lead { margin:0 0 14px; color:var(--muted); }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:7px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; font-size:12px; text-transform:uppercase; letter-spacing:.4px; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
.ok { color:var(--ok); font-weight:600; } .bad { color:var(--bad); font-weight:600; }
.grid { display:flex; flex-wrap:wrap; gap:18px; align-items:flex-start; }
.fig svg { max-width:100%; height:auto; }
.fig figcaption { color:var(--muted); font-size:12px; margin-top:2px; }
code { background:#f0f4f8; padding:1px 5px; border-radius:4px; font-size:12px; }
.reject { border-left:4px solid var(--bad); background:#fff5f5; padding:10px 14px; border-radius:6px; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:20px; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def pct(x: Any) -> str:
    try:
        return f"{100.0 * float(x):.1f}%"
    except (TypeError, ValueError):
        return "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f'<th class="{"num" if i in numeric else ""}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = []
    for r in rows:
        cells = []
        for i, c in enumerate(r):
            cls = "num" if i in numeric else ""
            cells.append(f'<td class="{cls}">{c if isinstance(c, Raw) else esc(c)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Raw(str):
    """Already-escaped HTML for a table cell."""


def status(ok: Any) -> Raw:
    return Raw('<span class="ok">passed</span>' if ok else '<span class="bad">failed</span>')


def figure(svg: str, caption: str) -> str:
    return f'<figure class="fig">{svg}<figcaption>{esc(caption)}</figcaption></figure>'


def card(key: str, value: str, sub: str) -> str:
    return (
        f'<div class="card"><div class="k">{esc(key)}</div><div class="v">{esc(value)}</div>'
        f'<div class="s">{esc(sub)}</div></div>'
    )


def _cards(s: dict[str, Any]) -> str:
    models = s.get("models", {})
    v1, v2 = models.get("v1", {}), models.get("v2", {})
    drift = s.get("drift", {})
    drifted = [d for d, v in drift.get("devices", {}).items() if v.get("alarm")]
    tampered = s.get("tampered", {})
    fleet = s.get("fleet", [])
    final_version = v2.get("version")
    on_v2 = sum(1 for d in fleet if d.get("model_version") == final_version)
    return (
        '<div class="cards">'
        + "".join(
            [
                card("v1 on drifted line", pct(v1.get("accuracy_drifted")), f"clean: {pct(v1.get('accuracy_clean'))}"),
                card("v2 on drifted line", pct(v2.get("accuracy_drifted")), f"clean: {pct(v2.get('accuracy_clean'))}"),
                card(
                    "drift detected on", ", ".join(drifted) or "none", f"{len(drift.get('devices', {}))} lines watched"
                ),
                card(
                    "tampered update",
                    "rejected" if tampered.get("rejected") else "NOT rejected",
                    str(tampered.get("reason", "")),
                ),
                card("devices on v2", f"{on_v2}/{len(fleet)}", f"in {s.get('duration_s', 0):.0f} s end to end"),
            ]
        )
        + "</div>"
    )


def _stages(s: dict[str, Any]) -> str:
    rows = [
        [
            i + 1,
            st.get("title", st.get("name")),
            status(st.get("ok")),
            f"{float(st.get('seconds', 0)):.1f}",
            st.get("summary", ""),
        ]
        for i, st in enumerate(s.get("stages", []))
    ]
    return (
        "<section><h2>The story, stage by stage</h2>"
        '<p class="lead">Each stage ran against real parts: a Mosquitto broker, agent processes with ONNX Runtime, '
        "OpenCV video, a SQLite registry.</p>"
        + table(["#", "stage", "outcome", "seconds", "what happened"], rows, numeric=(0, 3))
        + "</section>"
    )


def _models(s: dict[str, Any]) -> str:
    figs = []
    rows = []
    for key in ("v1", "v2"):
        m = s.get("models", {}).get(key)
        if not m:
            continue
        for split in ("clean", "drifted"):
            cm = m.get(f"confusion_{split}")
            if cm:
                figs.append(
                    figure(
                        plots.confusion(cm["labels"], cm["matrix"], f"{key} on {split} frames"),
                        f"{key} · accuracy {pct(m.get(f'accuracy_{split}'))}",
                    )
                )
        rows.append(
            [
                key,
                m.get("version", ""),
                m.get("quantization", ""),
                f"{int(m.get('size_bytes', 0)):,}",
                pct(m.get("accuracy_clean")),
                pct(m.get("accuracy_drifted")),
                m.get("lineage", ""),
            ]
        )
    return (
        "<section><h2>Models</h2>"
        '<p class="lead">v1 is trained on the normal line; v2 is retrained from drift evidence with augmentation '
        "matched to the field statistics, gated, and rolled out.</p>"
        + table(["model", "version", "quantization", "bytes", "clean acc.", "drifted acc.", "lineage"], rows, (3, 4, 5))
        + f'<div class="grid">{"".join(figs)}</div></section>'
    )


def _drift(s: dict[str, Any]) -> str:
    drift = s.get("drift", {})
    devices = drift.get("devices", {})
    series: dict[str, tuple[Sequence[float], Sequence[float]]] = {}
    figs = []
    rows = []
    for dev, d in sorted(devices.items()):
        pts = d.get("series", [])
        if pts:
            series[dev] = ([p["t"] for p in pts], [p["score"] for p in pts])
        rows.append(
            [
                dev,
                "darkened" if d.get("drifted") else "normal",
                f"{float(d.get('max_score', 0)):.3f}",
                Raw('<span class="bad">alarm</span>' if d.get("alarm") else '<span class="ok">quiet</span>'),
            ]
        )
        for name, h in sorted(d.get("hist", {}).items()):
            figs.append(
                figure(
                    plots.histograms(f"{name} · {dev}", h["edges"], {"reference": h["reference"], "field": h["field"]}),
                    f"{name} on {dev}: training reference vs field telemetry",
                )
            )
    over_time = (
        figure(plots.drift_over_time(series, drift.get("threshold")), "drift score per telemetry window")
        if series
        else ""
    )
    return (
        "<section><h2>Drift</h2>"
        '<p class="lead">Only aggregate histograms leave the devices. The drift score compares each window with '
        "the reference histograms shipped in the manifest.</p>"
        + table(["line", "lighting", "max score", "verdict"], rows, numeric=(2,))
        + over_time
        + f'<div class="grid">{"".join(figs)}</div></section>'
    )


def _rollouts(s: dict[str, Any]) -> str:
    fleet = s.get("fleet", [])
    devices = [d["device"] for d in fleet]
    rows = [ev for r in s.get("rollouts", []) for ev in r.get("timeline", [])]
    summary = table(
        ["rollout", "model", "version", "waves", "outcome"],
        [
            [r.get("id", ""), r.get("model", ""), r.get("version", ""), r.get("waves", ""), r.get("state", "")]
            for r in s.get("rollouts", [])
        ],
    )
    fig = figure(plots.timeline(rows, devices), "updater events per device") if rows and devices else ""
    return "<section><h2>Rollouts</h2>" + summary + fig + "</section>"


def _fleet(s: dict[str, Any]) -> str:
    rows = [
        [
            d.get("device"),
            Raw('<span class="ok">online</span>' if d.get("online") else '<span class="bad">offline</span>'),
            d.get("model_version", ""),
            d.get("slot", ""),
            d.get("last_event", ""),
            f"{int(d.get('frames', 0)):,}",
            f"{int(d.get('defects', 0)):,}",
            d.get("last_error", "") or "-",
        ]
        for d in s.get("fleet", [])
    ]
    return (
        "<section><h2>Fleet</h2>"
        + table(["device", "status", "model", "slot", "last event", "frames", "defects", "last error"], rows, (5, 6))
        + "</section>"
    )


def _tampered(s: dict[str, Any]) -> str:
    t = s.get("tampered", {})
    if not t:
        return ""
    verdict = "refused by every targeted device" if t.get("rejected") else "ACCEPTED — this is a failure"
    return (
        "<section><h2>The tampered update</h2>"
        f'<div class="reject"><b>{esc(t.get("description", "a manifest altered after signing"))}</b>'
        f" — {esc(verdict)}.<br>"
        f"reason: <code>{esc(t.get('reason', ''))}</code> · devices: {esc(', '.join(t.get('devices', [])))} · "
        f"frames inspected while it was refused: {int(t.get('frames_during', 0)):,}</div></section>"
    )


def render(summary: dict[str, Any]) -> str:
    ok = bool(summary.get("ok"))
    badge = '<span class="badge ok">all stages passed</span>' if ok else '<span class="badge bad">a stage failed</span>'
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(summary.get("started_at", time.time())))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>edgeline demo report</title><style>{CSS}</style></head>
<body><header><h1>edgeline demo {badge}</h1>
<p>{esc(len(summary.get("fleet", [])))} devices · broker {esc(summary.get("broker", "?"))} · {esc(when)} ·
workspace <code style="background:#243b53;color:#d9e2ec">{esc(summary.get("workdir", ""))}</code></p></header>
<main>{_cards(summary)}{_stages(summary)}{_models(summary)}{_drift(summary)}{_rollouts(summary)}{_fleet(summary)}{_tampered(summary)}</main>
<footer>edgeline · generated from the same data as <code>edgeline demo --json</code></footer>
</body></html>
"""
