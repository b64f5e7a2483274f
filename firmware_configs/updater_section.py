"""``[updater]``: model slots and the trial of a new model. Owned by the delivery work."""

from __future__ import annotations

from pydantic import Field

from firmware_configs.base import Section


class UpdaterSection(Section):
    state_dir: str = "/var/lib/edgeline"
    trust_file: str = "/etc/edgeline/trust.json"
    trial_frames: int = Field(default=20, ge=0)
    trial_timeout_s: float = Field(default=60.0, gt=0)
    trial_latency_budget_ms: float = Field(default=50.0, gt=0)
    max_artifact_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    min_free_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
