"""HTML fragments the pages and the live patches share: one renderer per row, so a row pushed over
server-sent events is exactly the row the page was first rendered with. Every value is escaped."""

from __future__ import annotations

import time
from html import escape
from typing import Any
from urllib.parse import quote

from cloud_registry import rollout as ro
from cloud_registry.fleet import FleetRow
from edgeline.console.live import LinkState

CONTROLS_BY_STATUS: dict[str, tuple[str, ...]] = {
    "running": ("pause", "abort"),
    "paused": ("resume", "abort"),
    "completed": ("rollback",),
    "aborted": (),
}


def e(value: object) -> str:
    return escape(str(value), quote=True)


def dom_id(prefix: str, key: str) -> str:
    """A DOM id for any device or rollout id (ids may hold characters CSS selectors dislike)."""
    safe = "".join(c if c.isalnum() or c in "-_" else f"_{ord(c):x}_" for c in key)
    return f"{prefix}-{safe}"


def when(ts: float) -> str:
    """A timestamp the page's script turns into "12 s ago" (and that reads well without it)."""
    if ts <= 0:
        return "never"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    return f'<time data-ts="{ts:.3f}" datetime="{e(stamp)}">{e(stamp)}</time>'


def badge(text: str, kind: str | None = None) -> str:
    return f'<span class="badge b-{e(kind or text)}">{e(text)}</span>'


