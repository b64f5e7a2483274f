"""Who the device is, as the fleet sees it: its id, hardware class and groups (what a deployment
manifest may target, and which desired-state topics it follows) and the agent's version. One
definition, used by the cloud link (birth, Will, subscriptions) and by the updater (target checks)."""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent import __version__


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: str
    hardware_class: str = "generic"
    #: in the configured order; any collection of names is taken (a frozenset too) and kept as a tuple
    groups: tuple[str, ...] = ()
    agent_version: str = __version__

    def __post_init__(self) -> None:
        if not isinstance(self.groups, tuple):
            object.__setattr__(self, "groups", tuple(self.groups))
