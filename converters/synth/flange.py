"""The second part family: a round turned steel flange on a blue-grey modular plastic belt.

At 320x240 the flange is a disc of 132 px diameter (the plate is a 150x108 rectangle) with a 34 px
centre bore, a raised hub (a groove at radius 28 px), a bolt circle of radius 46 px with six 11 px
bolt holes and their chamfers, a small laser-etched dot mark between two bolt holes (it makes the
rotation visible beyond the six-fold symmetry), and a bright chamfer round the outer edge. The face
shows concentric turning grooves and the bow-tie highlight of a turned surface lit from the upper
left (fixed to the light, not to the part). Position jitter (``Conditions.flange_jitter_px``, ±10 px
by default) and in-plane rotation (``Conditions.flange_rotation_deg``, the full ±180° by default)
are drawn per part.

Classes map as on the plate: ``scratch`` and ``dent`` as there, ``missing_hole`` is one of the six
bolt holes never drilled, and the extra kinds of :mod:`converters.synth.defects` likewise.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from converters.synth.defects import EXTRA_DEFECTS, draw_dent, draw_extra, draw_scratch
from converters.synth.shape import Hole, PartShape, draw_pose, rotated

#: sizes in pixels at 320x240, scaled with the frame width
FLANGE_R = 66.0
_BORE_R = 17.0
_HUB_R = 28.0
_BOLT_CIRCLE = 46.0
_BOLT_R = 5.5
_CHAMFER = 1.5
N_BOLTS = 6
_HOLE_COLOUR = (40, 34, 29)  # the belt, in the part's shadow, seen through a hole
_MARK = ((1, 0, 1, 1, 0), (0, 1, 1, 0, 1))  # the etched dot pattern, two rows


@functools.lru_cache(maxsize=4)
def flange_belt_strip(w: int, h: int) -> np.ndarray:
    """A modular plastic belt twice the frame width: blue-grey modules with a joint every 32 px and
    staggered hinge lines, fine grain. Fixed seed: it is the same belt in every dataset."""
    rng = np.random.default_rng(20240923)
    k = w / 320
    width = 2 * w
    noise = np.full((h, width), 76.0, dtype=np.float32) + rng.normal(0.0, 4.0, (h, width)).astype(np.float32)
    base: np.ndarray = cv2.GaussianBlur(noise, (0, 0), 1.0)
    pitch, row = max(8, round(32 * k)), max(8, round(30 * k))
    xs, ys = np.arange(width), np.arange(h)
    base[:, (xs % pitch) < max(1, round(2 * k))] -= 16.0
    hinge = (ys % row) < max(1, round(2 * k))
    base[hinge, :] -= 9.0
    stagger = ((ys // row) % 2 == 1)[:, None] & (((xs + pitch // 2) % pitch) < max(1, round(2 * k)))[None, :]
    base[stagger] -= 6.0
    base += np.linspace(3.0, -3.0, h, dtype=np.float32)[:, None]
    grey = np.clip(base, 0, 255)
    out = np.clip(np.rint(np.stack([grey * 1.22, grey * 1.02, grey * 0.80], axis=2)), 0, 255).astype(np.uint8)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=4)
def _flange_patch(w: int) -> tuple[np.ndarray, int]:
    """The turned face as a square BGR patch centred on the flange's axis, and its half size."""
    k = w / 320
    outer = FLANGE_R * k
    half = math.ceil(outer + 3)
    rng = np.random.default_rng(31)
    n = int((outer + 4) * 4) + 1
    rr = np.arange(n, dtype=np.float32) / 4.0
    walk = np.cumsum(rng.normal(0.0, 0.9, n)).astype(np.float32)
    bands = cv2.GaussianBlur(walk[None, :], (0, 0), sigmaX=10.0, sigmaY=0.1)[0]
    bands -= bands.mean()
    amp_raw = cv2.GaussianBlur(rng.uniform(0.0, 1.0, (1, n)).astype(np.float32), (0, 0), sigmaX=16.0, sigmaY=0.1)[0]
    amp = 3.0 + 8.0 * (amp_raw - amp_raw.min()) / max(float(np.ptp(amp_raw)), 1e-6)
    hub = rr < _HUB_R * k
    period = np.where(hub, 1.9 * k, 2.7 * k)
    grooves = amp * np.sin(2 * np.pi * rr / period + rng.uniform(0, 2 * np.pi))
    profile = 140.0 + 0.8 * bands + grooves + np.where(hub, 9.0, 0.0)
    profile[np.abs(rr - _HUB_R * k) < 0.9 * k] -= 32.0  # the hub's step
    profile[rr > outer - 2.4 * k] = 190.0  # outer chamfer
    ys, xs = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    r = np.hypot(xs, ys)
    tex = profile[np.clip(np.rint(r * 4).astype(np.int64), 0, n - 1)]
    phi = np.arctan2(ys, xs)
    light = -0.75 * math.pi  # upper left
    bow = 28.0 * np.exp(-(np.sin(phi - light) ** 2) / 0.06) * np.clip(r / outer, 0.25, 1.0)
    grey = np.clip(tex + bow, 0, 255)
    patch = np.clip(np.rint(np.stack([grey * 1.03, grey, grey * 0.96], axis=2)), 0, 255).astype(np.uint8)
    patch.setflags(write=False)
    return patch, half


