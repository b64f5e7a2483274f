"""The preprocessing spec of a manifest: how a frame becomes the model's input, as data.

Part of the signed :class:`~edgeline.core.protocol.manifest.Manifest` (its ``preprocessing``);
interpreted by :mod:`edge_agent.preprocessing` for training and serving alike: the crop, the colour,
the size, the part's registration (centring, the axis, the angle search) and the features.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgeline.core.strict import Strict

#: angle samples of an :class:`AngleSearch` template (3 degrees apart)
SEARCH_ANGLES = 120


class AngleSearch(Strict):
    """Turn the part to the angle of good parts by matching its polar intensity profile.

    After the part is centred (and, with ``rigid``, turned by its axis), the output image is sampled
    on :data:`SEARCH_ANGLES` rays by ``rings`` rings out to half its smaller side (the innermost
    ``skip`` rings dropped); each ring made zero-mean. Its circular cross-correlation with
    ``template`` (the same profile averaged over aligned good parts, ``SEARCH_ANGLES`` x
    ``rings - skip`` values) peaks at the turn that best matches; only turns within ``±range``
    degrees are considered. For parts with no principal axis (a flange, a disc) this is the only
    rotation correction; for others a refinement of the axis."""

    range: float = Field(gt=0.0, le=180.0)
    rings: int = Field(default=14, ge=4, le=64)
    skip: int = Field(default=2, ge=0, le=16)
    template: tuple[tuple[float, ...], ...]

    @field_validator("template")
    @classmethod
    def _template(cls, v: tuple[tuple[float, ...], ...]) -> tuple[tuple[float, ...], ...]:
        if len(v) != SEARCH_ANGLES:
            raise ValueError(f"angle-search template must have {SEARCH_ANGLES} rows (one per angle), got {len(v)}")
        widths = {len(row) for row in v}
        if len(widths) != 1 or not 1 <= next(iter(widths)) <= 64:
            raise ValueError("angle-search template rows must all have the same length, 1 to 64 rings")
        if not all(math.isfinite(x) for row in v for x in row):
            raise ValueError("angle-search template values must be finite")
        return v

    @model_validator(mode="after")
    def _shape(self) -> AngleSearch:
        if self.skip >= self.rings:
            raise ValueError("angle search must keep at least one ring (skip < rings)")
        if len(self.template[0]) != self.rings - self.skip:
            raise ValueError(f"angle-search template rows must have rings - skip = {self.rings - self.skip} values")
        return self


class Registration(Strict):
    """Locate the part in the (ROI-cropped) image and align it before features.

    The image is resized so that ``window`` (fractions of its width and height: the part plus a
    margin, measured on good parts at training) becomes the output ``size``; the part's silhouette
    (pixels that differ from the border's median by more than an Otsu threshold, at least
    ``min_contrast`` grey levels) gives its centre and principal-axis angle; the output is the window
    centred on the part and, with ``rigid``, turned so the part's axis lies at ``reference_angle``
    (only while the deviation is within ``max_angle``: beyond it the axis is ambiguous). ``area`` is
    the range of the silhouette's share of the resized image seen on good training parts; a frame
    outside ``area_tolerance`` times that range, or with no silhouette at all, is not a part this
    model knows (verdict ``unknown``)."""

    mode: Literal["translate", "rigid"] = "translate"
    window: tuple[float, float] = (1.0, 1.0)
    reference_angle: float = Field(default=0.0, ge=-90.0, le=90.0)
    max_angle: float = Field(default=30.0, ge=0.0, le=90.0)
    min_contrast: float = Field(default=15.0, ge=1.0, le=255.0)
    area: tuple[float, float] = (0.0, 1.0)
    area_tolerance: float = Field(default=1.5, ge=1.0, le=10.0)
    #: after centring (and the axis): turn by matching the polar profile of good parts
    search: AngleSearch | None = None
    #: how the ROI image is shrunk to the working size: ``area`` (OpenCV's INTER_AREA at any
    #: factor) or ``box`` (a box filter by the largest whole factor, then linear to the exact size:
    #: near the same image, 5-7x faster on a 320x240 frame)
    resample: Literal["area", "box"] = "area"

    @field_validator("window")
    @classmethod
    def _window(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.05 <= f <= 1.0 for f in v):
            raise ValueError("registration window must be fractions between 0.05 and 1")
        return v

    @field_validator("area")
    @classmethod
    def _area(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0.0 <= v[0] <= v[1] <= 1.0):
            raise ValueError("registration area must be [low, high] fractions with low <= high")
        return v


class PreprocessSpec(Strict):
    """Image preprocessing as data. Interpreted by :mod:`edge_agent.preprocessing`, for training and serving.

    ``roi`` is relative to the frame: ``[x, y, w, h]`` as fractions in [0, 1], so a profile survives a
    change of camera resolution.
    """

    color: Literal["gray", "bgr", "rgb"] = "gray"
    roi: tuple[float, float, float, float] | None = None
    size: tuple[int, int] = (64, 64)  # (width, height) after ROI crop and resize
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    #: "pixels": the resized image pooled to ``pixel_pool`` and flattened;
    #: "hog": an OpenCV HOG descriptor of the resized image; "pixels+hog": both, concatenated;
    #: "tensor": the normalised image as an NCHW float tensor (for CNNs brought with ``edgeline import``).
    features: Literal["pixels", "hog", "pixels+hog", "tensor"] = "pixels+hog"
    pixel_pool: tuple[int, int] = (32, 32)
    hog_cell: int = Field(default=8, ge=4, le=32)
    hog_bins: int = Field(default=9, ge=4, le=18)
    #: locate and align the part before features (None: the ROI as it is)
    registration: Registration | None = None
    #: "fixed": ``(x * scale - mean) / std``; "per_image": each pooled image standardised to zero mean
    #: and unit variance first (robust to the line's brightness and contrast), then as "fixed"
    normalize: Literal["fixed", "per_image"] = "fixed"

    @field_validator("roi")
    @classmethod
    def _roi_inside(cls, v: tuple[float, float, float, float] | None) -> Any:
        if v is None:
            return v
        x, y, w, h = v
        if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 and 0 < h <= 1 and x + w <= 1.0001 and y + h <= 1.0001):
            raise ValueError("roi must be [x, y, w, h] fractions inside the frame")
        return v

    @field_validator("size", "pixel_pool")
    @classmethod
    def _positive(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 1 or max(v) > 4096:
            raise ValueError("sizes must be between 1 and 4096 pixels")
        return v

    @model_validator(mode="after")
    def _channels(self) -> PreprocessSpec:
        channels = 1 if self.color == "gray" else 3
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) not in (1, channels):
                raise ValueError(f"{name} needs 1 or {channels} values for color {self.color!r}")
        if any(s == 0 for s in self.std):
            raise ValueError("std values must be non-zero")
        if "hog" in self.features and self.color != "gray":
            raise ValueError("hog features need color 'gray'")
        if "hog" in self.features and (self.size[0] % self.hog_cell or self.size[1] % self.hog_cell):
            raise ValueError("hog needs size divisible by hog_cell")
        return self


__all__ = ["SEARCH_ANGLES", "AngleSearch", "PreprocessSpec", "Registration"]
