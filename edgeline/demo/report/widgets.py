"""Small HTML building blocks of the report: escaping, percentages, tables, figures, cards."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any


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
