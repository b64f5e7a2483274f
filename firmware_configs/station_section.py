"""``[[station]]``: one inspection station of a device (docs/stations.md).

A station names itself and gives only the sections that differ from the device file; each table it
gives is laid over the device's table of the same name, key by key (``[station.source] url = ...``
keeps the device's ``[source]`` timeouts). The tables are checked here for shape only; the station's
whole configuration is validated when it is derived (:mod:`firmware_configs.stations`), so an error
names the station and the key.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from edgeline.core.protocol.topics import SEGMENT_PATTERN, segment_problem
from firmware_configs.base import Section

#: the sections a station may set for itself; everything else (device identity, remote config) is
#: the device's. ``cloud`` is there for the station's own broker identity (username/password_file or
#: tls cert_file/key_file): a station connects as ``<device>~<station>``
STATION_TABLES = (
    "source",
    "model",
    "inference",
    "sinks",
    "status",
    "api",
    "updater",
    "telemetry",
    "trigger",
    "line",
    "feedback",
    "shadow",
    "decision",
    "cloud",
)
#: at most this many stations on one device (each is a process with its own camera and model)
MAX_STATIONS = 16

Table = dict[str, Any]


class StationSection(Section):
    name: str = Field(pattern=SEGMENT_PATTERN)
    #: the station's groups instead of the device's (a group rollout reaches the stations in it)
    groups: tuple[str, ...] | None = None
    source: Table | None = None
    model: Table | None = None
    inference: Table | None = None
    sinks: Table | None = None
    status: Table | None = None
    api: Table | None = None
    updater: Table | None = None
    telemetry: Table | None = None
    trigger: Table | None = None
    line: Table | None = None
    feedback: Table | None = None
    shadow: Table | None = None
    decision: Table | None = None
    cloud: Table | None = None

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for g in v or ():
            problem = segment_problem(g)
            if problem is not None:
                raise ValueError(f"group {g!r} {problem}")
        if v is not None and len(set(v)) != len(v):
            raise ValueError("groups must not repeat")
        return v

    def overrides(self) -> dict[str, Table]:
        """The tables this station gives, by section name."""
        return {name: table for name in STATION_TABLES if (table := getattr(self, name)) is not None}


def check_station_list(stations: tuple[StationSection, ...]) -> tuple[StationSection, ...]:
    """Names unique (case-insensitively too: they become directories), at most :data:`MAX_STATIONS`."""
    if len(stations) > MAX_STATIONS:
        raise ValueError(f"{len(stations)} stations; at most {MAX_STATIONS} on one device")
    seen: dict[str, int] = {}
    for i, st in enumerate(stations):
        key = st.name.lower()
        if key in seen:
            first = stations[seen[key]].name
            same = "is" if first == st.name else f"differs only in case from {first!r}, which is"
            raise ValueError(
                f"station name {st.name!r} {same} already used by station {seen[key] + 1} (names must be unique)"
            )
        seen[key] = i
    return stations
