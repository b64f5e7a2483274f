"""The third part family: an L-shaped stamped steel bracket on a wooden slat conveyor.

At 320x240 the bracket is an L of 150x126 px with 46 px wide legs (the plate is a 150x108 rectangle,
the flange a 132 px disc): rounded outer corners, a filleted inner corner, a bend line across the
long leg 29 px from its end (the tab beyond it is bent up out of the plane: darker, with a bright
bend highlight and a dark crease), an 11x41 px slot along each leg, a 10 px hole at the corner and
an 8 px hole in the tab. The steel is dark, zinc-phosphated, with a mottled crystalline texture
(small patches of slightly different grey, not streaks or turning grooves), lit from the upper
right; each part has its own patch pattern. The conveyor is made of light birch slats (40 px,
grain across the belt, dark joints): the part is darker than its background, where the plate and
the flange are brighter than theirs. Position jitter (``Conditions.bracket_jitter_px``, ±12 px by
default) and in-plane rotation (``Conditions.bracket_rotation_deg``, ±20° by default) are drawn per
part.

Classes map as on the other families: ``scratch`` and ``dent`` as there, ``missing_hole`` is one of
the four cut-outs (either slot or either hole) never punched, and the extra kinds of
:mod:`converters.synth.defects` likewise.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import cv2
import numpy as np

from converters.synth.defects import EXTRA_DEFECTS, draw_dent, draw_extra, draw_scratch
from converters.synth.shape import Hole, PartShape, draw_pose, drop_shadow, fix, part_window, rotated

#: sizes in pixels at 320x240, scaled with the frame width; local coordinates centred on the L's box
BRACKET_W = 150.0
BRACKET_H = 126.0
_LEG = 46.0
_BEND_X = 46.0  # the bend line, across the long leg
#: (x, y, r, chamfer, half_length, axis degrees) of the cut-outs: two slots, the corner hole, the tab hole
_CUTOUTS = (
    (2.0, -40.0, 5.5, 1.5, 15.0, 0.0),
    (-52.0, 26.0, 5.5, 1.5, 13.0, 90.0),
    (-52.0, -40.0, 5.0, 1.5, 0.0, 0.0),
    (61.0, -40.0, 4.0, 1.5, 0.0, 0.0),
)
#: the middle lines of the two legs (what "inwards" means for a crack from the outer edge)
_SPINE = ((BRACKET_W / 2 - 8.0, -BRACKET_H / 2 + _LEG / 2), (-BRACKET_W / 2 + _LEG / 2, -BRACKET_H / 2 + _LEG / 2),
          (-BRACKET_W / 2 + _LEG / 2, BRACKET_H / 2 - 8.0))  # fmt: skip
_TEX_SPREAD = 64  # each part takes its own window of the texture bank, offset by up to this many px
_STEEL_BGR = (1.05, 1.0, 0.93)  # a cool dark grey
_CHAMFER_COLOUR = (128.0, 130.0, 134.0)  # the sheared edge of a punched hole
_RIM_COLOUR = (124.0, 126.0, 130.0)  # the sheared outer edge


def _rounded(vertices: list[tuple[float, float]], radii: list[float], steps: int = 6) -> np.ndarray:
    """A right-angled polygon with each corner replaced by a tangent arc (convex or concave)."""
    pts: list[tuple[float, float]] = []
    n = len(vertices)
    for i, (vx, vy) in enumerate(vertices):
        r = radii[i]
        px, py = vertices[i - 1]
        nx, ny = vertices[(i + 1) % n]
        lp, ln = math.hypot(px - vx, py - vy), math.hypot(nx - vx, ny - vy)
        ep, en = ((px - vx) / lp, (py - vy) / lp), ((nx - vx) / ln, (ny - vy) / ln)
        cx, cy = vx + r * (ep[0] + en[0]), vy + r * (ep[1] + en[1])
        a0 = math.atan2(vy + r * ep[1] - cy, vx + r * ep[0] - cx)
        a1 = math.atan2(vy + r * en[1] - cy, vx + r * en[0] - cx)
        sweep = (a1 - a0 + math.pi) % (2 * math.pi) - math.pi
        pts += [
            (cx + r * math.cos(a0 + sweep * t / steps), cy + r * math.sin(a0 + sweep * t / steps))
            for t in range(steps + 1)
        ]
    return np.asarray(pts, dtype=np.float64)


@functools.lru_cache(maxsize=4)
def _outline_local(k: float) -> np.ndarray:
    x0, x1, y0, y1 = -BRACKET_W / 2, BRACKET_W / 2, -BRACKET_H / 2, BRACKET_H / 2
    xi, yi = x0 + _LEG, y0 + _LEG  # the inner corner
    corners = [(x0, y0), (x1, y0), (x1, yi), (xi, yi), (xi, y1), (x0, y1)]
    out = _rounded([(x * k, y * k) for x, y in corners], [6.0 * k, 4.0 * k, 4.0 * k, 9.0 * k, 4.0 * k, 4.0 * k])
    out.setflags(write=False)
    return out


def _half(k: float) -> int:
    """Half size of the square around the part's centre that holds it and its shadow at any angle."""
    return math.ceil((math.hypot(BRACKET_W / 2, BRACKET_H / 2) + 9.0) * k) + 8


