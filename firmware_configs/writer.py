"""Write a device config as TOML text: the inverse of :func:`firmware_configs.loader.parse_toml` for
the values a config holds (strings, booleans, numbers and flat arrays of them, in dotted-name tables
such as ``[sinks.jsonl]``)."""

from __future__ import annotations

import json
from typing import Any


def toml_value(v: Any) -> str:
    """One value in TOML syntax: JSON string syntax is valid TOML basic-string syntax."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def render_toml(sections: dict[str, dict[str, Any]], comment: str = "") -> str:
    """``{"device": {"id": "dev-1"}, "sinks.jsonl": {...}}`` as TOML tables, in that order, under
    ``comment`` (each of its lines a ``#`` comment)."""
    out = [f"# {line}" for line in comment.splitlines()] + ([""] if comment else [])
    for name, values in sections.items():
        out.append(f"[{name}]")
        out += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        out.append("")
    return "\n".join(out)


def render_stations(stations: list[tuple[str, dict[str, dict[str, Any]]]]) -> str:
    """``[[station]]`` tables: ``[("left", {"source": {...}, "sinks.jsonl": {...}})]``, each station's
    name first and its own tables (dotted names under ``station.``) after it."""
    out: list[str] = []
    for name, sections in stations:
        out += ["[[station]]", f"name = {toml_value(name)}"]
        out += [f"{k} = {toml_value(v)}" for k, v in sections.get("", {}).items()]
        out.append("")
        for section, values in sections.items():
            if section:
                out.append(f"[station.{section}]")
                out += [f"{k} = {toml_value(v)}" for k, v in values.items()]
                out.append("")
    return "\n".join(out)
