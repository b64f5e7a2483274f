"""Rollout targets that name stations (docs/stations.md). Pure.

    device:ID[,ID...]        devices; a device known only through its stations means all of them
    station:DEV/ST[,...]     stations (``DEV~ST`` is accepted too); a bare ``DEV/ST`` is a station
    group:NAME               every unit (device or station) that announced the group

A station is its own unit (``<device>~<station>``): its own desired deployment, trial and fleet row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from edgeline.core.protocol.topics import STATION_SEPARATOR, check_unit, station_unit, unit_problem

TARGET_HELP = "group:NAME, device:ID[,ID...], station:DEVICE/STATION[,...] or DEVICE~STATION"


def parse_station(text: str) -> str:
    """``DEV/ST`` or ``DEV~ST`` -> the station's address; ValueError naming what is wrong."""
    device, sep, station = text.replace(STATION_SEPARATOR, "/", 1).partition("/")
    if not sep or not device or not station:
        raise ValueError(f"bad station {text!r}: use DEVICE/STATION")
    try:
        return station_unit(device, station)
    except Exception as exc:  # ProtocolError: the address names the bad part
        raise ValueError(f"bad station {text!r}: {exc}") from exc


def stations_of(device_id: str, known: Iterable[str]) -> list[str]:
    """The known stations of ``device_id`` (their addresses), sorted."""
    prefix = f"{device_id}{STATION_SEPARATOR}"
    return sorted(u for u in known if u.startswith(prefix))


def resolve_units(target: str, known: Iterable[str], members: Callable[[str], list[str]]) -> list[str]:
    """The units ``target`` names, in order, each once. ``known``: every unit the fleet view knows;
    ``members``: the units of a group."""
    kind, colon, value = target.partition(":")
    if not colon and ("/" in target or STATION_SEPARATOR in target):  # a bare DEV/ST or DEV~ST
        kind, value = "station", target
    known = list(known)
    out: list[str] = []
    if kind == "group" and value:
        out = members(value)
    elif kind == "station" and value:
        out = [parse_station(v) for v in value.split(",") if v]
    elif kind == "device" and value:
        for v in (v for v in value.split(",") if v):
            if "/" in v or STATION_SEPARATOR in v:
                out.append(parse_station(v))
                continue
            problem = unit_problem(v)
            if problem is not None:
                raise ValueError(f"bad device {v!r}: {problem}")
            stations = stations_of(v, known)
            out += ([v] if v in known or not stations else []) + stations
    else:
        raise ValueError(f"bad target {target!r}: use {TARGET_HELP}")
    if not out and kind != "group":
        raise ValueError(f"bad target {target!r}: it names nothing")
    return list(dict.fromkeys(check_unit(u) for u in out))
