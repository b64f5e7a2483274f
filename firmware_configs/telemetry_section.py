"""``[telemetry]``: metrics windows, privacy and the outbox. Owned by the telemetry work."""

from __future__ import annotations

from pydantic import Field

from firmware_configs.base import Section


class TelemetrySection(Section):
    enabled: bool = True
    window_s: float = Field(default=60.0, gt=0)
    window_frames: int = Field(default=0, ge=0)
    min_frames: int = Field(default=20, ge=1)
    epsilon: float | None = Field(default=None, gt=0)
    pseudonym_key_file: str | None = None
    outbox_max_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    outbox_ttl_s: float = Field(default=14 * 86400.0, gt=0)