@functools.lru_cache(maxsize=4)
def bracket_belt_strip(w: int, h: int) -> np.ndarray:
    """A wooden slat conveyor twice the frame width: light birch slats 40 px wide (each its own tone and
    grain, the grain running across the belt) with dark joints. Fixed seed: the same belt everywhere."""
    rng = np.random.default_rng(20241107)
    k = w / 320
    width = 2 * w
    pitch = max(8, round(40 * k))
    joint = max(1, round(2 * k))
    xs = np.arange(width, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)
    n_slats = -(-width // pitch)
    grey = np.empty((h, width), np.float32)
    n_prof = 4 * (pitch + 16)
    for s in range(n_slats):
        a, b = s * pitch, min(width, (s + 1) * pitch)
        walk = np.cumsum(rng.normal(0.0, 1.0, n_prof)).astype(np.float32)
        grain = cv2.GaussianBlur(walk[None, :], (0, 0), sigmaX=3.0, sigmaY=0.1)[0]
        grain = (grain - grain.mean()) / max(float(grain.std()), 1e-6)
        rings = np.sin(np.arange(n_prof, dtype=np.float32) * (2 * np.pi / (4 * rng.uniform(5.0, 9.0) * k)))
        profile = 9.0 * grain + 5.0 * rings
        phase, amp, period = rng.uniform(0, 2 * np.pi), rng.uniform(1.5, 4.0) * k, rng.uniform(40.0, 90.0) * k
        wobble = amp * np.sin(ys / period + phase)
        local = (xs[a:b] - a)[None, :] + wobble[:, None] + 8.0
        idx = np.clip(np.rint(local * 4).astype(np.int64), 0, n_prof - 1)
        edge = np.minimum(xs[a:b] - a, b - 1 - xs[a:b])  # slat edges are eased: a little darker
        grey[:, a:b] = 196.0 + rng.normal(0.0, 7.0) + profile[idx] - 10.0 * np.exp(-edge / (1.5 * k))[None, :]
    grey += cv2.GaussianBlur(rng.normal(0.0, 2.5, (h, width)).astype(np.float32), (0, 0), 0.7)
    grey[:, (np.arange(width) % pitch) < joint] = 58.0
    grey += np.linspace(3.0, -5.0, h, dtype=np.float32)[:, None]
    bgr = np.stack([grey * 0.62, grey * 0.84, grey * 1.0], axis=2)  # birch: warm, light
    out = np.clip(np.rint(bgr), 0, 255).astype(np.uint8)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=4)
