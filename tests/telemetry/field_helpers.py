"""Telemetry windows with field metrics, built by hand for the cloud-side field tests."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from edgeline.core.protocol.field_window import SCORE_BINS, FeedbackCells, FieldMetrics, FieldVersion
from edgeline.core.protocol.model_ref import ModelRef
from edgeline.core.protocol.telemetry import STAT_BINS, TelemetryWindow

SHA = "d" * 64
DAY0 = 1_764_547_200.0  # 2025-12-01 00:00 UTC


def bins(at: Mapping[int, int] | None = None) -> list[int]:
    out = [0] * SCORE_BINS
    for b, n in (at or {}).items():
        out[b] = n
    return out


def cells(
    pass_ok: Mapping[int, int] | None = None,
    pass_defect: Mapping[int, int] | None = None,
    reject_ok: Mapping[int, int] | None = None,
    reject_defect: Mapping[int, int] | None = None,
    unknown_ok: int = 0,
    unknown_defect: int = 0,
) -> FeedbackCells:
    return FeedbackCells(
        pass_ok=bins(pass_ok),
        pass_defect=bins(pass_defect),
        reject_ok=bins(reject_ok),
        reject_defect=bins(reject_defect),
        unknown_ok=unknown_ok,
        unknown_defect=unknown_defect,
    )


def brightness_hist(mean: float, n: int) -> list[int]:
    h = [0] * STAT_BINS
    h[min(STAT_BINS - 1, int(mean * STAT_BINS))] = n
    return h


def window(
    *,
    device: str = "a" * 32,
    group: str | None = "hall-1",
    version: int = 1,
    start: float = DAY0 + 8 * 3600,
    frames: int | None = None,
    score_pass: Mapping[int, int] | None = None,
    score_reject: Mapping[int, int] | None = None,
    unknown: int = 0,
    feedback: Sequence[tuple[int, FeedbackCells, FeedbackCells | None]] = (),
    brightness: float | None = None,
    model: str = "plates",
) -> TelemetryWindow:
    sp, sr = bins(score_pass), bins(score_reject)
    n = frames if frames is not None else sum(sp) + sum(sr) + unknown
    fm = FieldMetrics(
        score_pass=sp,
        score_reject=sr,
        feedback=[FieldVersion(model=model, version=v, added=a, retracted=r) for v, a, r in feedback],
    )
    counts = {"ok": sum(sp), "defect": sum(sr)} | ({"unknown": unknown} if unknown else {})
    return TelemetryWindow(
        key=uuid.uuid4().hex,
        device=device,
        group=group,
        model=ModelRef(name=model, version=version, sha256=SHA),
        start=start,
        end=start + 60.0,
        frames=n,
        class_counts=counts,
        confidence=[0] * 9 + [n],
        input_stats={"brightness": brightness_hist(brightness, n)} if brightness is not None else {},
        stats_frames=n if brightness is not None else 0,
        field_metrics=fm,
    )
