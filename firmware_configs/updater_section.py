"""``[updater]``: model slots and the trial of a new model. Owned by the delivery work."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from firmware_configs.base import Section

UpdaterStateName = Literal["DOWNLOADING", "VERIFIED", "STAGED", "TRIAL", "COMMITTED", "ROLLED_BACK"]


class FaultSection(Section):
    """``[updater.faults]``: deterministic fault injection for crash and resume tests. Empty in production.

    ``pause_at`` blocks the updater right after it has persisted that state (so a test can SIGKILL the
    process there); ``crash_at`` kills the process itself with SIGKILL at that point;
    ``pause_after_chunks`` holds the download for ``pause_s`` seconds once that many chunks are on disk.
    """

    pause_at: UpdaterStateName | None = None
    crash_at: UpdaterStateName | None = None
    pause_after_chunks: int | None = Field(default=None, ge=1)
    pause_s: float = Field(default=3600.0, gt=0)


class UpdaterSection(Section):
    enabled: bool = True
    state_dir: str = "/var/lib/edgeline"
    trust_file: str = "/etc/edgeline/trust.json"
    #: live frames the new model must serve during its trial (0: self-test only)
    trial_frames: int = Field(default=20, ge=0)
    #: the trial fails (and rolls back) when it has not seen ``trial_frames`` frames by then: it fails closed
    trial_timeout_s: float = Field(default=60.0, gt=0)
    #: p95 latency of the trial frames must stay within this budget
    trial_latency_budget_ms: float = Field(default=50.0, gt=0)
    #: inference errors tolerated during the trial
    trial_max_errors: int = Field(default=0, ge=0)
    max_artifact_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    #: free space that must remain after the artifact is written
    min_free_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    #: chunk topics subscribed at once (flow control: at most this many chunks in flight)
    chunk_window: int = Field(default=16, ge=1, le=1024)
    faults: FaultSection = FaultSection()

    @model_validator(mode="after")
    def _faults(self) -> UpdaterSection:
        if self.faults.pause_at and self.faults.crash_at:
            raise ValueError("faults.pause_at and faults.crash_at are exclusive")
        return self
