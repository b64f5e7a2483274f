"""The console's pages as HTML strings (pure: data in, text out). Small on purpose: one stylesheet,
one script, no framework, no external resource (a factory network may be slow or cut off)."""

from __future__ import annotations

import math
import time
from typing import Any
from urllib.parse import quote

from cloud_registry.fleet import FleetRow
from edgeline.console import widgets as w
from edgeline.console.accounts import Session
from edgeline.console.data import ModelInfo, Read, RolloutItem, gate
from edgeline.console.live import LinkState

NAV: tuple[tuple[str, str, str], ...] = (
    ("fleet", "/", "Fleet"),
    ("rollouts", "/rollouts", "Rollouts"),
    ("models", "/models", "Models"),
    ("drift", "/drift", "Drift and alerts"),
    ("audit", "/audit", "Audit"),
)
HERE = ' class="here"'


def layout(title: str, page: str, body: str, session: Session | None, *, link: LinkState | None, alerts: int) -> str:
    nav = "".join(f'<a href="{href}"{HERE if key == page else ""}>{w.e(label)}</a>' for key, href, label in NAV)
    who = ""
    if session is not None:
        who = (
            f'<span class="who">{w.e(session.username)} <small>({w.e(session.role)})</small> '
            f"{w.action_button('/logout', 'Log out', session.csrf, name='logout')}</span>"
        )
    head = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{w.e(title)} · edgeline</title>"
        '<link rel="stylesheet" href="/static/console.css"><script src="/static/console.js" defer></script></head>'
    )
    top = ""
    if session is not None:
        banner = w.link_banner(link, time.time()) if link is not None else ""
        top = f'<header><b class="brand">edgeline</b><nav>{nav}</nav>{w.alert_count(alerts)}{who}</header>{banner}'
    live = ' data-live="1"' if session is not None else ""
    return f'{head}<body data-page="{w.e(page)}"{live}>{top}<main>{body}</main></body></html>'


def stale_note(read: Read[Any], what: str) -> str:
    if not read.stale:
        return ""
    at = w.when(read.at) if read.at else "never read"
    return (
        f'<div class="banner down">The {w.e(what)} is unreachable ({w.e(read.error)}): '
        f"showing what it said at {at}.</div>"
    )


def flash(message: str | None) -> str:
    return f'<div class="flash" role="status">{w.e(message)}</div>' if message else ""


# -- login --------------------------------------------------------------------------------------------------
def login(form_token: str, error: str = "", username: str = "") -> str:
    err = f'<p class="error" role="alert">{w.e(error)}</p>' if error else ""
    body = (
        '<section class="login"><h1>edgeline console</h1>'
        f"{err}"
        '<form method="post" action="/login">'
        f'<input type="hidden" name="csrf" value="{w.e(form_token)}">'
        f'<label>User <input name="username" autocomplete="username" required value="{w.e(username)}"></label>'
        '<label>Password <input name="password" type="password" autocomplete="current-password" required></label>'
        '<button type="submit">Log in</button></form></section>'
    )
    return layout("Log in", "login", body, None, link=None, alerts=0)


# -- fleet --------------------------------------------------------------------------------------------------
def fleet(rows: list[FleetRow], group: str | None = None, device: str | None = None) -> str:
    """Every unit, each station right under its device; ``group``: only the units of that group,
    ``device``: only that device and its stations."""
    shown = [
        r
        for r in rows
        if (group is None or (r.state and group in r.state.groups)) and (device is None or r.device == device)
    ]
    head = "".join(f"<th>{w.e(c)}</th>" for c in w.FLEET_COLUMNS)
    body = "".join(w.fleet_row(r) for r in shown)
    empty = "" if shown else '<p class="muted">No device has announced itself on the broker yet.</p>'
    title = "Fleet"
    filtered = ""
    if group is not None:
        title = f"Fleet: {w.e(group)}"
        filtered = f' data-group="{w.e(group)}"'
    if device is not None:
        title = f"{title}: device {w.e(device)}" if group is not None else f"Fleet: device {w.e(device)}"
        filtered += f' data-device="{w.e(device)}"'
    if group is not None or device is not None:
        empty += f'<p><a href="/">all {w.e(w.units_line(rows))}</a></p>'
    return (
        f"<h1>{title}</h1>{w.fleet_summary(rows, group)}{empty}"
        f'<table class="grid" id="fleet"><thead><tr>{head}</tr></thead>'
        f'<tbody id="fleet-body"{filtered}>{body}</tbody></table>'
    )


# -- rollouts -----------------------------------------------------------------------------------------------
ROLLOUT_HEAD = ("id", "model", "target", "status", "wave", "committed", "failed", "created", "")