def _circle(img: np.ndarray, x: float, y: float, r: float, colour: tuple[int, int, int] | int, th: int = -1) -> None:
    cv2.circle(img, (round(x * 16), round(y * 16)), max(1, round(r * 16)), colour, th, cv2.LINE_AA, 4)


def draw_flange(
    img: np.ndarray,
    label: str,
    geo: np.random.Generator,
    *,
    jitter_px: float,
    rotation_deg: float,
    x_offset: float = 0.0,
) -> PartShape:
    """Draw a flange of class ``label`` onto ``img`` (in place); every part draw comes from ``geo``."""
    h, w = img.shape[:2]
    pose = draw_pose(geo, (w, h), jitter_px, rotation_deg, x_offset)
    k, angle = pose.k, pose.angle
    cx, cy = pose.cx, pose.cy
    outer = FLANGE_R * k
    _circle(img, cx + 4 * k, cy + 4 * k, outer, (44, 36, 30))  # soft shadow down-right
    background = img.copy() if label == "chip" else None
    mask = np.zeros((h, w), np.uint8)
    _circle(mask, cx, cy, outer, 255)
    patch, half = _flange_patch(w)
    ix, iy = round(cx) - half, round(cy) - half
    x0, y0, x1, y1 = max(0, ix), max(0, iy), min(w, ix + 2 * half + 1), min(h, iy + 2 * half + 1)
    if x1 > x0 and y1 > y0:
        np.copyto(
            img[y0:y1, x0:x1],
            patch[y0 - iy : y1 - iy, x0 - ix : x1 - ix],
            where=mask[y0:y1, x0:x1, None] > 0,
        )
    _circle(img, cx, cy, outer - 0.5 * k, (112, 110, 108), max(1, round(k)))  # the edge's far side

    bolts = [angle + 360.0 * i / N_BOLTS for i in range(N_BOLTS)]
    if label == "missing_hole":
        bolts.pop(int(geo.integers(0, N_BOLTS)))
    holes = [Hole(cx, cy, _BORE_R * k, (_BORE_R + 2.0) * k)]
    for a in bolts:
        bx = cx + _BOLT_CIRCLE * k * math.cos(math.radians(a))
        by = cy + _BOLT_CIRCLE * k * math.sin(math.radians(a))
        holes.append(Hole(bx, by, _BOLT_R * k, (_BOLT_R + _CHAMFER) * k))
    for hole in holes:
        _circle(img, hole.x, hole.y, hole.r_chamfer, (116, 116, 120))
        _circle(img, hole.x, hole.y, hole.r, _HOLE_COLOUR)
    # the etched mark, between the first two bolt holes
    grid = np.array(
        [[(c - 2) * 2.2 * k, (rw - 0.5) * 2.2 * k] for rw, bits in enumerate(_MARK) for c, on in enumerate(bits) if on]
    )
    mark_angle = angle + 180.0 / N_BOLTS
    local = grid @ np.array([[0.0, 1.0], [1.0, 0.0]]) + [36.0 * k, 0.0]  # rows run tangentially
    for mx, my in rotated(local, mark_angle, (cx, cy)):
        _circle(img, float(mx), float(my), 0.75 * k, (72, 72, 76))

    t = np.linspace(0.0, 2 * math.pi, 96, endpoint=False)
    outline = np.stack([cx + outer * np.cos(t), cy + outer * np.sin(t)], axis=1)
    shape = PartShape((cx, cy), angle, 2 * outer, outline, tuple(holes), mask)
    if label == "scratch":
        draw_scratch(img, shape, geo, k)
    elif label == "dent":
        draw_dent(img, shape, geo, k)
    elif label in EXTRA_DEFECTS:
        draw_extra(label, img, shape, geo, k, background)
    return shape
