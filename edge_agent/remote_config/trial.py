"""The trial of an applied config, pure: the agent must stay healthy for ``trial_s`` and see at least
``trial_frames`` frames, within ``trial_timeout_s``. Fails closed: a source or agent that failed, a
sink the document changed that fails its writes, or no frames in time, is a failed trial."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from firmware_configs.remote_config_section import RemoteConfigSection


@dataclass(frozen=True)
class Health:
    """What a trial looks at, read from the agent's status document."""

    agent_state: str
    camera_state: str
    frames_in: int
    sink_errors: Mapping[str, int]

    @classmethod
    def of(cls, status: Mapping[str, Any]) -> Health:
        sinks = status.get("sinks") or {}
        return cls(
            agent_state=str(status.get("state", "")),
            camera_state=str((status.get("camera") or {}).get("state", "")),
            frames_in=int((status.get("frames") or {}).get("in", 0)),
            sink_errors={str(k): int(v.get("errors", 0)) for k, v in sinks.items() if isinstance(v, Mapping)},
        )


@dataclass
class ConfigTrial:
    version: int
    spec: RemoteConfigSection
    started: float
    first: Health
    #: sinks the document changed: their write errors fail the trial
    watched_sinks: frozenset[str] = field(default_factory=frozenset)

    def judge(self, now: float, health: Health) -> tuple[bool, str] | None:
        """None while undecided; (True, "") passed; (False, why) failed."""
        if health.agent_state == "FAILED" or health.camera_state == "FAILED":
            return False, f"the agent cannot run with it (agent {health.agent_state}, camera {health.camera_state})"
        for name in sorted(self.watched_sinks):
            grown = health.sink_errors.get(name, 0) - self.first.sink_errors.get(name, 0)
            if grown > 0:
                return False, f"sink {name} failed {grown} write(s) during the trial"
        elapsed = now - self.started
        frames = health.frames_in - self.first.frames_in
        if elapsed >= self.spec.trial_s and frames >= self.spec.trial_frames:
            return True, ""
        if elapsed >= self.spec.trial_timeout_s:
            return False, f"{frames} of {self.spec.trial_frames} frames in {elapsed:.1f} s"
        return None