def _steel_bank(w: int) -> np.ndarray:
    """Zinc-phosphated steel as a BGR bank: crystalline patches (a Voronoi mosaic of ~6 px
    cells, each a slightly different grey), a fine speckle and a soft mottling."""
    k = w / 320
    side = 2 * _half(k) + 1 + _TEX_SPREAD
    rng = np.random.default_rng(53)
    n = max(16, int(side * side / (36.0 * k * k)))
    seeds = np.ones((side, side), np.uint8)
    seeds[rng.integers(0, side, n), rng.integers(0, side, n)] = 0
    _, labels = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
    levels = rng.normal(0.0, 5.0, int(labels.max()) + 1).astype(np.float32)
    cells = cv2.GaussianBlur(levels[labels], (0, 0), 0.6 * k)
    speckle = cv2.GaussianBlur(rng.normal(0.0, 3.5, (side, side)).astype(np.float32), (0, 0), 0.5)
    coarse = rng.normal(0.0, 5.0, (max(2, side // 24), max(2, side // 24))).astype(np.float32)
    mottle = cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC)
    grey = 92.0 + cells + speckle + mottle
    bgr = np.stack([grey * _STEEL_BGR[0], grey * _STEEL_BGR[1], grey * _STEEL_BGR[2]], axis=2)
    bank = np.clip(np.rint(bgr), 0, 255).astype(np.uint8)
    bank.setflags(write=False)
    return bank


@functools.lru_cache(maxsize=4)
def _light(w: int, h: int) -> np.ndarray:
    """The fixed light's highlight on the steel, brightest at the upper right of the frame."""
    xs = np.arange(w, dtype=np.float32)[None, :] - 0.72 * w
    ys = np.arange(h, dtype=np.float32)[:, None] - 0.22 * h
    glow = 20.0 * np.exp(-(xs**2 + ys**2) / (2 * (0.32 * w) ** 2))
    glow = np.repeat(np.rint(glow).astype(np.uint8)[:, :, None], 3, axis=2)
    glow.setflags(write=False)
    return glow


def _cutouts(k: float, angle: float, centre: tuple[float, float]) -> list[Hole]:
    at = rotated(np.array([(c[0] * k, c[1] * k) for c in _CUTOUTS]), angle, centre)
    return [
        Hole(float(x), float(y), r * k, (r + ch) * k, hl * k, (axis + angle) if hl > 0 else 0.0)
        for (x, y), (_, _, r, ch, hl, axis) in zip(at, _CUTOUTS, strict=True)
    ]


def draw_bracket(
    img: np.ndarray,
    label: str,
    geo: np.random.Generator,
    *,
    jitter_px: float,
    rotation_deg: float,
    x_offset: float = 0.0,
) -> PartShape:
    """Draw a bracket of class ``label`` onto ``img`` (in place); every part draw comes from ``geo``."""
    h, w = img.shape[:2]
    pose = draw_pose(geo, (w, h), jitter_px, rotation_deg, x_offset)
    k, angle = pose.k, pose.angle
    tex_x, tex_y = (int(v) for v in geo.integers(0, _TEX_SPREAD, 2))
    cx, cy = pose.cx, pose.cy
    outline = rotated(_outline_local(k), angle, (cx, cy))
    holes = _cutouts(k, angle, (cx, cy))
    if label == "missing_hole":
        holes.pop(int(geo.integers(0, len(holes))))

    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [fix(outline)], 255, cv2.LINE_AA, 4)
    shadow_at = outline + 4 * k
    x0, y0, x1, y1 = part_window(outline, shadow_at, (w, h), (4, 5))
    background: np.ndarray | None = None
    if x1 > x0 and y1 > y0:
        size = (y1 - y0, x1 - x0)
        origin = np.array([x0, y0], np.float64)
        # a soft shadow down-right of the part darkens the slats
        under, background = drop_shadow(img, (x0, y0, x1, y1), shadow_at - origin, 1.5 * k, 0.45, label == "chip")
        # the steel: the part's own window of the bank and the fixed light's highlight
        half = _half(k)
        bx, by = x0 - round(cx) + half + tex_x, y0 - round(cy) + half + tex_y
        part = cv2.add(_steel_bank(w)[by : by + size[0], bx : bx + size[1]], _light(w, h)[y0:y1, x0:x1])
        # the tab beyond the bend is bent up out of the light: darker; the bend's highlight and crease
        local_tab = [(_BEND_X, -BRACKET_H / 2 - 2), (BRACKET_W / 2 + 2, -BRACKET_H / 2 - 2),
                     (BRACKET_W / 2 + 2, -BRACKET_H / 2 + _LEG + 2), (_BEND_X, -BRACKET_H / 2 + _LEG + 2)]  # fmt: skip
        tab_poly = rotated(np.array(local_tab) * k, angle, (cx, cy)) - origin
        tab = np.zeros(size, np.uint8)
        cv2.fillPoly(tab, [fix(tab_poly)], 255, cv2.LINE_8, 4)  # its one edge inside the part is the bend
        cv2.subtract(part, np.full_like(part, 18), dst=part, mask=tab)
        for off, colour, th in ((-1.3, (150, 152, 156), 2), (1.2, (44, 44, 48), 1)):
            ends = np.array([(_BEND_X + off, -BRACKET_H / 2), (_BEND_X + off, -BRACKET_H / 2 + _LEG)]) * k
            p0, p1 = fix(rotated(ends, angle, (cx, cy)) - origin)
            cv2.line(part, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), colour, max(1, round(th * k)),
                     cv2.LINE_AA, 4)  # fmt: skip
        cv2.polylines(part, [fix(outline - origin)], True, _RIM_COLOUR, max(1, round(k)), cv2.LINE_AA, 4)
        # the punched cut-outs: a bright sheared edge, the slats in the part's shadow through the hole
        for hole in holes:
            local = replace(hole, x=hole.x - x0, y=hole.y - y0)
            local.cut(part, hole.r_chamfer, _CHAMFER_COLOUR)
            reach = hole.half_length + hole.r + 2.0
            hx0, hy0 = max(0, math.floor(local.x - reach)), max(0, math.floor(local.y - reach))
            hx1, hy1 = min(size[1], math.ceil(local.x + reach) + 1), min(size[0], math.ceil(local.y + reach) + 1)
            if hx1 <= hx0 or hy1 <= hy0:
                continue
            through = np.zeros((hy1 - hy0, hx1 - hx0), np.uint8)
            replace(local, x=local.x - hx0, y=local.y - hy0).cut(through, hole.r, 255)
            t = through.astype(np.float32) * (1.0 / 255.0)
            view = under[hy0:hy1, hx0:hx1] // 2
            part[hy0:hy1, hx0:hx1] = cv2.blendLinear(part[hy0:hy1, hx0:hx1], view, 1.0 - t, t)
        m = mask[y0:y1, x0:x1].astype(np.float32) * (1.0 / 255.0)
        img[y0:y1, x0:x1] = cv2.blendLinear(part, under, m, 1.0 - m)
    elif label == "chip":
        background = img.copy()

    spine = rotated(np.array(_SPINE) * k, angle, (cx, cy))
    shape = PartShape((cx, cy), angle, BRACKET_W * k, outline, tuple(holes), mask, spine)
    if label == "scratch":
        draw_scratch(img, shape, geo, k)
    elif label == "dent":
        draw_dent(img, shape, geo, k)
    elif label in EXTRA_DEFECTS:
        draw_extra(label, img, shape, geo, k, background)
    return shape
