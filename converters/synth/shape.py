"""Where a rendered part lies in its frame: outline, holes and material masks, for drawing defects.

Every part family (:mod:`converters.synth.render` for the plate, :mod:`converters.synth.flange` for
the flange, :mod:`converters.synth.bracket` for the bracket) describes the part it just drew with a
:class:`PartShape`; the defect painters of :mod:`converters.synth.defects` only look at that, so every
defect kind works on every family. A :class:`Hole` is round, or a slot (an obround) when it has a
``half_length``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass(frozen=True)
class Pose:
    """Where a part lies in a frame: its centre, its in-plane angle, and the frame's scale ``k``
    against the 320 px reference width."""

    cx: float
    cy: float
    angle: float
    k: float


def draw_pose(
    geo: np.random.Generator, size: tuple[int, int], jitter_px: float, rotation_deg: float, x_offset: float = 0.0
) -> Pose:
    """A part's pose from ``geo``: position jitter (x, then y) and rotation, drawn in that order."""
    w, h = size
    k = w / 320
    dx = geo.uniform(-1, 1) * jitter_px * k
    dy = geo.uniform(-1, 1) * jitter_px * k
    angle = float(geo.uniform(-1, 1) * rotation_deg)
    return Pose(w / 2 + dx + x_offset, h / 2 + dy, angle, k)


def rotated(points: np.ndarray, angle_deg: float, centre: tuple[float, float]) -> np.ndarray:
    """``points`` (N, 2) rotated by ``angle_deg`` about the origin, then moved to ``centre``."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=np.float64)
    return points @ rot.T + np.asarray(centre)


def aa_step(v: np.ndarray) -> np.ndarray:
    """An anti-aliased edge: 0 below -0.5, 1 above +0.5 (``v`` in pixels past the boundary)."""
    return np.clip(v + 0.5, 0.0, 1.0)


def fix(p: np.ndarray) -> np.ndarray:
    """Points to the 4-bit fixed point cv2 drawing functions take with ``shift=4``."""
    return np.rint(p * 16).astype(np.int32)


def part_window(
    outline: np.ndarray, shadow_at: np.ndarray, frame: tuple[int, int], pad: tuple[int, int]
) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the box around a part's outline and its shadow, ``pad`` pixels wider before
    and after, clipped to the ``frame`` (w, h); empty when the part is off the frame."""
    w, h = frame
    lo = np.minimum(outline.min(axis=0), shadow_at.min(axis=0))
    hi = np.maximum(outline.max(axis=0), shadow_at.max(axis=0))
    x0, y0 = max(0, math.floor(lo[0]) - pad[0]), max(0, math.floor(lo[1]) - pad[0])
    x1, y1 = min(w, math.ceil(hi[0]) + pad[1]), min(h, math.ceil(hi[1]) + pad[1])
    return x0, y0, x1, y1


