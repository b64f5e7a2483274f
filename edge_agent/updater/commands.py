"""What the updater's worker thread is asked to do. MQTT handlers, the chunk download and the
inference thread never touch the updater's record: they put one of these on the worker's queue."""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.updater.machine import Resume


@dataclass(frozen=True)
class Desired:
    """A desired-state message arrived (a deployment offer, or a cleared one)."""

    payload: bytes
    retained: bool


@dataclass(frozen=True)
class Revocations:
    """The fleet's revocation list arrived."""

    payload: bytes


@dataclass(frozen=True)
class ResumeStep:
    """After a restart: take up the interrupted deployment at ``step``."""

    step: Resume


@dataclass(frozen=True)
class Downloaded:
    """The download of deployment ``sequence`` has every chunk."""

    sequence: int


@dataclass(frozen=True)
class DownloadFailed:
    """The download of deployment ``sequence`` failed for good."""

    sequence: int
    reason: str
    detail: str


@dataclass(frozen=True)
class Judge:
    """The trial has its frames: judge it now rather than at the next poll."""


@dataclass(frozen=True)
class Stop:
    """End the worker."""


Command = Desired | Revocations | ResumeStep | Downloaded | DownloadFailed | Judge | Stop
