"""``[feedback]``: operator feedback at the station (a verdict confirmed or overridden by result id or
part id), stored durably on the device with the verdict it corrects. Channels and page: docs/line.md."""

from __future__ import annotations

from pydantic import Field, field_validator

from firmware_configs.base import Section


class FeedbackSection(Section):
    """``[feedback]``. Triggered results carry a result id and a part id to give feedback on; with
    ``[feedback]`` on, a free-run verdict carries a result id too (``<device>-<boot>-f<frame_id>``,
    no part id)."""

    enabled: bool = False
    #: the SQLite file (WAL, fsync'd commits); default: ``<updater.state_dir>/feedback.db``
    path: str | None = None
    #: the recent-results index: the last N results feedback can name (oldest forgotten first)
    keep_results: int = Field(default=2000, ge=10, le=1_000_000)
    #: feedback rows kept (each with a copy of the verdict it corrects); beyond, the oldest go, counted
    max_feedback: int = Field(default=100_000, ge=10, le=10_000_000)
    #: results listed on the station page (``GET /station``)
    page_results: int = Field(default=20, ge=1, le=200)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("feedback.path must be a file path (omit it for <updater.state_dir>/feedback.db)")
        return v
