"""Render the demo summary (the same dict ``edgeline demo --json`` writes) as one self-contained HTML page:
inline CSS and inline SVG figures, no script, nothing fetched from the network."""

from __future__ import annotations

import time
from typing import Any

from edgeline.demo.report import sections
from edgeline.demo.report.field_section import field_rates
from edgeline.demo.report.widgets import esc

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
.grid { display:flex; flex-wrap:wrap; gap:10px 18px; align-items:flex-start; }
.fig svg { max-width:100%; height:auto; }
.fig { margin:14px 0 4px; }
.fig figcaption { color:var(--muted); font-size:12px; margin-top:2px; max-width:980px; }
.grid .fig { margin:8px 0 0; }
p.note { color:var(--muted); font-style:italic; }
p.facts { background:#f0f4f8; border-radius:6px; padding:10px 14px; margin:14px 0 4px; }
.muted { color:var(--muted); }
nav { margin:0 0 18px; font-size:13px; }
nav a { color:var(--accent); margin-right:14px; text-decoration:none; }
code { background:#f0f4f8; padding:1px 5px; border-radius:4px; font-size:12px; }
.reject { border-left:4px solid var(--bad); background:#fff5f5; padding:10px 14px; border-radius:6px;
          margin-bottom:12px; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:20px; }
"""

NAV = [("stages", "Stages"), ("models", "Models"), ("drift", "Drift"), ("field", "Field rates"),
       ("new_kind", "New defect kind"),
       ("rollouts", "Rollouts"), ("fleet", "Fleet"), ("tampered", "Tampered update")]  # fmt: skip


def render(summary: dict[str, Any]) -> str:
    ok = bool(summary.get("ok"))
    badge = '<span class="badge ok">all stages passed</span>' if ok else '<span class="badge bad">a stage failed</span>'
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(summary.get("started_at", time.time())))
    nav = "<nav>" + "".join(f'<a href="#{k}">{esc(t)}</a>' for k, t in NAV) + "</nav>"
    body = "".join(
        part(summary)
        for part in (
            sections.stages,
            sections.models,
            sections.drift,
            field_rates,
            sections.new_kind,
            sections.rollouts,
            sections.fleet,
            sections.tampered,
        )
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>edgeline demo report</title><style>{CSS}</style></head>
<body><header><h1>edgeline demo {badge}</h1>
<p>{esc(len(summary.get("fleet", [])))} devices · broker {esc(summary.get("broker", "?"))} · {esc(when)} ·
workspace <code style="background:#243b53;color:#d9e2ec">{esc(summary.get("workdir", ""))}</code></p></header>
<main>{sections.cards(summary)}{nav}{body}</main>
<footer>edgeline · rendered from the same data as <code>edgeline demo --json</code>
(summary.json in the workspace)</footer>
</body></html>
"""
