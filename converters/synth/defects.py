"""Defect painters that work on any part family (they only look at a :class:`~converters.synth.shape.PartShape`).

The extra defect kinds, never in a dataset's default class list (ask for them by name with
``classes=``), so a model trained on the defaults has never seen them. Sizes are fractions of the
part's characteristic size ``S`` (the plate's width, 150 px at 320x240; the flange's diameter,
132 px; the bracket's long leg, 150 px), so they scale with the frame:

* ``crack``: a thin (1 px at 320x240) jagged dark line, 12-30% of S long (plate 18-45 px, flange
  16-40 px, bracket 18-45 px), drawn 75-95% of the way to near-black. It starts at the rim of a hole
  or slot (45%), at the outer edge heading inwards (35%; towards the part's centre or, on the
  bracket, the middle line of the leg it starts on) or on the face (20%), zig-zags along a slowly wandering heading, and
  forks once in 40% of cases. It is only drawn on material (never across a through-hole or the
  background).
* ``stain``: an irregular, low-contrast oil or coolant blotch, radius 7-14% of S (plate 10-21 px,
  flange 9-18 px, bracket 10-21 px): the union of 3-6 overlapping ellipses, soft-edged, with an uneven density. Oil
  (60%) darkens the metal by 12-26 grey levels at its densest and shifts it towards brown; dried
  coolant is a little lighter in the middle with a darker rim and a blue-green cast. Clipped to the
  part's material.
* ``chip``: a piece broken off the outer edge: an irregular bite (7-10 vertices) of radius 5-9% of S
  (plate 7.5-13.5 px, flange 6.6-12 px, bracket 7.5-13.5 px) centred on a point of the outline, through which the
  background (belt, shadow) shows, with a thin bright fracture line along the broken edge.

:func:`draw_scratch` and :func:`draw_dent` are family-independent versions of the plate's scratch
and dent (the plate keeps its own, byte-identical painters in :mod:`converters.synth.render`); the
flange and the bracket use these.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from converters.errors import DatasetError
from converters.synth.shape import PartShape, fix

EXTRA_DEFECTS: tuple[str, ...] = ("crack", "stain", "chip")


def _rect(layer: np.ndarray, pad: int = 1) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1) of a layer's non-zero pixels, padded and clipped; None if empty."""
    x, y, w, h = cv2.boundingRect(layer)
    if w == 0 or h == 0:
        return None
    H, W = layer.shape[:2]  # noqa: N806
    return max(0, x - pad), max(0, y - pad), min(W, x + w + pad), min(H, y + h + pad)


