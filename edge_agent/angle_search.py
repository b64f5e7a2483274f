"""The turn that makes a centred part look like good parts: polar profile and circular correlation.

Parts with no principal axis (a disc with bolt holes, a flange) cannot be turned back by image
moments, and the axis of others is only as good as their silhouette. Sampling the centred image on
rays and rings gives a profile in which a turn of the part is a circular shift along the angle axis;
the shift that best correlates with the good parts' averaged profile (the manifest's template) is
the turn to undo. One ``cv2.remap`` of the small output image (its sampling map computed once) and
one DFT along 120 angles: tens of microseconds per frame. Pure numpy and OpenCV; the training side
fits the template with :func:`fit_template` on the same code.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import cv2
import numpy as np

from edgeline.core.protocol.manifest import SEARCH_ANGLES, AngleSearch

STEP_DEG = 360.0 / SEARCH_ANGLES


def polar_profile(img: np.ndarray, rings: int, skip: int) -> np.ndarray:
    """(SEARCH_ANGLES, rings - skip) samples of a single-channel image around its centre, out to
    half its smaller side; each ring zero-mean (the template matches shapes, not brightness).
    The same samples as ``cv2.warpPolar`` (linear), from a sampling map computed once per size."""
    gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    map_x, map_y = _polar_maps(gray.shape[1], gray.shape[0], rings, skip)
    p = cv2.remap(gray, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT).astype(np.float32)
    return p - p.mean(axis=0, keepdims=True)


@functools.lru_cache(maxsize=32)
def _polar_maps(w: int, h: int, rings: int, skip: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each (angle, ring) sample lies in a w x h image: ring ``r`` at radius
    ``r * (min(w, h) / 2) / rings`` like ``cv2.warpPolar``'s linear mode, angle ``i`` at 3i degrees."""
    radius = min(w, h) / 2.0
    angles = np.arange(SEARCH_ANGLES, dtype=np.float64) * (2.0 * np.pi / SEARCH_ANGLES)
    radii = np.arange(skip, rings, dtype=np.float64) * (radius / rings)
    map_x = (w / 2.0 + np.cos(angles)[:, None] * radii[None, :]).astype(np.float32)
    map_y = (h / 2.0 + np.sin(angles)[:, None] * radii[None, :]).astype(np.float32)
    return map_x, map_y


def _spectrum(profile: np.ndarray) -> np.ndarray:
    """Per ring, the DFT along the angles: (rings, SEARCH_ANGLES, 2) float32 (OpenCV's layout)."""
    return cv2.dft(np.ascontiguousarray(profile.T, dtype=np.float32), flags=cv2.DFT_ROWS | cv2.DFT_COMPLEX_OUTPUT)


def _best_shift(profile: np.ndarray, template_spectrum: np.ndarray, allowed: np.ndarray) -> float:
    """The circular shift (angle bins, sub-bin by a parabola through the peak) of ``profile``
    against the template, among the ``allowed`` shifts (a mask over bins 0..SEARCH_ANGLES-1, bin
    ``i`` meaning a shift of ``i`` or ``i - SEARCH_ANGLES``)."""
    product = cv2.mulSpectrums(_spectrum(profile), template_spectrum, cv2.DFT_ROWS, conjB=True)
    summed = np.ascontiguousarray(product.sum(axis=0, keepdims=True))
    corr = cv2.idft(summed, flags=cv2.DFT_ROWS | cv2.DFT_REAL_OUTPUT)[0]
    i = int(np.argmax(np.where(allowed, corr, -np.inf)))
    n = SEARCH_ANGLES
    y0, y1, y2 = float(corr[(i - 1) % n]), float(corr[i]), float(corr[(i + 1) % n])
    den = y0 - 2.0 * y1 + y2
    frac = 0.5 * (y0 - y2) / den if den < 0 else 0.0
    return (i if i <= n // 2 else i - n) + max(-0.5, min(0.5, frac))


def _allowed(range_deg: float) -> np.ndarray:
    shifts = np.arange(SEARCH_ANGLES)
    shifts[shifts > SEARCH_ANGLES // 2] -= SEARCH_ANGLES
    return np.abs(shifts) <= range_deg / STEP_DEG


class AngleSearcher:
    """:class:`AngleSearch` made ready for every frame (the template's spectrum computed once)."""

    __slots__ = ("_allowed", "_template_spectrum", "rings", "skip")

    def __init__(self, search: AngleSearch) -> None:
        self.rings, self.skip = search.rings, search.skip
        self._allowed = _allowed(search.range)
        self._template_spectrum = _spectrum(np.asarray(search.template, dtype=np.float32))

    def angle(self, img: np.ndarray) -> float:
        """Degrees to turn ``img`` (counter-clockwise, ``cv2.getRotationMatrix2D`` convention) about
        its centre so it matches the template; within ``±range``."""
        return _best_shift(polar_profile(img, self.rings, self.skip), self._template_spectrum, self._allowed) * STEP_DEG


def fit_template(
    images: Sequence[np.ndarray], range_deg: float, rings: int = 14, skip: int = 2, rounds: int = 3
) -> np.ndarray:
    """The good parts' averaged profile: start from the first image's, then align every profile to
    the average and average again (``rounds`` times). Scaled to unit spread."""
    if not images:
        raise ValueError("an angle-search template needs at least one image")
    profiles = [polar_profile(im, rings, skip) for im in images]
    allowed = _allowed(range_deg)
    template = profiles[0]
    for _ in range(rounds):
        spectrum = _spectrum(template)
        aligned = [np.roll(p, -round(_best_shift(p, spectrum, allowed)), axis=0) for p in profiles]
        template = np.mean(aligned, axis=0)
    return template / max(float(np.std(template)), 1e-9)
