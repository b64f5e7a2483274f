"""Where a rendered part lies in its frame: outline, holes and material masks, for drawing defects.

Both part families (:mod:`converters.synth.render` for the plate, :mod:`converters.synth.flange` for
the flange) describe the part they just drew with a :class:`PartShape`; the defect painters of
:mod:`converters.synth.defects` only look at that, so every defect kind works on every family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np


def rotated(points: np.ndarray, angle_deg: float, centre: tuple[float, float]) -> np.ndarray:
    """``points`` (N, 2) rotated by ``angle_deg`` about the origin, then moved to ``centre``."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=np.float64)
    return points @ rot.T + np.asarray(centre)


def fix(p: np.ndarray) -> np.ndarray:
    """Points to the 4-bit fixed point cv2 drawing functions take with ``shift=4``."""
    return np.rint(p * 16).astype(np.int32)


@dataclass(frozen=True)
class Hole:
    x: float
    y: float
    #: radius of the through-hole (the background shows) and of its chamfer (still material)
    r: float
    r_chamfer: float


@dataclass
class PartShape:
    """A drawn part: ``outline`` is its closed outer boundary in pixel coordinates; ``mask`` (uint8,
    frame-sized) is 255 inside the outline, holes included; ``size`` is its characteristic length in
    pixels (the plate's width, the flange's diameter), from which defect sizes are scaled."""

    centre: tuple[float, float]
    angle: float
    size: float
    outline: np.ndarray
    holes: tuple[Hole, ...]
    mask: np.ndarray
    _material: np.ndarray | None = field(default=None, repr=False)
    _face: np.ndarray | None = field(default=None, repr=False)
    _contour: np.ndarray | None = field(default=None, repr=False)

    def material(self) -> np.ndarray:
        """255 where the part is solid (through-holes cut out, chamfers kept)."""
        if self._material is None:
            m = self.mask.copy()
            for hole in self.holes:
                cv2.circle(m, (round(hole.x * 16), round(hole.y * 16)), int(hole.r * 16), 0, -1, cv2.LINE_AA, 4)
            self._material = m
        return self._material

    def face(self) -> np.ndarray:
        """255 on the flat face (holes and their chamfers cut out)."""
        if self._face is None:
            m = self.mask.copy()
            for hole in self.holes:
                at = (round(hole.x * 16), round(hole.y * 16))
                cv2.circle(m, at, int(hole.r_chamfer * 16), 0, -1, cv2.LINE_AA, 4)
            self._face = m
        return self._face

    def contour(self) -> np.ndarray:
        if self._contour is None:
            self._contour = self.outline.astype(np.float32).reshape(-1, 1, 2)
        return self._contour

    def edge_distance(self, x: float, y: float) -> float:
        """Signed distance of a point to the outer outline (positive inside)."""
        return float(cv2.pointPolygonTest(self.contour(), (float(x), float(y)), True))

    def hole_clearance(self, x: float, y: float) -> float:
        """Distance of a point to the nearest chamfer edge (infinite without holes)."""
        return min((math.hypot(x - h.x, y - h.y) - h.r_chamfer for h in self.holes), default=math.inf)

    def sample_face(self, rng: np.random.Generator, margin: float, tries: int = 64) -> tuple[float, float]:
        """A point on the face at least ``margin`` pixels from the outline and from every hole. Rejection
        sampling in the bounding box; after ``tries`` misses, the best point seen."""
        x0, y0 = self.outline.min(axis=0)
        x1, y1 = self.outline.max(axis=0)
        best, best_d = self.centre, -math.inf
        for _ in range(tries):
            x, y = float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))
            d = min(self.edge_distance(x, y), self.hole_clearance(x, y))
            if d >= margin:
                return x, y
            if d > best_d:
                best, best_d = (x, y), d
        return best

    def sample_edge(self, rng: np.random.Generator) -> tuple[float, float]:
        """A point on the outer outline, uniform along its length."""
        pts = self.outline
        seg = np.roll(pts, -1, axis=0) - pts
        lengths = np.hypot(seg[:, 0], seg[:, 1])
        t = float(rng.uniform(0.0, float(lengths.sum())))
        i = int(np.searchsorted(np.cumsum(lengths), t))
        i = min(i, len(pts) - 1)
        before = float(lengths[:i].sum())
        f = (t - before) / max(float(lengths[i]), 1e-9)
        p = pts[i] + f * seg[i]
        return float(p[0]), float(p[1])