def csrf_field(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{e(token)}">'


def action_button(url: str, label: str, csrf: str, *, danger: bool = False, name: str = "") -> str:
    cls = "danger" if danger else ""
    return (
        f'<form method="post" action="{e(url)}" class="inline">{csrf_field(csrf)}'
        f'<button type="submit" class="{cls}" data-action="{e(name or label)}">{e(label)}</button></form>'
    )


# -- fleet ----------------------------------------------------------------------------------------------
FLEET_COLUMNS = (
    "device",
    "station",
    "hardware",
    "status",
    "groups",
    "model",
    "slot",
    "updater",
    "health",
    "last event",
    "last error",
    "seen",
)


def fleet_row(r: FleetRow) -> str:
    """One unit: a device, or a station of a device (docs/stations.md), which the page lists right
    under its device (the ``device`` and ``station`` columns, as ``edgeline fleet`` does)."""
    d = r.to_dict()
    model = f"{d['model']['name']} v{d['model']['version']}" if d["model"] else "-"
    ev = d["last_event"]
    last = "-"
    if ev:
        last = e(ev.get("kind", "")) + (f" <small>({e(ev['reason'])})</small>" if ev.get("reason") else "")
    hw = d["hardware_class"] or "-"
    agent = f" <small>agent {e(d['agent_version'])}</small>" if d["agent_version"] else ""
    device = f'<a href="/?device={e(quote(r.device))}">{e(r.device)}</a>'
    cells = [
        f'<td class="device">{device}</td>',
        f'<td class="station">{e(r.station or "-")}</td>',
        f'<td class="hw">{e(hw)}{agent}</td>',
        f'<td class="status">{badge(r.status)}</td>',
        f"<td>{e(', '.join(d['groups']) or '-')}</td>",
        f'<td class="model">{e(model)}</td>',
        f"<td>{e(d['slot'] or '-')}</td>",
        f'<td class="updater">{e(d["updater"] or "-")}</td>',
        f"<td>{e(d['health'])}</td>",
        f"<td>{last}</td>",
        f'<td class="err">{e((d["last_error"] or "-")[:120])}</td>',
        f"<td>{when(r.last_seen)}</td>",
    ]
    groups = e(" ".join(d["groups"]))
    station = f' class="station" data-station="{e(r.station)}"' if r.station else ""
    return (
        f'<tr id="{dom_id("dev", r.device_id)}" data-status="{e(r.status)}" data-groups="{groups}" '
        f'data-device="{e(r.device)}"{station}>{"".join(cells)}</tr>'
    )


def units_line(rows: list[FleetRow]) -> str:
    """``3 devices``, or with stations ``2 devices with 2 stations: 3 units`` (as ``edgeline fleet``)."""
    stations = sum(1 for r in rows if r.station)
    if not stations:
        return f"{len(rows)} devices"
    devices = len({r.device for r in rows})
    return f"{devices} devices with {stations} stations: {len(rows)} units"


STATUSES = ("online", "stale", "offline")


def fleet_summary(rows: list[FleetRow], group: str | None = None) -> str:
    """The counts, and one line per group (a production line or a station kind): how many devices,
    online, stale, offline, and the models they serve. Patched live like the rows."""
    counts = {s: sum(1 for r in rows if r.status == s) for s in STATUSES}
    parts = " ".join(f"{badge(f'{n} {s}', s)}" for s, n in counts.items())
    by_group: dict[str, list[FleetRow]] = {}
    for r in rows:
        for g in (r.state.groups if r.state else ()) or ("(none)",):
            by_group.setdefault(g, []).append(r)
    lines = []
    for g in sorted(by_group)[:50]:
        members = by_group[g]
        models: dict[str, int] = {}
        for r in members:
            m = r.state.model if r.state else None
            key = f"{m.name} v{m.version}" if m else "no model"
            models[key] = models.get(key, 0) + 1
        serving = ", ".join(f"{e(k)} &times;{n}" for k, n in sorted(models.items()))
        cells = "".join(f"<td>{sum(1 for r in members if r.status == s)}</td>" for s in STATUSES)
        here = ' class="here"' if g == group else ""
        link = f'<a href="/?group={e(quote(g))}"{here}>{e(g)}</a>' if g != "(none)" else e(g)
        lines.append(f"<tr><td>{link}</td><td>{len(members)}</td>{cells}<td>{serving}</td></tr>")
    table = ""
    units = "units" if any(r.station for r in rows) else "devices"
    if lines:
        table = (
            f'<table class="grid lines"><thead><tr><th>group</th><th>{units}</th><th>online</th><th>stale</th>'
            f"<th>offline</th><th>serving</th></tr></thead><tbody>{''.join(lines)}</tbody></table>"
        )
    return f'<div id="fleet-summary"><p class="summary">{units_line(rows)} {parts}</p>{table}</div>'


def link_banner(state: LinkState, now: float) -> str:
    if state.connected:
        live = f"Broker connected; live since {when(state.since)}"
        return f'<div id="link-banner" class="banner ok" data-up="1">{live}</div>'
    last = when(state.last_message) if state.last_message else "nothing yet"
    return (
        f'<div id="link-banner" class="banner down" data-up="0">Broker unreachable since {when(state.since)}: '
        f"showing what was last known (last message from a device: {last}). Reconnecting.</div>"
    )


# -- rollouts -------------------------------------------------------------------------------------------
def rollout_row(r: ro.Rollout, created_at: float, csrf: str | None) -> str:
    """One rollout; ``csrf`` None: no action buttons (a viewer)."""
    rid = r.plan.id
    committed = r.count(ro.DeviceStatus.COMMITTED)
    failed = r.count(ro.DeviceStatus.FAILED, ro.DeviceStatus.ROLLED_BACK, ro.DeviceStatus.ROLLING_BACK)
    total = len(r.devices)
    buttons = ""
    if csrf is not None:
        buttons = "".join(
            action_button(f"/rollouts/{rid}/{c}", c, csrf, danger=c in ("abort", "rollback"))
            for c in CONTROLS_BY_STATUS.get(r.status.value, ())
        )
    reason = f"<br><small>{e(r.reason)}</small>" if r.reason else ""
    return (
        f'<tr id="{dom_id("ro", rid)}" data-status="{e(r.status.value)}">'
        f'<td><a href="/rollouts/{e(rid)}">{e(rid)}</a></td>'
        f"<td>{e(r.plan.model.name)} v{r.plan.model.version}</td><td>{e(r.plan.target)}</td>"
        f'<td class="status">{badge(r.status.value)}{reason}</td>'
        f"<td>{min(r.wave + 1, len(r.plan.waves))}/{len(r.plan.waves)}</td>"
        f'<td class="progress"><progress max="{max(total, 1)}" value="{committed}"></progress> '
        f'<span class="committed">{committed}/{total}</span></td>'
        f'<td class="failed">{failed}</td><td>{when(created_at)}</td><td class="actions">{buttons}</td></tr>'
    )


def rollout_devices(r: ro.Rollout) -> str:
    """The devices of a rollout wave by wave (the detail page's live block)."""
    out = [f'<div id="{dom_id("rod", r.plan.id)}" class="waves">']
    for i, wave in enumerate(r.plan.waves):
        label = "canary" if i == 0 and r.plan.canary else f"wave {i + 1}"
        current = " current" if i == r.wave and r.status == ro.RolloutStatus.RUNNING else ""
        out.append(f'<section class="wave{current}"><h3>{e(label)} ({len(wave)} devices)</h3><table>')
        out.append("<tr><th>device</th><th>status</th><th>previous</th><th>reason</th></tr>")
        for d in wave:
            t = r.devices.get(d)
            if t is None:
                continue
            prev = f"{t.previous.name} v{t.previous.version}" if t.previous else "-"
            out.append(
                f'<tr data-device="{e(d)}"><td>{e(d)}</td><td class="status">{badge(t.status.value)}</td>'
                f"<td>{e(prev)}</td><td>{e(t.reason or '-')}</td></tr>"
            )
        out.append("</table></section>")
    if r.log:
        out.append("<details><summary>log</summary><ul>" + "".join(f"<li>{e(x)}</li>" for x in r.log[-50:]))
        out.append("</ul></details>")
    out.append("</div>")
    return "".join(out)


# -- alerts and audit -----------------------------------------------------------------------------------
def alert_row(a: dict[str, Any]) -> str:
    state = "firing" if a["active"] else "resolved"
    detail = a.get("summary") or ""
    return (
        f'<tr id="{dom_id("al", a["kind"] + "." + a["scope"])}" data-state="{state}">'
        f"<td>{badge(state)}</td><td>{e(a['kind'])}</td><td>{e(a['scope'])}</td>"
        f"<td>{when(float(a['opened']))}</td><td>{when(float(a['closed'] or 0))}</td><td>{e(detail)}</td></tr>"
    )


def alert_count(active: int) -> str:
    cls = "alerts-on" if active else "alerts-off"
    text = f"{active} active alert{'s' if active != 1 else ''}"
    return f'<a id="alert-count" class="{cls}" href="/drift#alerts">{text}</a>'
