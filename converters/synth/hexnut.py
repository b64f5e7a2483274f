"""The fourth part family: a large zinc-plated hex nut seen from above, on a dark green cutting mat.

At 320x240 the nut is a regular hexagon 118 px across the flats and 136 px across the corners (the
plate is a 150x108 rectangle, the flange a 132 px disc, the bracket a 150x126 L). Its top face is a
flat bearing ring inside a 111 px chamfer circle; beyond the circle, towards the six corners, lies
the 30° chamfer, a cone lit from the upper left (bright on the lit side, dark on the far side). In
the middle a 60 px countersink leads into a threaded bore: the thread (radius 19-26 px) is drawn as
concentric rings of crests and roots, and through its 38 px core the mat shows, dim, in the nut's
shadow. A small stamped maker's mark (a dash and a dot) sits on the face beside one flat, so the
rotation is visible beyond the six-fold symmetry. The zinc plating is satin with a fine sparkle and a
cloudy variation of the plating, and each part has its own tone: its own brightness and passivation
tint (from a bluish clear zinc to a faint yellow chromate), its own window of the texture and of the
iridescent hue mottle. The mat is a dark green self-healing cutting mat with light grid lines every
16 px (a bold one every fifth) and faint knife scores. Position jitter
(``Conditions.hexnut_jitter_px``, ±10 px by default) and in-plane rotation
(``Conditions.hexnut_rotation_deg``, ±30° by default: one full period of the hexagon) are drawn per
part.

Classes map as on the other families: ``scratch`` and ``dent`` as there; ``missing_hole`` is the
bore never pierced: the cold-forged blank kept its web, so the countersink leads down to a recessed,
dull metal floor (no thread, no mat showing through) instead of a threaded through-hole; the extra
kinds of :mod:`converters.synth.defects` likewise (a crack starts at the bore's edge, the outer
edge or on the face, a chip bites out of an edge or corner).
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from converters.synth.defects import EXTRA_DEFECTS, draw_dent, draw_extra, draw_scratch
from converters.synth.shape import Hole, PartShape, aa_step, draw_pose, drop_shadow, fix, part_window, rotated

#: sizes in pixels at 320x240, scaled with the frame width
HEX_AF = 118.0  # across the flats
HEX_R = HEX_AF / math.sqrt(3.0)  # centre to corner: 68.1 px
_FACE_R = 55.5  # the chamfer circle: the flat bearing face inside, the chamfer cone outside
_CSINK_R = 30.0  # the countersink's outer edge
_MAJOR_R = 26.0  # the thread's roots (where the countersink ends)
_MINOR_R = 19.0  # the thread's crests: the through-hole
_PITCH = 2.3  # ring spacing of the thread
_MARK_R = 43.0  # the maker's mark, on the face beside the flat at +90 degrees
_SHADOW = 5.0  # the nut is thick: its shadow falls further than the flat parts'
_TEX_SPREAD = 64  # each part takes its own window of the texture bank, offset by up to this many px
_LIGHT = (-math.sqrt(0.5), -math.sqrt(0.5))  # towards the light: the upper left
_RIM_COLOUR = (104, 106, 110)  # the outer edge of the chamfer
#: passivation tints (B, G, R gains): clear zinc (bluish) and yellow chromate; each part lies between
_CLEAR = np.array([1.05, 1.0, 0.94], np.float32)
_YELLOW = np.array([0.86, 0.99, 1.04], np.float32)


@functools.lru_cache(maxsize=4)
def _outline_local(k: float) -> np.ndarray:
    """The hexagon, a corner on the +x axis at angle 0, each corner eased by a short 0.8 px cut."""
    r, cut = HEX_R * k, 0.8 * k
    pts: list[tuple[float, float]] = []
    for i in range(6):
        a = math.radians(60.0 * i)
        vx, vy = r * math.cos(a), r * math.sin(a)
        for nb in (-1, 1):  # towards the previous, then the next corner
            b = math.radians(60.0 * (i + nb))
            nx, ny = r * math.cos(b), r * math.sin(b)
            f = cut / r  # the sides are r long
            pts.append((vx + f * (nx - vx), vy + f * (ny - vy)))
    out = np.asarray(pts, dtype=np.float64)
    out.setflags(write=False)
    return out


def _half(k: float) -> int:
    """Half size of the square around the part's centre that holds it and its shadow at any angle."""
    return math.ceil((HEX_R + _SHADOW * math.sqrt(2.0) + 4.0) * k) + 10


