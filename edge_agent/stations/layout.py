"""A device's station layout set remotely (docs/stations.md, docs/remote-config.md): pure rules over
plain dicts, no I/O but for the source probe handed in.

A layout document to a device with ``[[station]]`` tables carries one key, ``station``: the whole
list of stations, as the file writes it (absolute, like every document: an empty document means the
file's own stations). :func:`check_layout` refuses what no document may set, judged on what each
station changes from the file's station of the same name (a station copied from the file may keep
its identity and state keys); :func:`resolve_layout` validates the resulting device with the same
code the file goes through (:func:`firmware_configs.stations.derive_stations`: every station
complete, no shared state dir, file, port, camera or identity); :func:`plan_layout` says which
stations start, stop, restart or stay as they are; :func:`layout_problem` refuses a layout that
leaves no working station.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edge_agent.remote_config.errors import ConfigRefused
from edge_agent.remote_config.overlay import (
    Change,
    check_allowed,
    check_hostile,
    check_hosts,
    diff,
    flatten,
    is_path_key,
)
from edge_agent.remote_config.station import source_problem, station_problem
from edgeline.core.protocol.remote_config import LAYOUT_KEY, ConfigReason
from firmware_configs.errors import ConfigError
from firmware_configs.loader import parse_config
from firmware_configs.schema import DeviceConfig, SourceSection
from firmware_configs.stations import derive_stations, device_tables, merge_tables

#: keys of a station's table that are not a section laid over the device's
_OWN_KEYS = ("name", "groups")

Entries = list[dict[str, Any]]


@dataclass(frozen=True)
class LayoutPlan:
    """What going from one layout to another does to the station processes."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()

    @property
    def tried(self) -> tuple[str, ...]:
        """The stations that start with the new layout (their trial decides)."""
        return self.added + self.changed

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def describe(self) -> tuple[str, ...]:
        """``station[c]: added`` ..., as the config state reports the changes."""
        return (
            *(f"station[{n}]: added" for n in self.added),
            *(f"station[{n}]: removed" for n in self.removed),
            *(f"station[{n}]: changed" for n in self.changed),
        )


def by_name(entries: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(e.get("name")): dict(e) for e in entries}