def deploy_form(session: Session, refs: list[str]) -> str:
    options = "".join(f'<option value="{w.e(r)}">{w.e(r)}</option>' for r in refs)
    return (
        '<form method="post" action="/deploy" class="deploy" id="deploy-form"><h2>Deploy</h2>'
        f"{w.csrf_field(session.csrf)}"
        f'<label>Model <select name="ref" required>{options}</select></label>'
        '<label>To <input name="target" placeholder="group:line-a or device:ID,ID" required></label>'
        '<label>Canary <input name="canary" type="number" min="0" value="0"></label>'
        '<label>Waves <input name="waves" value="100%"></label>'
        '<label>Max failures <input name="max_failures" value="0%"></label>'
        '<label class="check"><input type="checkbox" name="allow_downgrade" value="1"> allow downgrade</label>'
        '<button type="submit" id="deploy-button">Deploy</button></form>'
    )


def rollouts(items: Read[list[RolloutItem]], session: Session, refs: list[str], message: str | None) -> str:
    operator = session.may("deploy")
    head = "".join(f"<th>{w.e(c)}</th>" for c in ROLLOUT_HEAD)
    csrf = session.csrf if operator else None
    body = "".join(w.rollout_row(i.rollout, i.created_at, csrf) for i in items.value)
    viewer_note = '<p class="muted">Viewers see rollouts; operators start them.</p>'
    form = deploy_form(session, refs) if operator else viewer_note
    return (
        f"<h1>Rollouts</h1>{flash(message)}{stale_note(items, 'registry store')}{form}"
        f'<table class="grid" id="rollouts"><thead><tr>{head}</tr></thead>'
        f'<tbody id="rollouts-body">{body}</tbody></table>'
    )


def rollout_detail(item: Read[RolloutItem | None], session: Session, message: str | None) -> str:
    it = item.value
    if it is None:
        return f"<h1>Rollout</h1>{stale_note(item, 'registry store')}<p>Unknown rollout.</p>"
    r = it.rollout
    csrf = session.csrf if session.may("abort") else None
    head = "".join(f"<th>{w.e(c)}</th>" for c in ROLLOUT_HEAD)
    plan = r.plan
    facts = (
        f"<p>{w.e(plan.model.name)} v{plan.model.version} to {w.e(plan.target)}; {len(plan.waves)} wave(s), canary "
        f"{plan.canary}, abort above {plan.max_failure_pct:g}% failures"
        f"{', downgrade allowed' if plan.allow_downgrade else ''}; "
        f"runner {'alive' if it.runner_alive else 'not running'}.</p>"
    )
    return (
        f"<h1>Rollout {w.e(plan.id)}</h1>{flash(message)}{stale_note(item, 'registry store')}{facts}"
        f'<table class="grid" id="rollouts"><thead><tr>{head}</tr></thead><tbody>'
        f"{w.rollout_row(r, it.created_at, csrf)}</tbody></table>{w.rollout_devices(r)}"
    )


# -- models -------------------------------------------------------------------------------------------------
def _pct(v: Any) -> str:
    return "-" if v is None or not isinstance(v, int | float) or not math.isfinite(v) else f"{100 * v:.2f}%"


def _gate_cell(g: dict[str, Any], key: str) -> str:
    m = g.get(key)
    if not m:
        return '<td class="muted">unmeasured</td>'
    return f"<td>{_pct(m['rate'])} <small>of {m['n']}, 95% &le; {_pct(m['high'])}</small></td>"


def models(read: Read[list[ModelInfo]]) -> str:
    out = [f"<h1>Models</h1>{stale_note(read, 'registry store')}"]
    if not read.value:
        out.append('<p class="muted">No model is registered (edgeline registry add BUNDLE).</p>')
    for m in read.value:
        aliases = ", ".join(f"{s} &rarr; v{v}" for s, v in sorted(m.stages.items())) or "no aliases"
        out.append(f'<section class="model" id="model-{w.e(m.name)}"><h2>{w.e(m.name)}</h2><p>{aliases}</p>')
        out.append(
            '<table class="grid"><thead><tr><th>version</th><th>aliases</th><th>parent</th><th>escape</th>'
            "<th>false reject</th><th>gate</th><th>sha256</th><th>size</th><th>registered</th><th>note</th>"
            "<th>report</th></tr></thead><tbody>"
        )
        for v in reversed(m.versions):
            g = gate(v)
            stages = ", ".join(s for s, n in m.stages.items() if n == v.version) or "-"
            verdict = w.badge("unverified", "failed") if g["unverified"] else w.badge("passed", "committed")
            if "escape" not in g and "false_reject" not in g and not g["unverified"]:
                verdict = w.badge("fidelity only", "pending")
            out.append(
                f"<tr><td>v{v.version}</td><td>{w.e(stages)}</td><td>{'v' + str(v.parent) if v.parent else '-'}</td>"
                f"{_gate_cell(g, 'escape')}{_gate_cell(g, 'false_reject')}<td>{verdict}</td>"
                f"<td><code>{w.e(v.sha256[:12])}</code></td><td>{v.size:,} B</td><td>{w.when(v.created_at)}</td>"
                f"<td>{w.e(v.note or '-')}</td><td>{_report_link(m, v.version)}</td></tr>"
            )
        out.append("</tbody></table>")
        edges = [f"v{v.parent} &rarr; v{v.version}" for v in m.versions if v.parent is not None]
        out.append(f'<p class="lineage">lineage: {", ".join(edges) or "no parent links recorded"}</p>')
        out.append(_reports(m))
        out.append("</section>")
    return "".join(out)