@functools.lru_cache(maxsize=4)
def hexnut_mat_strip(w: int, h: int) -> np.ndarray:
    """A dark green self-healing cutting mat twice the frame width: light grid lines every 16 px, a
    bold one every fifth, faint knife scores, a fine grain and a soft mottle. Fixed seed: the same
    mat in every dataset."""
    rng = np.random.default_rng(20250218)
    k = w / 320
    width = 2 * w
    grain = cv2.GaussianBlur(rng.normal(0.0, 3.0, (h, width)).astype(np.float32), (0, 0), 0.8)
    coarse = rng.normal(0.0, 3.0, (max(2, h // 30), max(2, width // 30))).astype(np.float32)
    shade = grain + cv2.resize(coarse, (width, h), interpolation=cv2.INTER_CUBIC)
    shade += np.linspace(4.0, -4.0, h, dtype=np.float32)[:, None]
    lines = np.zeros((h, width), np.float32)
    pitch, thin, bold = max(4, round(16 * k)), max(1, round(k)), max(1, round(2 * k))
    origin = round(7 * k)
    for axis_len, is_col in ((width, True), (h, False)):
        pos = np.arange(axis_len) - origin
        cell = np.floor_divide(pos, pitch)
        within = pos - cell * pitch
        major = (cell % 5 == 0) & (within < bold)
        minor = within < thin
        weight = np.where(major, 1.0, np.where(minor, 0.55, 0.0)).astype(np.float32)
        if is_col:
            np.maximum(lines, weight[None, :], out=lines)
        else:
            np.maximum(lines, weight[:, None], out=lines)
    scores = np.zeros((h, width), np.float32)
    for _ in range(int(30 * width * h / (640 * 240))):
        x, y = rng.uniform(0, width), rng.uniform(0, h)
        length = rng.uniform(20.0, 90.0) * k
        a = rng.choice([0.0, 0.5 * math.pi]) + rng.normal(0.0, 0.25)
        dx, dy = 0.5 * length * math.cos(a), 0.5 * length * math.sin(a)
        p0, p1 = fix(np.array([[x - dx, y - dy], [x + dx, y + dy]]))
        cv2.line(scores, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), float(rng.uniform(0.3, 0.8)), 1,
                 cv2.LINE_AA, 4)  # fmt: skip
    mat = np.array([60.0, 94.0, 40.0], np.float32)  # dark green
    grid = np.array([112.0, 150.0, 108.0], np.float32)  # pale green-grey print
    bgr = mat[None, None, :] + shade[:, :, None] + 12.0 * scores[:, :, None]
    bgr += (grid[None, None, :] - bgr) * (0.7 * lines)[:, :, None]
    out = np.clip(np.rint(bgr), 0, 255).astype(np.uint8)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=4)
def _zinc_bank(w: int) -> np.ndarray:
    """Zinc plating as a float32 bank of two channels: 0 the grey variation (a satin grain, a sparse
    sparkle, a cloudy variation of the plating), 1 a slow iridescent hue mottle (-1..1)."""
    k = w / 320
    side = 2 * _half(k) + 1 + _TEX_SPREAD
    rng = np.random.default_rng(61)
    grain = cv2.GaussianBlur(rng.normal(0.0, 4.0, (side, side)).astype(np.float32), (0, 0), 0.6)
    specks = (rng.random((side, side)) < 0.012) * rng.uniform(10.0, 26.0, (side, side))
    sparkle = cv2.GaussianBlur(specks.astype(np.float32), (0, 0), 0.5)
    n_cloud = max(2, side // 18)
    cloud = cv2.resize(rng.normal(0.0, 5.0, (n_cloud, n_cloud)).astype(np.float32), (side, side),
                       interpolation=cv2.INTER_CUBIC)  # fmt: skip
    n_hue = max(2, side // 40)
    hue = cv2.resize(rng.uniform(-1.0, 1.0, (n_hue, n_hue)).astype(np.float32), (side, side),
                     interpolation=cv2.INTER_CUBIC)  # fmt: skip
    bank = np.stack([grain + sparkle + cloud, np.clip(hue, -1.0, 1.0)], axis=2).astype(np.float32)
    bank.setflags(write=False)
    return bank


@functools.lru_cache(maxsize=4)
def _glow(w: int, h: int) -> np.ndarray:
    """The fixed light's soft highlight on the zinc, brightest at the upper left of the frame."""
    xs = np.arange(w, dtype=np.float32)[None, :] - 0.3 * w
    ys = np.arange(h, dtype=np.float32)[:, None] - 0.25 * h
    glow = (16.0 * np.exp(-(xs**2 + ys**2) / (2 * (0.35 * w) ** 2))).astype(np.float32)
    glow.setflags(write=False)
    return glow


def draw_hexnut(
    img: np.ndarray,
    label: str,
    geo: np.random.Generator,
    *,
    jitter_px: float,
    rotation_deg: float,
    x_offset: float = 0.0,
) -> PartShape:
    """Draw a hex nut of class ``label`` onto ``img`` (in place); every part draw comes from ``geo``."""
    h, w = img.shape[:2]
    pose = draw_pose(geo, (w, h), jitter_px, rotation_deg, x_offset)
    k, angle = pose.k, pose.angle
    tex_x, tex_y = (int(v) for v in geo.integers(0, _TEX_SPREAD, 2))
    gain = float(geo.uniform(0.9, 1.08))
    tint_t = float(geo.random()) ** 1.5  # most parts near clear zinc, some yellower
    iridescence = float(geo.uniform(2.0, 7.0))
    cx, cy = pose.cx, pose.cy
    outline = rotated(_outline_local(k), angle, (cx, cy))
    pierced = label != "missing_hole"
    holes = [Hole(cx, cy, _MINOR_R * k, _CSINK_R * k)] if pierced else []

    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [fix(outline)], 255, cv2.LINE_AA, 4)
    shadow_at = outline + _SHADOW * k
    x0, y0, x1, y1 = part_window(outline, shadow_at, (w, h), (5, 6))
    background: np.ndarray | None = None
    if x1 > x0 and y1 > y0:
        size = (y1 - y0, x1 - x0)
        origin = np.array([x0, y0], np.float64)
        # a soft shadow down-right of the part darkens the mat
        under, background = drop_shadow(img, (x0, y0, x1, y1), shadow_at - origin, 2.0 * k, 0.5, label == "chip")
        # the zinc: the part's own window of the bank, the fixed light's highlight, the part's tone
        half = _half(k)
        bx, by = x0 - round(cx) + half + tex_x, y0 - round(cy) + half + tex_y
        tex = _zinc_bank(w)[by : by + size[0], bx : bx + size[1]]
        grain, hue = tex[:, :, 0], tex[:, :, 1]
        face = (168.0 + grain + _glow(w, h)[y0:y1, x0:x1]) * gain
        ox = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx))[None, :]
        oy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy))[:, None]
        r = np.sqrt(ox * ox + oy * oy)
        lit = (ox * _LIGHT[0] + oy * _LIGHT[1]) / np.maximum(r, 1e-3)  # cos of the angle to the light
        # the chamfer cone beyond the chamfer circle, its edge catching the light
        grey = face + aa_step(r - _FACE_R * k) * (42.0 * lit - 14.0) + 9.0 * np.exp(-(((r - _FACE_R * k) / k) ** 2))
        # the bore and its countersink, drawn only in the box around them (outside it they change nothing)
        reach = _CSINK_R * k + 2.0
        bore = (slice(max(0, math.floor(cy - reach) - y0), max(0, math.ceil(cy + reach) + 1 - y0)),
                slice(max(0, math.floor(cx - reach) - x0), max(0, math.ceil(cx + reach) + 1 - x0)))  # fmt: skip
        rb, lb, gb, fb = r[bore], lit[bore], grey[bore], face[bore]
        # the countersink: a cone the other way, lit on the side away from the light
        csink = 150.0 * gain + 0.5 * grain[bore] - 40.0 * lb
        gb += aa_step(_CSINK_R * k - rb) * (csink - gb)
        inner = aa_step(_MAJOR_R * k - rb)
        if pierced:  # the thread: crests and roots as rings, darker towards the core, in the bore's shade
            depth = (rb - _MINOR_R * k) / ((_MAJOR_R - _MINOR_R) * k)
            rings = np.sin(2 * math.pi * rb / max(1.8, _PITCH * k))  # no finer than the pixels can show
            thread = (112.0 - 28.0 * (1.0 - depth) + 26.0 * rings - 22.0 * lb) * gain
        else:  # the web of an unpierced blank: a recessed dull floor, a dark crease round its edge
            crease = np.exp(-(((rb - _MAJOR_R * k) / (1.2 * k)) ** 2))
            thread = 0.62 * fb + 6.0 * lb - 30.0 * crease
        gb += inner * (thread - gb)
        tint = _CLEAR + (_YELLOW - _CLEAR) * tint_t
        bgr = grey[:, :, None] * tint[None, None, :]
        bgr[:, :, 0] -= iridescence * hue
        bgr[:, :, 2] += iridescence * hue
        part = np.clip(bgr + 0.5, 0, 255).astype(np.uint8)
        # the maker's mark: a stamped dash and a dot beside one flat
        a = math.radians(angle + 90.0)
        ux, uy = math.cos(a), math.sin(a)  # towards the flat
        tx, ty = -uy, ux  # along it
        mx, my = cx + _MARK_R * k * ux - x0, cy + _MARK_R * k * uy - y0
        dash = fix(np.array([[mx - 5.0 * k * tx, my - 5.0 * k * ty], [mx + 1.0 * k * tx, my + 1.0 * k * ty]]))
        cv2.line(part, (int(dash[0, 0]), int(dash[0, 1])), (int(dash[1, 0]), int(dash[1, 1])), (96, 98, 102),
                 max(1, round(1.6 * k)), cv2.LINE_AA, 4)  # fmt: skip
        dot = fix(np.array([mx + 4.5 * k * tx, my + 4.5 * k * ty]))
        cv2.circle(part, (int(dot[0]), int(dot[1])), max(1, round(1.3 * k * 16)), (96, 98, 102), -1, cv2.LINE_AA, 4)
        cv2.polylines(part, [fix(outline - origin)], True, _RIM_COLOUR, max(1, round(k)), cv2.LINE_AA, 4)
        if pierced and rb.size:  # the mat through the bore's core, dim: deep in the nut's shade
            t = aa_step(_MINOR_R * k - rb)
            part[bore] = cv2.blendLinear(part[bore], under[bore] // 3, 1.0 - t, t)
        m = mask[y0:y1, x0:x1].astype(np.float32) * (1.0 / 255.0)
        img[y0:y1, x0:x1] = cv2.blendLinear(part, under, m, 1.0 - m)
    elif label == "chip":
        background = img.copy()

    shape = PartShape((cx, cy), angle, 2 * HEX_R * k, outline, tuple(holes), mask)
    if label == "scratch":
        draw_scratch(img, shape, geo, k)
    elif label == "dent":
        draw_dent(img, shape, geo, k)
    elif label in EXTRA_DEFECTS:
        draw_extra(label, img, shape, geo, k, background)
    return shape