def _blend_to(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """``img = img * (1 - alpha) + colour * alpha`` inside ``box``; ``colour`` is BGR or a BGR image."""
    x0, y0, x1, y1 = box
    roi = img[y0:y1, x0:x1].astype(np.float32)
    a = alpha[:, :, None]
    img[y0:y1, x0:x1] = np.clip(roi + (colour - roi) * a + 0.5, 0, 255).astype(np.uint8)


def _jagged(
    start: tuple[float, float], heading: float, length: float, step: float, rng: np.random.Generator
) -> np.ndarray:
    n = max(4, int(length / step))
    drift = np.cumsum(rng.normal(0.0, 0.12, n))
    zig = rng.normal(0.0, 0.5, n)
    ang = heading + drift + zig
    seg = length / n
    steps = np.stack([np.cos(ang), np.sin(ang)], axis=1) * seg
    return np.vstack([np.asarray(start, np.float64)[None, :], start + np.cumsum(steps, axis=0)])


def draw_crack(img: np.ndarray, shape: PartShape, rng: np.random.Generator, k: float) -> None:
    size = shape.size
    length = float(rng.uniform(0.12, 0.30)) * size
    where = float(rng.random())
    if where < 0.45 and shape.holes:
        hole = shape.holes[int(rng.integers(0, len(shape.holes)))]
        a = float(rng.uniform(0.0, 2 * math.pi))
        start = hole.rim(a)
        heading = a + float(rng.normal(0.0, 0.35))
    elif where < 0.8:
        start = shape.sample_edge(rng)
        tx, ty = shape.inwards(*start)
        heading = math.atan2(ty - start[1], tx - start[0]) + float(rng.uniform(-0.6, 0.6))
    else:
        start = shape.sample_face(rng, 0.05 * size)
        heading = float(rng.uniform(0.0, 2 * math.pi))
    step = max(2.0, 3.0 * k)
    pts = _jagged(start, heading, length, step, rng)
    layer = np.zeros(img.shape[:2], np.uint8)
    thickness = max(1, round(k))
    cv2.polylines(layer, [fix(pts)], False, 255, thickness, cv2.LINE_AA, 4)
    if rng.random() < 0.4:
        at = pts[int(rng.integers(len(pts) // 3, max(len(pts) // 3 + 1, 2 * len(pts) // 3)))]
        turn = float(rng.uniform(0.5, 0.9)) * (1 if rng.random() < 0.5 else -1)
        branch = _jagged((float(at[0]), float(at[1])), heading + turn, length * float(rng.uniform(0.3, 0.5)), step, rng)
        cv2.polylines(layer, [fix(branch)], False, 255, thickness, cv2.LINE_AA, 4)
    box = _rect(layer)
    if box is None:
        return
    x0, y0, x1, y1 = box
    strength = float(rng.uniform(0.75, 0.95))
    alpha = layer[y0:y1, x0:x1].astype(np.float32) * shape.material()[y0:y1, x0:x1] * (strength / 65025.0)
    dark = float(rng.uniform(28.0, 48.0))
    _blend_to(img, alpha, np.array([dark, dark, dark * 1.04], np.float32), box)


def draw_stain(img: np.ndarray, shape: PartShape, rng: np.random.Generator, k: float) -> None:
    del k  # sizes come from shape.size
    radius = float(rng.uniform(0.07, 0.14)) * shape.size
    cx, cy = shape.sample_face(rng, 0.5 * radius)
    pad = int(2.2 * radius) + 3
    H, W = img.shape[:2]  # noqa: N806
    x0, y0, x1, y1 = max(0, int(cx) - pad), max(0, int(cy) - pad), min(W, int(cx) + pad), min(H, int(cy) + pad)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for _ in range(int(rng.integers(3, 7))):
        ox, oy = rng.normal(0.0, 0.45 * radius, 2)
        ax = radius * float(rng.uniform(0.35, 0.8))
        ay = ax * float(rng.uniform(0.5, 1.0))
        at = (round((cx + ox - x0) * 16), round((cy + oy - y0) * 16))
        cv2.ellipse(m, at, (max(1, round(ax * 16)), max(1, round(ay * 16))), float(rng.uniform(0, 180)), 0, 360,
                    255, -1, cv2.LINE_AA, 4)  # fmt: skip
    soft = cv2.GaussianBlur(m.astype(np.float32) * (1.0 / 255.0), (0, 0), max(1.0, radius / 5.0))
    density = cv2.resize(rng.uniform(0.55, 1.0, (4, 4)).astype(np.float32), (x1 - x0, y1 - y0),
                         interpolation=cv2.INTER_CUBIC)  # fmt: skip
    d = float(rng.uniform(12.0, 26.0))
    if rng.random() < 0.6:  # oil: darker and browner (blue drops most)
        alpha = soft * density
        delta = np.array([1.25, 1.0, 0.7], np.float32) * d
    else:  # dried coolant: faint body, darker rim, blue-green cast (red drops most)
        alpha = 0.45 * soft * density + 0.6 * 4.0 * soft * (1.0 - soft)
        delta = np.array([0.8, 0.95, 1.15], np.float32) * d
    alpha *= shape.material()[y0:y1, x0:x1].astype(np.float32) * (1.0 / 255.0)
    roi = img[y0:y1, x0:x1].astype(np.float32) - alpha[:, :, None] * delta
    img[y0:y1, x0:x1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)


def draw_chip(img: np.ndarray, shape: PartShape, rng: np.random.Generator, k: float, background: np.ndarray) -> None:
    ex, ey = shape.sample_edge(rng)
    rb = float(rng.uniform(0.05, 0.09)) * shape.size
    n = int(rng.integers(7, 11))
    angles = np.sort(rng.uniform(0.0, 2 * math.pi, n))
    radii = rb * rng.uniform(0.6, 1.15, n)
    poly = np.stack([ex + radii * np.cos(angles), ey + radii * np.sin(angles)], axis=1)
    bite = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(bite, [fix(poly)], 255, cv2.LINE_AA, 4)
    box = _rect(bite, pad=2)
    if box is None:
        return
    x0, y0, x1, y1 = box
    part = shape.mask[y0:y1, x0:x1].astype(np.float32) * (1.0 / 255.0)
    gone = bite[y0:y1, x0:x1].astype(np.float32) * (1.0 / 255.0) * part
    _blend_to(img, gone, background[y0:y1, x0:x1].astype(np.float32), box)
    rim = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.polylines(rim, [fix(poly - [x0, y0])], True, 255, max(1, round(k)), cv2.LINE_AA, 4)
    ra = rim.astype(np.float32) * (0.8 / 255.0) * part * (1.0 - 0.6 * gone)
    bright = float(rng.uniform(196.0, 226.0))
    _blend_to(img, ra, np.array([bright, bright, bright * 1.02], np.float32), box)


def draw_scratch(img: np.ndarray, shape: PartShape, rng: np.random.Generator, k: float) -> None:
    """A 2-3 px bright (60%) or dark straight line, 30-55% of S long, any angle, on the material."""
    length = float(rng.uniform(0.3, 0.55)) * shape.size
    mx, my = shape.sample_face(rng, 0.08 * shape.size)
    theta = float(rng.uniform(0.0, math.pi))
    d = np.array([math.cos(theta), math.sin(theta)]) * length / 2
    ends = np.array([[mx, my]]) + np.stack([-d, d])
    bright = rng.random() < 0.6
    colour = np.array([238, 238, 240] if bright else [92, 92, 96], np.float32)
    thickness = int(rng.integers(2, 4)) * max(1, round(k))
    layer = np.zeros(img.shape[:2], np.uint8)
    p0, p1 = fix(ends)
    cv2.line(layer, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), 255, thickness, cv2.LINE_AA, 4)
    box = _rect(layer)
    if box is None:
        return
    x0, y0, x1, y1 = box
    alpha = layer[y0:y1, x0:x1].astype(np.float32) * shape.material()[y0:y1, x0:x1] * (1.0 / 65025.0)
    _blend_to(img, alpha, colour, box)


def draw_dent(img: np.ndarray, shape: PartShape, rng: np.random.Generator, k: float) -> None:
    """A dark, soft elliptical spot, radius 4.5-7.5% of S, 55-85 grey levels deep, away from holes."""
    del k
    r = float(rng.uniform(0.045, 0.075)) * shape.size
    cx, cy = shape.sample_face(rng, 1.2 * r)
    depth = float(rng.uniform(55, 85))
    pad = int(r * 2.5) + 2
    H, W = img.shape[:2]  # noqa: N806
    x0, y0 = max(0, int(cx) - pad), max(0, int(cy) - pad)
    x1, y1 = min(W, int(cx) + pad), min(H, int(cy) + pad)
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    axes = (max(1, int(r * 16)), max(1, int(r * float(rng.uniform(0.6, 1.0)) * 16)))
    at = (int((cx - x0) * 16), int((cy - y0) * 16))
    cv2.ellipse(mask, at, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1, cv2.LINE_AA, 4)
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.8, r / 3))
    mask = mask * (shape.material()[y0:y1, x0:x1].astype(np.float32) * (1.0 / 255.0))
    patch = img[y0:y1, x0:x1].astype(np.float32) - depth * mask[:, :, None]
    img[y0:y1, x0:x1] = np.clip(patch, 0, 255).astype(np.uint8)


def draw_extra(
    kind: str,
    img: np.ndarray,
    shape: PartShape,
    rng: np.random.Generator,
    k: float,
    background: np.ndarray | None,
) -> None:
    """Paint one of :data:`EXTRA_DEFECTS` on the part described by ``shape``. ``background`` is the
    frame as it was before the part was drawn (needed by ``chip``)."""
    if kind == "crack":
        draw_crack(img, shape, rng, k)
    elif kind == "stain":
        draw_stain(img, shape, rng, k)
    elif kind == "chip":
        if background is None:
            raise DatasetError("chip needs the background frame")
        draw_chip(img, shape, rng, k, background)
    else:
        raise DatasetError(f"not an extra defect kind: {kind!r}")