def plan_layout(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> LayoutPlan:
    """A station whose table is the same in both is unchanged (its derived configuration is too: the
    device's tables are the file's in both)."""
    a, b = by_name(old), by_name(new)
    return LayoutPlan(
        added=tuple(n for n in b if n not in a),
        removed=tuple(n for n in a if n not in b),
        changed=tuple(n for n in b if n in a and a[n] != b[n]),
        unchanged=tuple(n for n in b if n in a and a[n] == b[n]),
    )


def file_entries(file_tables: Mapping[str, Any]) -> Entries:
    entries = file_tables.get(LAYOUT_KEY)
    return [dict(e) for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def layout_entries(overlay: Mapping[str, Any], file_tables: Mapping[str, Any]) -> Entries:
    """The stations a layout document asks for: its ``station`` list, or the file's own for an empty
    document (``--reset``). :class:`ConfigRefused` for anything but a station layout."""
    others = sorted(k for k in overlay if k != LAYOUT_KEY)
    if others:
        raise ConfigRefused(
            ConfigReason.FORBIDDEN,
            f"{others[0]}: a document to a device with stations carries its station layout (station) only; "
            "configure the stations with station:DEVICE/NAME or a group",
        )
    if LAYOUT_KEY not in overlay:
        return file_entries(file_tables)
    entries = overlay[LAYOUT_KEY]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigRefused(ConfigReason.BAD_DOCUMENT, "station: a station layout is a list of tables ([[station]])")
    if not entries:
        raise ConfigRefused(ConfigReason.NO_STATION, "the layout names no station: a device keeps at least one")
    for i, e in enumerate(entries):
        if not isinstance(e.get("name"), str):
            raise ConfigRefused(ConfigReason.INVALID, f"station[{i}].name: every station needs a name")
    return [dict(e) for e in entries]


def _delta(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, Any]:
    """The tables of ``after`` with only the keys whose value differs from ``before`` (all of them
    for a new station); ``name`` and ``groups`` left out (not sections)."""
    old = flatten({k: v for k, v in (before or {}).items() if k not in _OWN_KEYS})
    out: dict[str, Any] = {}
    for key, value in flatten({k: v for k, v in after.items() if k not in _OWN_KEYS}).items():
        if key in old and old[key] == value:
            continue
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            node = nxt if isinstance(nxt, dict) else {}
        node[parts[-1]] = value
    return out


def check_layout(
    entries: Sequence[Mapping[str, Any]],
    file_tables: Mapping[str, Any],
    roots: Iterable[str],
    hosts: set[str],
    protected: Iterable[str],
) -> None:
    """What a station's table changes from the file's station of the same name (everything, for a
    new station) passes the rules of a station's own document: no identity, fleet link, trust, slots,
    status or API keys, no command, paths under the allowed directories, sinks on the line."""
    mine = by_name(file_entries(file_tables))
    roots, protected = list(roots), list(protected)
    for e in entries:
        name = str(e.get("name"))
        delta = _delta(mine.get(name), e)
        try:
            check_allowed(delta)
            check_hostile(delta, roots, protected)
            check_hosts(delta, hosts)
        except ConfigRefused as exc:
            raise ConfigRefused(exc.reason, f"station[{name}].{exc.detail}") from exc


def layout_roots(file_tables: Mapping[str, Any], extra: Iterable[str]) -> list[str]:
    """Where a layout may name files: ``allowed_dirs`` and the directories of the sink and source
    paths the device's file uses, its stations' included."""
    import os

    roots = list(extra)
    device = device_tables(file_tables)
    for tables in (device, *(merge_tables(device, e) for e in file_entries(file_tables))):
        for key, value in flatten(tables).items():
            if isinstance(value, str) and (key.startswith("sinks.") or key == "source.path") and is_path_key(key):
                roots.append(os.path.dirname(value.rstrip("/")) or "/")
    return roots


def resolve_layout(
    file_tables: Mapping[str, Any], entries: Sequence[Mapping[str, Any]], origin: str
) -> dict[str, DeviceConfig]:
    """Every station of the device's file with ``entries`` as its station list, validated as the file
    is (:class:`ConfigRefused` ``invalid`` naming the station and the key)."""
    data = {**device_tables(file_tables), LAYOUT_KEY: [dict(e) for e in entries]}
    try:
        cfg = parse_config(data, origin)
        return derive_stations(device_tables(data), cfg, origin)
    except ConfigError as exc:
        raise ConfigRefused(ConfigReason.INVALID, str(exc)) from exc


def layout_problem(
    stations: Mapping[str, DeviceConfig],
    plan: LayoutPlan,
    probe: Callable[[SourceSection], str | None] = source_problem,
) -> str | None:
    """Why the layout leaves the device without a working station, or a station it starts that cannot
    work (no source that can deliver frames, no model slot), or None. Stations left as they are are
    not probed (a camera unplugged now is not this document's fault)."""
    problems = {
        name: why
        for name, cfg in stations.items()
        if (why := station_problem(cfg, name in plan.tried, probe) if name in plan.tried else None) is not None
    }
    if not stations or len(problems) == len(stations):
        shown = "; ".join(f"station[{n}]: {w}" for n, w in problems.items()) or "no station"
        return f"the layout leaves no working station ({shown})"
    if problems:
        name, why = next(iter(problems.items()))
        return f"station[{name}] would not work: {why}"
    return None


def layout_diff(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> list[Change]:
    """Station by station: ``station[c]`` added or removed, ``station[a].source.path`` changed."""
    a, b = by_name(old), by_name(new)
    out: list[Change] = []
    for name in sorted(set(a) | set(b)):
        if name not in a:
            out.append(Change(f"station[{name}]", None, b[name], had_old=False))
        elif name not in b:
            out.append(Change(f"station[{name}]", a[name], None, had_new=False))
        else:
            out += [
                Change(f"station[{name}].{c.key}", c.old, c.new, c.had_old, c.had_new) for c in diff(a[name], b[name])
            ]
    return out
