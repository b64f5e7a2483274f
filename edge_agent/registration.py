"""Part registration: find the part in a frame and align it, before any feature is computed.

Parts on a conveyor are never in the same place twice. Pixel-level models (the good-part model, a
classifier on pooled pixels) compare a frame with what good parts looked like, so a part shifted by a
few pixels looks like a defect everywhere unless it is aligned first. This is the classic machine
vision locate step, kept cheap enough for every frame (~0.1 ms on 2 cores):

1. the ROI image is resized so the registration window becomes the output size;
2. the part's silhouette: pixels that differ from the median of the image border by more than an Otsu
   threshold (at least ``min_contrast`` grey levels), the largest outer contour, its holes filled;
3. the silhouette's centroid and principal-axis angle (image moments of the filled contour);
4. one affine warp puts the centroid in the middle of the output and, in ``rigid`` mode, turns the
   axis to the reference angle of good parts;
5. with an angle search (``search``), the turn that best matches the good parts' polar profile
   (:mod:`edge_agent.angle_search`) is composed into that warp and the image warped again.

Pure numpy and OpenCV; the device runs exactly this code, the cloud trains on its output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge_agent.angle_search import AngleSearcher
from edgeline.core.protocol.manifest import Registration


@dataclass(frozen=True, slots=True)
class Silhouette:
    """Where the part is in the image it was found in (pixel coordinates of that image)."""

    found: bool
    cx: float
    cy: float
    angle: float  # principal axis, degrees in (-90, 90]
    elongation: float  # sqrt of the ratio of the principal second moments (1 = no axis)
    area: float  # share of the image the filled silhouette covers
    width: float  # bounding box of the silhouette, share of the image width
    height: float


@dataclass(frozen=True, slots=True)
class Placement:
    """How an output pixel maps back to the frame: ``frame = offset + scale * inverse(M) @ out``.

    ``M`` is the 2x3 affine from the resized image to the output; ``scale`` the resized-to-frame
    factors per axis; ``offset`` the ROI origin in the frame."""

    matrix: np.ndarray
    scale: tuple[float, float]
    offset: tuple[float, float]
    silhouette: Silhouette | None

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """Output-image points (K, 2) -> frame pixel coordinates (K, 2)."""
        inv = cv2.invertAffineTransform(self.matrix)
        pts = np.asarray(points, dtype=np.float64) @ inv[:, :2].T + inv[:, 2]
        return pts * np.asarray(self.scale) + np.asarray(self.offset)

    def box_to_frame(self, x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        """An axis-aligned box in the output image -> the axis-aligned box around it in the frame."""
        corners = np.array([[x, y], [x + w, y], [x, y + h], [x + w, y + h]], dtype=np.float64)
        pts = self.to_frame(corners)
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def _outer_contour(gray: np.ndarray, min_contrast: float) -> np.ndarray | None:
    """The largest outer contour of the pixels that differ from the border's median grey level."""
    blurred = cv2.GaussianBlur(gray, (3, 3), 0)
    ring = np.concatenate([blurred[0], blurred[-1], blurred[1:-1, 0], blurred[1:-1, -1]])
    cumulative = np.cumsum(np.bincount(ring, minlength=256))
    background = int(np.searchsorted(cumulative, (len(ring) + 1) // 2))  # the median grey level, uint8
    diff = cv2.absdiff(blurred, np.full_like(blurred, background))
    otsu, _ = cv2.threshold(diff, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = (diff > max(float(otsu), float(min_contrast))).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return max(contours, key=cv2.contourArea) if contours else None


def silhouette_mask(gray: np.ndarray, min_contrast: float = 15.0) -> np.ndarray:
    """The filled silhouette (uint8 0/1) of the part in a single-channel image; all zeros if none."""
    out = np.zeros(gray.shape[:2], np.uint8)
    contour = _outer_contour(gray, min_contrast)
    if contour is not None:
        cv2.drawContours(out, [contour], -1, 1, thickness=-1)
    return out


def locate(gray: np.ndarray, min_contrast: float = 15.0) -> Silhouette:
    """The part's silhouette in a single-channel uint8 image (see the module doc)."""
    h, w = gray.shape[:2]
    contour = _outer_contour(gray, min_contrast)
    if contour is None:
        return Silhouette(False, w / 2.0, h / 2.0, 0.0, 1.0, 0.0, 0.0, 0.0)
    m = cv2.moments(contour)
    area = float(m["m00"])
    if area < 0.005 * w * h:
        return Silhouette(False, w / 2.0, h / 2.0, 0.0, 1.0, area / (w * h), 0.0, 0.0)
    cx, cy = m["m10"] / area, m["m01"] / area
    mu20, mu02, mu11 = m["mu20"] / area, m["mu02"] / area, m["mu11"] / area
    angle = 0.5 * math.degrees(math.atan2(2.0 * mu11, mu20 - mu02))
    half_trace = (mu20 + mu02) / 2.0
    disc = math.sqrt(max(0.0, half_trace * half_trace - (mu20 * mu02 - mu11 * mu11)))
    major, minor = half_trace + disc, max(1e-9, half_trace - disc)
    _, _, bw, bh = cv2.boundingRect(contour)
    return Silhouette(
        True, float(cx), float(cy), float(angle), math.sqrt(major / minor), area / (w * h), bw / w, bh / h
    )


def working_size(reg: Registration, size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) the ROI image is resized to, so that the window becomes ``size``."""
    out_w, out_h = size
    return max(out_w, round(out_w / reg.window[0])), max(out_h, round(out_h / reg.window[1]))


def angle_correction(sil: Silhouette, reg: Registration) -> float:
    """Degrees to turn the part so its axis lies at the reference angle; 0 when not rigid, when
    nothing was found, or when the deviation is beyond ``max_angle`` (the axis is then ambiguous)."""
    if reg.mode != "rigid" or not sil.found:
        return 0.0
    delta = (sil.angle - reg.reference_angle + 90.0) % 180.0 - 90.0
    return delta if abs(delta) <= reg.max_angle else 0.0


def align(
    work: np.ndarray, reg: Registration, size: tuple[int, int], searcher: AngleSearcher | None = None
) -> tuple[np.ndarray, np.ndarray, Silhouette]:
    """Align ``work`` (the ROI image already resized to :func:`working_size`, uint8 grey or colour).
    With ``searcher`` (made from ``reg.search``) the centred part is then turned to the template's
    angle (a second warp of ``work``, so the image is interpolated once). Returns (output of
    ``size``, affine M from ``work`` to the output, silhouette in ``work``)."""
    gray = work if work.ndim == 2 else cv2.cvtColor(work, cv2.COLOR_BGR2GRAY)
    sil = locate(gray, reg.min_contrast)
    out_w, out_h = size
    matrix = cv2.getRotationMatrix2D((sil.cx, sil.cy), angle_correction(sil, reg), 1.0)
    matrix[0, 2] += out_w / 2.0 - sil.cx
    matrix[1, 2] += out_h / 2.0 - sil.cy
    out = cv2.warpAffine(work, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if searcher is not None and sil.found:
        turn = searcher.angle(out)
        if turn != 0.0:
            about_centre = np.vstack([cv2.getRotationMatrix2D((out_w / 2.0, out_h / 2.0), turn, 1.0), [0.0, 0.0, 1.0]])
            matrix = (about_centre @ np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
            out = cv2.warpAffine(work, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out, matrix, sil


def is_foreign(sil: Silhouette | None, reg: Registration | None) -> bool:
    """True when registration found no part, or one whose silhouette is far outside the size range
    of good training parts (an empty belt, a covered lens, a different object)."""
    if reg is None or sil is None:
        return False
    if not sil.found:
        return True
    lo, hi = reg.area
    tol = reg.area_tolerance
    return not (lo / tol <= sil.area <= min(1.0, hi * tol))
