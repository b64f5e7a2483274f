"""The station page (``GET /station``), rendered on the server: plain HTML, no script, no external
asset. Pure: rows and a page token in, a page out. Every value shown is escaped; a form per result posts
to ``/station/feedback`` with the page token (a cross-site form cannot know it)."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

STYLE = (
    "body{font:16px system-ui,sans-serif;margin:1em;background:#fafafa}table{border-collapse:collapse;width:100%}"
    "th,td{padding:.35em .5em;border-bottom:1px solid #ccc;text-align:left}td.defect{color:#a00;font-weight:600}"
    "td.ok{color:#070}form{display:inline}button{font-size:15px;margin:0 .15em;padding:.3em .7em}"
    ".note{padding:.5em;margin:.5em 0;background:#eef}.bad{background:#fdd}"
)
#: content security policy of the page: nothing but itself and its own inline style
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _when(ts: Any) -> str:
    try:
        return time.strftime("%H:%M:%S", time.localtime(float(ts)))
    except (TypeError, ValueError, OverflowError, OSError):
        return "-"


def _row(r: dict[str, Any], token: str, by: str, labels: Sequence[str]) -> str:
    verdict = r.get("verdict")
    conf = r.get("confidence")
    cells = [
        f"<td>{_e(r.get('part_id'))}</td>",
        f'<td class="{_e(verdict)}">{_e(verdict or r.get("state"))}</td>',
        f"<td>{_e(r.get('label') or '-')}</td>",
        f"<td>{'-' if conf is None else f'{float(conf):.3f}'}</td>",
        f"<td>{_when(r.get('ts'))}</td>",
    ]
    truth = r.get("truth")
    given = "" if truth is None else f"{_e(truth)}" + (f" ({_e(r.get('by'))})" if r.get("by") else "")
    cells.append(f"<td>{given}</td>")
    if verdict is None:
        cells.append("<td></td>")
    else:
        hidden = (
            f'<input type="hidden" name="result_id" value="{_e(r.get("result_id"))}">'
            f'<input type="hidden" name="token" value="{_e(token)}"><input type="hidden" name="by" value="{_e(by)}">'
        )
        buttons = "".join(
            f'<button name="truth" value="{v}">{label}</button>'
            for v, label in (("confirm", "Confirm"), ("ok", "Override: OK"), ("defect", "Override: defect"))
            if not (v == "confirm" and verdict not in ("ok", "defect"))
        )
        classes = ""
        if labels:
            options = "".join(f'<option value="{_e(x)}">{_e(x)}</option>' for x in labels)
            classes = f'<select name="label">{options}</select><button name="truth" value="label">Set class</button>'
        cells.append(f'<td><form method="post" action="/station/feedback">{hidden}{buttons}{classes}</form></td>')
    return "<tr>" + "".join(cells) + "</tr>"


def render(
    device_id: str,
    rows: Sequence[dict[str, Any]],
    token: str,
    *,
    by: str = "",
    note: str = "",
    note_bad: bool = False,
    labels: Sequence[str] = (),
) -> str:
    """The page: an operator field (kept in the address, ``?by=``), a notice, the last results."""
    body = "".join(_row(r, token, by, labels) for r in rows) or '<tr><td colspan="7">no results yet</td></tr>'
    notice = f'<p class="note{" bad" if note_bad else ""}">{_e(note)}</p>' if note else ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>Station {_e(device_id)}</title><style>{STYLE}</style></head><body>"
        f"<h1>Station {_e(device_id)}</h1>"
        '<form method="get" action="/station"><label>Operator '
        f'<input name="by" value="{_e(by)}" maxlength="64"></label> <button>Set</button></form>'
        f'{notice}<p><a href="/station{"?by=" + quote(by) if by else ""}">Refresh</a></p>'
        "<table><thead><tr><th>Part</th><th>Verdict</th><th>Class</th><th>Confidence</th><th>Time</th>"
        f"<th>Feedback</th><th></th></tr></thead><tbody>{body}</tbody></table></body></html>"
    )