def drop_shadow(
    img: np.ndarray,
    box: tuple[int, int, int, int],
    shadow: np.ndarray,
    sigma: float,
    strength: float,
    keep_frame: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The belt under a part: ``img``'s window ``box`` darkened by the part's shadow (``shadow``, the
    polygon in window coordinates, blurred by ``sigma``, at most ``strength`` dark), and, when
    ``keep_frame``, the whole frame with that shadow (what a chip out of the part shows)."""
    x0, y0, x1, y1 = box
    size = (y1 - y0, x1 - x0)
    mask = np.zeros(size, np.uint8)
    cv2.fillPoly(mask, [fix(shadow)], 255, cv2.LINE_AA, 4)
    sh = cv2.GaussianBlur(mask, (0, 0), sigma).astype(np.float32) * (strength / 255.0)
    under = cv2.blendLinear(img[y0:y1, x0:x1], np.zeros((*size, 3), np.uint8), 1.0 - sh, sh)
    if not keep_frame:
        return under, None
    background = img.copy()
    background[y0:y1, x0:x1] = under
    return under, background


@dataclass(frozen=True)
class Hole:
    x: float
    y: float
    #: radius of the through-hole (the background shows) and of its chamfer (still material); for a
    #: slot, half its width
    r: float
    r_chamfer: float
    #: a slot: half the distance between the centres of its two round ends, along ``angle`` degrees
    #: (0: a round hole)
    half_length: float = 0.0
    angle: float = 0.0

    def _axis(self) -> tuple[float, float]:
        a = math.radians(self.angle)
        return math.cos(a), math.sin(a)

    def distance(self, x: float, y: float) -> float:
        """Distance of a point to the hole's centre (a slot: to the segment between its end centres)."""
        if self.half_length <= 0:
            return math.hypot(x - self.x, y - self.y)
        ux, uy = self._axis()
        t = max(-self.half_length, min(self.half_length, (x - self.x) * ux + (y - self.y) * uy))
        return math.hypot(x - self.x - t * ux, y - self.y - t * uy)

    def rim(self, a: float) -> tuple[float, float]:
        """The point of the through-hole's edge whose outward normal points at ``a`` radians."""
        if self.half_length <= 0:
            return self.x + self.r * math.cos(a), self.y + self.r * math.sin(a)
        ux, uy = self._axis()
        end = self.half_length if math.cos(a) * ux + math.sin(a) * uy >= 0 else -self.half_length
        return self.x + end * ux + self.r * math.cos(a), self.y + end * uy + self.r * math.sin(a)

    def polygon(self, radius: float, steps: int = 10) -> np.ndarray:
        """A slot's outline at ``radius`` (the hole's ``r`` or its chamfer's) as (N, 2) points."""
        ux, uy = self._axis()
        base = math.atan2(uy, ux)
        pts: list[tuple[float, float]] = []
        for end, a0 in ((self.half_length, base - math.pi / 2), (-self.half_length, base + math.pi / 2)):
            ex, ey = self.x + end * ux, self.y + end * uy
            pts += [
                (ex + radius * math.cos(a0 + math.pi * i / steps), ey + radius * math.sin(a0 + math.pi * i / steps))
                for i in range(steps + 1)
            ]
        return np.asarray(pts, dtype=np.float64)

    def cut(self, mask: np.ndarray, radius: float, value: float | tuple[float, float, float] = 0) -> None:
        """Fill the hole at ``radius`` into ``mask`` (an image, in place) with ``value`` (a grey level or
        a BGR colour)."""
        if self.half_length <= 0:
            cv2.circle(mask, (round(self.x * 16), round(self.y * 16)), int(radius * 16), value, -1, cv2.LINE_AA, 4)
        else:
            cv2.fillPoly(mask, [fix(self.polygon(radius))], value, cv2.LINE_AA, 4)


@dataclass
class PartShape:
    """A drawn part: ``outline`` is its closed outer boundary in pixel coordinates; ``mask`` (uint8,
    frame-sized) is 255 inside the outline, holes included; ``size`` is its characteristic length in
    pixels (the plate's width, the flange's diameter, the bracket's long leg), from which defect sizes
    are scaled."""

    centre: tuple[float, float]
    angle: float
    size: float
    outline: np.ndarray
    holes: tuple[Hole, ...]
    mask: np.ndarray
    #: a polyline (N, 2) along the middle of the material, for parts whose centre is not on it (the
    #: bracket's L): what lies "inwards" from the outline; None: the centre
    spine: np.ndarray | None = None
    _material: np.ndarray | None = field(default=None, repr=False)
    _face: np.ndarray | None = field(default=None, repr=False)
    _contour: np.ndarray | None = field(default=None, repr=False)

    def material(self) -> np.ndarray:
        """255 where the part is solid (through-holes cut out, chamfers kept)."""
        if self._material is None:
            m = self.mask.copy()
            for hole in self.holes:
                hole.cut(m, hole.r)
            self._material = m
        return self._material

    def face(self) -> np.ndarray:
        """255 on the flat face (holes and their chamfers cut out)."""
        if self._face is None:
            m = self.mask.copy()
            for hole in self.holes:
                hole.cut(m, hole.r_chamfer)
            self._face = m
        return self._face

    def contour(self) -> np.ndarray:
        if self._contour is None:
            self._contour = self.outline.astype(np.float32).reshape(-1, 1, 2)
        return self._contour

    def edge_distance(self, x: float, y: float) -> float:
        """Signed distance of a point to the outer outline (positive inside)."""
        return float(cv2.pointPolygonTest(self.contour(), (float(x), float(y)), True))

    def inwards(self, x: float, y: float) -> tuple[float, float]:
        """The point an edge crack starting at ``(x, y)`` heads for: the centre, or the nearest point of
        the spine."""
        if self.spine is None:
            return self.centre
        best, best_d = self.centre, math.inf
        for (ax, ay), (bx, by) in zip(self.spine[:-1], self.spine[1:], strict=True):
            dx, dy = bx - ax, by - ay
            t = min(1.0, max(0.0, ((x - ax) * dx + (y - ay) * dy) / max(dx * dx + dy * dy, 1e-12)))
            px, py = float(ax + t * dx), float(ay + t * dy)
            d = math.hypot(x - px, y - py)
            if d < best_d:
                best, best_d = (px, py), d
        return best

    def hole_clearance(self, x: float, y: float) -> float:
        """Distance of a point to the nearest chamfer edge (infinite without holes)."""
        return min((h.distance(x, y) - h.r_chamfer for h in self.holes), default=math.inf)

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
