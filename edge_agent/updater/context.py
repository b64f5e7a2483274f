"""What the parts of the updater share: its wiring (:class:`UpdaterContext`: configuration, identity,
link, slots on disk, trust, clock, the agent) and the working state of the deployment in progress
(:class:`InFlight`: its envelope and manifest, the download, an offer deferred by a trial, the phase
timings)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge_agent.identity import DeviceIdentity
from edge_agent.plugins import AgentHandle
from edge_agent.updater import machine as m
from edge_agent.updater.download import ChunkDownload
from edge_agent.updater.link import UpdaterLink
from edge_agent.updater.slots import SlotDisk
from edgeline.core.protocol.manifest import Manifest
from edgeline.core.protocol.signing import Envelope, TrustStore
from firmware_configs.updater_section import UpdaterSection


@dataclass
class UpdaterContext:
    cfg: UpdaterSection
    me: DeviceIdentity
    link: UpdaterLink
    disk: SlotDisk
    trust: TrustStore
    limits: m.Limits
    clock: Callable[[], float]
    free_disk: Callable[[Path], int]
    threads: int
    #: set when the plugin starts
    agent: AgentHandle | None = None


@dataclass
class InFlight:
    envelope: Envelope | None = None
    manifest: Manifest | None = None
    download: ChunkDownload | None = None
    #: the last download, kept for its progress and statistics after it ended
    last_download: ChunkDownload | None = None
    #: an offer that came during a trial, taken up when the trial ends
    deferred: tuple[bytes, bool] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    mark: float = field(default_factory=time.monotonic)

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.timings[phase] = round(now - self.mark, 6)
        self.mark = now

    def restart_timings(self) -> None:
        self.timings, self.mark = {}, time.monotonic()
