"""Line lighting: brightness offset, contrast gain and vignette, applied to any 8-bit image.

The same function renders a "darker line" for the drift scenario and augments training images when a
model is retrained for that line.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from converters.errors import DatasetError

#: ``augment(image, rng) -> image``: a training-time transformation of one raw frame.
Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Lighting:
    """``brightness`` is an offset in grey levels (-255..255); ``contrast`` a gain around mid-grey
    (1 = unchanged); ``vignette`` darkens the corners (0 = none, 0.5 = corners at half brightness)."""

    brightness: float = 0.0
    contrast: float = 1.0
    vignette: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.brightness) and -255.0 <= self.brightness <= 255.0):
            raise DatasetError(f"brightness {self.brightness} is outside -255..255")
        if not (math.isfinite(self.contrast) and 0.0 < self.contrast <= 10.0):
            raise DatasetError(f"contrast {self.contrast} must be in (0, 10]")
        if not (math.isfinite(self.vignette) and 0.0 <= self.vignette < 1.0):
            raise DatasetError(f"vignette {self.vignette} must be in [0, 1)")

    @property
    def is_identity(self) -> bool:
        return self.brightness == 0.0 and self.contrast == 1.0 and self.vignette == 0.0


def lighting_lut(brightness: float, contrast: float) -> np.ndarray:
    """The 256-entry table of :func:`apply_lighting`: ``(v - 128) * contrast + 128 + brightness``."""
    v = (np.arange(256, dtype=np.float32) - 128.0) * np.float32(contrast) + 128.0 + np.float32(brightness)
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _vignette_gain(w: int, h: int, strength: float) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xs - w / 2) / (w / 2)) ** 2 + ((ys - h / 2) / (h / 2)) ** 2
    gain = (1.0 - strength * np.clip(r2 / 2.0, 0.0, 1.0)).astype(np.float32)
    gain.setflags(write=False)
    return gain


def apply_lighting(
    img: np.ndarray, brightness: float = 0.0, contrast: float = 1.0, vignette: float = 0.0
) -> np.ndarray:
    """Shift brightness and scale contrast of an 8-bit image (grey or BGR). Returns a new image;
    values saturate at 0 and 255 as a camera's would."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.size == 0:
        raise DatasetError("apply_lighting needs a non-empty 8-bit image")
    Lighting(brightness, contrast, vignette)  # validates the values
    out: np.ndarray = cv2.LUT(img, lighting_lut(brightness, contrast))
    if vignette > 0:
        h, w = img.shape[:2]
        gain = _vignette_gain(w, h, float(vignette))
        if out.ndim == 3:
            gain = cv2.merge([gain] * out.shape[2])
        out = cv2.multiply(out, gain, dtype=cv2.CV_8U)
    return out


def lighting_augment(
    brightness: tuple[float, float] = (-50.0, 20.0), contrast: tuple[float, float] = (0.7, 1.1)
) -> Augment:
    """An augmentation for :func:`converters.pipeline.build_bundle`: each call draws a brightness
    offset and a contrast gain uniformly from the given ranges and applies them to the frame."""
    for b, c in zip(brightness, contrast, strict=True):
        Lighting(b, c)
    if brightness[0] > brightness[1] or contrast[0] > contrast[1]:
        raise DatasetError("augmentation ranges must be (low, high)")

    def augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return apply_lighting(img, float(rng.uniform(*brightness)), float(rng.uniform(*contrast)))

    augment.__qualname__ = f"lighting_augment(brightness={brightness}, contrast={contrast})"
    return augment