def report_url(name: str, version: int) -> str:
    return f"/models/{quote(name)}/{version}/report.png"


def _report_link(m: ModelInfo, version: int) -> str:
    if "png" in m.reports.get(version, {}):
        return f'<a href="#{w.e(w.dom_id("report", f"{m.name}.{version}"))}">plots</a>'
    return "report" if m.reports.get(version) else '<span class="muted">none kept</span>'


def _reports(m: ModelInfo) -> str:
    """Each kept build report: its notes and plots, the newest open (the others load when opened)."""
    out = []
    for i, version in enumerate(sorted(m.reports, reverse=True)):
        kinds = m.reports[version]
        notes = m.report_notes.get(version, [])
        head = w.e(notes[0]) if notes else "build report"
        rest = "".join(f"<li>{w.e(n)}</li>" for n in notes[1:])
        img = ""
        if "png" in kinds:
            alt = f"build report of {m.name} v{version}"
            img = f'<img class="plot" loading="lazy" alt="{w.e(alt)}" src="{w.e(report_url(m.name, version))}">'
        rid = w.dom_id("report", f"{m.name}.{version}")
        out.append(
            f'<details class="report" id="{w.e(rid)}"{" open" if i == 0 else ""}>'
            f"<summary>v{version}: {head}</summary>{f'<ul>{rest}</ul>' if rest else ''}{img}</details>"
        )
    return "".join(out)


# -- drift and alerts ---------------------------------------------------------------------------------------
def _f(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.3f}"


def drift(names: list[str], selected: str | None, reports: Read[list[Any]], alerts: Read[list[dict[str, Any]]]) -> str:
    out = ["<h1>Drift and field performance</h1>", stale_note(alerts, "telemetry store")]
    if names:
        links = " ".join(
            f'<a href="/drift?model={quote(n)}"{HERE if n == selected else ""}>{w.e(n)}</a>' for n in names
        )
        out.append(f'<p class="tabs">{links}</p>')
    else:
        out.append('<p class="muted">No telemetry yet (edgeline ingest stores the devices\' windows).</p>')
    if selected and reports.value:
        out.append(stale_note(reports, "telemetry store"))
        out.append(
            '<table class="grid"><thead><tr><th>version</th><th>line</th><th>windows</th><th>frames</th>'
            "<th>devices</th><th>statistic</th><th>ref mean</th><th>field mean</th><th>PSI</th><th>threshold</th>"
            "<th>EMD</th><th>windows drifted</th></tr></thead><tbody>"
        )
        for r in reports.value:
            for i, s in enumerate(r.stats):
                first = i == 0
                psi = (w.badge("DRIFT", "failed") + " " if s.drifted else "") + _f(s.psi)
                out.append(
                    f"<tr><td>{'v' + str(r.version) if first else ''}</td>"
                    f"<td>{w.e(r.group or '-') if first else ''}</td>"
                    f"<td>{r.windows if first else ''}</td><td>{r.frames if first else ''}</td>"
                    f"<td>{r.devices if first else ''}</td><td>{w.e(s.name)}</td><td>{_f(s.ref_mean)}</td>"
                    f"<td>{_f(s.field_mean)}</td><td>{psi}</td><td>{_f(s.threshold)}</td><td>{_f(s.emd)}</td>"
                    f"<td>{s.windows_drifted}/{s.windows}</td></tr>"
                )
        out.append("</tbody></table>")
        out.append(f'<img class="plot" alt="drift of {w.e(selected)}" src="/drift/{quote(selected)}.png">')
    rows = "".join(w.alert_row(a) for a in alerts.value)
    out.append(
        '<h2 id="alerts">Alerts</h2><table class="grid" id="alerts-table"><thead><tr><th>state</th><th>kind</th>'
        "<th>scope</th><th>opened</th><th>closed</th><th>summary</th></tr></thead>"
        f'<tbody id="alerts-body">{rows}</tbody></table>'
    )
    return "".join(out)


# -- audit --------------------------------------------------------------------------------------------------
def audit(read: Read[list[Any]]) -> str:
    rows = "".join(
        f"<tr><td>{w.when(a.ts)}</td><td>{w.e(a.username)}</td><td>{w.e(a.action)}</td><td>{w.e(a.target)}</td>"
        f"<td>{w.e(a.outcome)}</td></tr>"
        for a in read.value
    )
    return (
        f"<h1>Audit</h1>{stale_note(read, 'registry store')}"
        '<table class="grid" id="audit"><thead><tr><th>when</th><th>who</th><th>action</th><th>target</th>'
        f"<th>outcome</th></tr></thead><tbody>{rows}</tbody></table>"
    )
