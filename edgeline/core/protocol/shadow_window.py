"""The ``shadow`` block of a telemetry window: the champion x challenger comparison as aggregates.

A device that runs a challenger beside its serving model (``[shadow]``, or a shadow deployment)
adds to each window it sends what the comparison counted over the window: the challenger's model,
frames compared and skipped, the verdict agreement matrix (champion verdict x challenger verdict),
the class pairs where the two disagreed, the challenger's confidence and anomaly-score histograms
(the same bins as the window's own), its latency percentiles, and the challenger's drift against
its own reference histograms. Like the rest of the window: fixed-length lists, bounded maps, ranged
counts; no field can carry a frame or a value per frame.

Under the window's Laplace noise the block says so (``noise_scale``: the Laplace scale ``b`` of
every count in it) and its counts are the noised counts **rounded but not clipped at 0**: the cloud
sums the agreement matrices and the other counts over windows, and a sum of noisy cells that are
mostly 0, each clipped at 0, is biased upwards by about ``b / 2`` per cell and window. With
``noise_scale`` a count may be negative, down to ``-NOISE_TAIL * noise_scale`` (as for
``field_metrics``); without it every count is ``>= 0``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from edgeline.core.protocol.field_window import MAX_NOISE_SCALE, NOISE_TAIL
from edgeline.core.protocol.model_ref import ModelRef
from edgeline.core.strict import Strict

VERDICTS: tuple[str, ...] = ("ok", "defect", "unknown")
#: Most (champion label, challenger label) pairs of disagreement a window may carry.
MAX_PAIRS = 64
#: The challenger's drift entries (it sees the champion's frames: its input statistics are the
#: champion's; what is its own is what it answered).
SHADOW_DRIFT_KEYS: tuple[str, ...] = ("confidence", "class_mix", "anomaly_score")
_LABEL = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_MAX_COUNT = 1_000_000_000
#: signed counts; the sign is checked against ``ShadowWindow.noise_scale``
_Count = Annotated[int, Field(ge=-_MAX_COUNT, le=_MAX_COUNT)]


class ShadowLatency(Strict):
    """The challenger's inspection time over the window's compared frames, milliseconds."""

    p50: float = Field(ge=0, le=1e7)
    p99: float = Field(ge=0, le=1e7)


class ShadowDrift(Strict):
    """PSI of one of the challenger's distributions against the challenger's own reference."""

    psi: float = Field(ge=0, le=1000)
    threshold: float = Field(ge=0, le=1000)
    drifted: bool


class ShadowWindow(Strict):
    challenger: ModelRef
    #: frames both models inspected
    compared: _Count
    #: frames offered to the challenger and not compared (sampled out, challenger busy, CPU budget
    #: spent, frame rate cap)
    skipped: _Count = 0
    #: frames the challenger failed to inspect
    errors: _Count = 0
    #: ``agreement[champion verdict][challenger verdict]``: frames (every verdict key present)
    agreement: dict[str, dict[str, _Count]]
    #: ``disagreement[champion label][challenger label]``: frames whose class labels differ
    disagreement: dict[str, dict[str, _Count]] = Field(default_factory=dict, max_length=MAX_PAIRS)
    #: the challenger's top-class confidence histogram (the window's ``confidence`` bins)
    confidence: list[_Count] = Field(min_length=10, max_length=10)
    #: the challenger's anomaly-score histogram (the window's ``anomaly_score`` bins), if it has one
    anomaly_score: list[_Count] | None = Field(default=None, min_length=20, max_length=20)
    latency_ms: ShadowLatency | None = None
    drift: dict[str, ShadowDrift] = Field(default_factory=dict, max_length=len(SHADOW_DRIFT_KEYS))
    #: the Laplace scale of the noise on every count of this block, or None when they are exact
    noise_scale: float | None = Field(default=None, gt=0, le=MAX_NOISE_SCALE)

    @field_validator("agreement")
    @classmethod
    def _matrix(cls, v: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        if set(v) != set(VERDICTS) or any(set(row) != set(VERDICTS) for row in v.values()):
            raise ValueError(f"the agreement matrix needs exactly the verdicts {', '.join(VERDICTS)} on both axes")
        return v

    @field_validator("disagreement")
    @classmethod
    def _pairs(cls, v: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        pairs = 0
        for a, row in v.items():
            for label in (a, *row):
                if not _LABEL.match(label):
                    raise ValueError(f"class label {label[:70]!r} is not 1-64 letters, digits, '_', '.', '-'")
            pairs += len(row)
        if pairs > MAX_PAIRS:
            raise ValueError(f"{pairs} class pairs of disagreement; at most {MAX_PAIRS}")
        return v

    @field_validator("drift")
    @classmethod
    def _drift(cls, v: dict[str, ShadowDrift]) -> dict[str, ShadowDrift]:
        for name in v:
            if name not in SHADOW_DRIFT_KEYS:
                raise ValueError(f"unknown shadow drift entry {name[:40]!r} (known: {', '.join(SHADOW_DRIFT_KEYS)})")
        return v

    @model_validator(mode="after")
    def _signs(self) -> ShadowWindow:
        floor = 0 if self.noise_scale is None else -math.ceil(NOISE_TAIL * self.noise_scale)
        for name, value in self.counts():
            if value < floor:
                why = "without noise_scale" if self.noise_scale is None else f"below -{NOISE_TAIL} x noise_scale"
                raise ValueError(f"shadow.{name} = {value} is negative {why}")
        return self

    def counts(self) -> Iterator[tuple[str, int]]:
        """Every count of the block with its name (negative ones only under noise)."""
        yield "compared", self.compared
        yield "skipped", self.skipped
        yield "errors", self.errors
        for a, row in self.agreement.items():
            for b, n in row.items():
                yield f"agreement.{a}.{b}", n
        for a, row in self.disagreement.items():
            for b, n in row.items():
                yield f"disagreement.{a}.{b}", n
        for i, n in enumerate(self.confidence):
            yield f"confidence.{i}", n
        for i, n in enumerate(self.anomaly_score or ()):
            yield f"anomaly_score.{i}", n

    @property
    def agreed(self) -> int:
        return sum(self.agreement[v][v] for v in VERDICTS)


__all__ = ["MAX_PAIRS", "SHADOW_DRIFT_KEYS", "VERDICTS", "ShadowDrift", "ShadowLatency", "ShadowWindow"]
