"""``[supervisor]``: how the station supervisor tells a hung station from a slow one (docs/stations.md).

Only a device file with ``[[station]]`` tables runs a supervisor; the section is the device's (a
station cannot set it). Each station process proves that its inspection loop runs: the loop counts
its rounds (one per frame, and one every half second while no frame or trigger comes) and the
status file carries the count. A station whose count stops for ``hang_timeout_s`` while it runs, or
that shows no count at all ``start_timeout_s`` after its start, is hung: SIGTERM, SIGKILL after
``kill_after_s``, then started again under the restart backoff.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from firmware_configs.base import Section

if TYPE_CHECKING:
    from firmware_configs.schema import DeviceConfig

MIN_HANG_TIMEOUT_S = 2.0
#: the status file must be rewritten at least this many times within ``hang_timeout_s``
STATUS_WRITES_PER_TIMEOUT = 3


class SupervisorSection(Section):
    #: a running station whose loop shows no new round for this long is hung; 0 turns the watch off
    hang_timeout_s: float = Field(default=30.0, ge=0.0, le=3600.0)
    #: a station started (or restarting itself) gets this long to show its first round
    start_timeout_s: float = Field(default=120.0, ge=5.0, le=3600.0)
    #: a hung station gets SIGTERM, then SIGKILL after this long
    kill_after_s: float = Field(default=10.0, gt=0.0, le=600.0)

    @field_validator("hang_timeout_s")
    @classmethod
    def _hang_timeout(cls, v: float) -> float:
        if 0 < v < MIN_HANG_TIMEOUT_S:
            raise ValueError(
                f"must be 0 (off) or at least {MIN_HANG_TIMEOUT_S:g} s (an idle loop counts a round every 0.5 s)"
            )
        return v


def liveness_problems(section: SupervisorSection, stations: Mapping[str, DeviceConfig]) -> list[Any]:
    """A hang timeout shorter than a few status writes of a station would kill a healthy station (the
    supervisor reads the loop's rounds from its status file): one problem per such station."""
    from firmware_configs.loader import Problem

    timeout = section.hang_timeout_s
    if timeout == 0:
        return []
    problems: list[Problem] = []
    for name, cfg in stations.items():
        need = STATUS_WRITES_PER_TIMEOUT * cfg.status.interval_s
        if timeout < need:
            problems.append(
                Problem(
                    f"station[{name}].status.interval_s",
                    cfg.status.interval_s,
                    f"the supervisor reads the station's loop rounds from its status file: supervisor.hang_timeout_s "
                    f"({timeout:g} s) must be at least {STATUS_WRITES_PER_TIMEOUT}x status.interval_s ({need:g} s); "
                    "raise it, or write the status more often",
                )
            )
    return problems
