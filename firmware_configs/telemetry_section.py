"""``[telemetry]``: metrics windows, privacy, drift alarm and the outbox. Owned by the telemetry work.

Meaning of every key: docs/privacy.md (windows, k, epsilon, pseudonyms) and docs/drift.md (drift and
the local alarm). Defaults suit a line at 1-10 parts per second with a cloud link that may be down
for days.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from firmware_configs.base import Section


class TelemetrySection(Section):
    enabled: bool = True
    #: a window closes after this many seconds ...
    window_s: float = Field(default=60.0, gt=0, le=86400.0)
    #: ... or after this many frames (0 = by time only)
    window_frames: int = Field(default=0, ge=0, le=10_000_000)
    #: k: a window with fewer frames is not sent but merged into the next one
    min_frames: int = Field(default=20, ge=1, le=1_000_000)
    #: a pending (too small) window of a model no longer served is suppressed after this long
    pending_max_age_s: float = Field(default=7 * 86400.0, gt=0)
    #: Laplace noise on every count with this epsilon per window (None = exact counts)
    epsilon: float | None = Field(default=None, gt=0, le=100)
    #: most frames one protected unit (a part, a batch) may contribute to a window; scales the noise
    contribution_frames: int = Field(default=1, ge=1, le=100_000)
    #: the fleet's pseudonym secret (hex or raw, >= 16 bytes). Required when telemetry is enabled.
    pseudonym_key_file: str | None = None
    #: the outbox database; default: ``<updater.state_dir>/outbox.db``
    outbox_path: str | None = None
    outbox_max_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    outbox_ttl_s: float = Field(default=14 * 86400.0, gt=0)
    drop_policy: Literal["oldest-telemetry-first", "refuse-new-telemetry"] = "oldest-telemetry-first"
    #: a window the broker acknowledged but the ingest has not confirmed goes again after this long
    #: (doubling per send up to ``ack_resend_max_s``), and after every reconnect
    ack_resend_s: float = Field(default=30.0, gt=0, le=86400.0)
    ack_resend_max_s: float = Field(default=900.0, gt=0, le=7 * 86400.0)
    #: until an ingest has confirmed anything (an ingest without acknowledgements), a window is
    #: deleted after this many sends the broker acknowledged
    ack_unconfirmed_sends: int = Field(default=3, ge=1, le=1000)
    #: drift: per-window false-alarm quantile of the calibrated threshold, and the PSI floor
    drift_quantile: float = Field(default=0.995, gt=0.5, lt=1.0)
    drift_floor: float = Field(default=0.1, ge=0.0, le=10.0)
    #: local alarm: an episode starts when ``alarm_need`` of the last ``alarm_of`` windows drifted,
    #: and ends after ``alarm_clear`` clean windows in a row
    alarm_need: int = Field(default=3, ge=1, le=100)
    alarm_of: int = Field(default=4, ge=1, le=100)
    alarm_clear: int = Field(default=3, ge=1, le=100)
    #: telemetry topic partitions (docs/protocol.md): 0 publishes on ``devices/<id>/telemetry``; N >= 1 on
    #: ``devices/<id>/telemetry/<p>``, p from the device's pseudonym, so N ingest workers split the fleet
    #: on any broker. Must match the ingest's ``--partitions``.
    partitions: int = Field(default=0, ge=0, le=4096)
    #: how often the worker closes timed-out windows and drains the outbox (real seconds)
    tick_s: float = Field(default=1.0, gt=0, le=3600.0)

    @model_validator(mode="after")
    def _alarm_rule(self) -> TelemetrySection:
        if self.alarm_need > self.alarm_of:
            raise ValueError("alarm_need must not exceed alarm_of")
        if self.ack_resend_max_s < self.ack_resend_s:
            raise ValueError("ack_resend_max_s must not be below ack_resend_s")
        return self
