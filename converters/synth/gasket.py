"""The fifth part family (sealed for, and measured once in, the third final run): a two-bolt flange gasket seen from
above, on a perforated stainless-steel vacuum belt.

At 320x240 the gasket is a flat die-cut sheet 168 px long: a 100 px round body with two 48 px ears,
joined to it by concave 14 px fillets (a waist about as wide as the ears), a 13 px bolt hole in
each ear (the bolt holes are 120 px apart: that spacing is the part's size S for the defects), and
a 44 px port in the middle lined by a rolled stainless-steel eyelet 5 px wide (outer diameter
54 px). The sheet is compressed aramid fibre in a rubber binder: matte red-brown, with short
randomly oriented fibres (lighter and yellower, or darker) and a faint density mottle; the die-cut
edges are a little darker than the face. Each part has its own tone between brick red and
orange-tan and its own brightness, its own window of the fibre texture, and a part number printed
in off-white ink (a row of six blocks, tangential, beside the port, off the bolt axis: it shows
the rotation beyond the two-fold symmetry) with its own ink density. The sheet is lit by a lamp
above the top edge of the frame: it takes the light as a matte surface (a broad falloff from the
top of the frame towards the bottom, no highlight), while the eyelet's rolled profile has a
diffuse and a sharp specular band on the side towards the lamp. The gasket is thin: its shadow is
short and crisp, and the belt shows through its holes barely dimmed. The belt is brushed stainless
steel (streaks along the belt) with a staggered pattern of 3.4 px perforations every 12 px, dark.
Position jitter (``Conditions.gasket_jitter_px``, ±12 px by default) and in-plane rotation
(``Conditions.gasket_rotation_deg``, ±90° by default: one period of the outline) are drawn per part.

Classes map as on the other families: ``scratch`` and ``dent`` as there (a dent is a compression
mark); ``missing_hole`` is one of the two bolt holes never punched (the port is always there); the
extra kinds of :mod:`converters.synth.defects` likewise (a crack starts at a bolt hole, at the
port's eyelet, at the outer edge heading for the bolt axis, or on the face; a chip bites out of
the edge and the belt shows through).
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from converters.synth.defects import EXTRA_DEFECTS, draw_dent, draw_extra, draw_scratch
from converters.synth.shape import Hole, PartShape, aa_step, draw_pose, drop_shadow, fix, part_window, rotated

#: sizes in pixels at 320x240, scaled with the frame width; local coordinates: the bolt axis along x
BOLT_SPACING = 120.0  # between the bolt-hole centres: the part's size S
_EAR_X = BOLT_SPACING / 2
_EAR_R = 24.0
_BODY_R = 50.0
_FILLET_R = 14.0
GASKET_HALF = _EAR_X + _EAR_R  # half its length: 84 px
_BOLT_R = 6.5
_PORT_R = 22.0  # the port: a through-hole
_RING_R = 27.0  # the eyelet's outer edge (steel from the port's edge to here)
_PRINT_R = 38.5  # the printed part number, on the body beside the port, at +90 degrees
_SHADOW = 2.0  # a thin sheet: a short shadow
_TEX_SPREAD = 64  # each part takes its own window of the texture bank, offset by up to this many px
#: the fibre sheet's tones (B, G, R): brick red and orange-tan; each part lies between them
_BRICK = np.array([52.0, 70.0, 142.0], np.float32)
_TAN = np.array([58.0, 98.0, 164.0], np.float32)
_INK = np.array([196.0, 206.0, 212.0], np.float32)
_GLYPHS = (3.0, 2.0, 3.5, 2.5, 3.0, 2.0)  # the part number's block widths, 1.5 px apart, 5 px high
#: towards the lamp (x, y, z; y down the frame, z towards the camera), and the half vector to the camera
_LAMP = np.array([0.0, -0.55, 0.835]) / np.linalg.norm([0.0, -0.55, 0.835])
_HALFWAY = (_LAMP + np.array([0.0, 0.0, 1.0])) / np.linalg.norm(_LAMP + np.array([0.0, 0.0, 1.0]))


def _arc(cx: float, cy: float, r: float, a0: float, a1: float) -> list[tuple[float, float]]:
    n = max(2, math.ceil(abs(a1 - a0) / math.radians(7.5)))
    return [
        (cx + r * math.cos(a0 + (a1 - a0) * i / n), cy + r * math.sin(a0 + (a1 - a0) * i / n)) for i in range(n + 1)
    ]


@functools.lru_cache(maxsize=4)
def _outline_local(k: float) -> np.ndarray:
    """The body circle and the two ear circles joined by tangent fillet arcs, the bolt axis along x."""
    r0, r1, f, d = _BODY_R, _EAR_R, _FILLET_R, _EAR_X
    px = (d * d + (r0 + f) ** 2 - (r1 + f) ** 2) / (2 * d)  # the fillet circle's centre
    py = math.sqrt((r0 + f) ** 2 - px * px)
    a0, a1 = math.atan2(py, px), math.atan2(py, px - d)  # its tangent points on the body and the ear
    quarter = _arc(0.0, 0.0, r0, math.pi / 2, a0) + _arc(px, py, f, a0 + math.pi, a1 + math.pi)
    quarter += _arc(d, 0.0, r1, a1, 0.0)
    right = quarter + [(x, -y) for x, y in reversed(quarter)][1:]
    half = np.asarray(right[:-1], np.float64)
    pts = np.vstack([half, np.asarray([(-x, y) for x, y in reversed(right)][:-1], np.float64)])
    keep = np.r_[True, np.hypot(*np.diff(pts, axis=0).T) > 1e-6]
    out = pts[keep] * k
    out.setflags(write=False)
    return out


def _half(k: float) -> int:
    """Half size of the square around the part's centre that holds it and its shadow at any angle."""
    return math.ceil((GASKET_HALF + _SHADOW * math.sqrt(2.0) + 4.0) * k) + 10


@functools.lru_cache(maxsize=4)
def gasket_belt_strip(w: int, h: int) -> np.ndarray:
    """A perforated stainless-steel vacuum belt twice the frame width: brushed streaks along the belt
    and a staggered pattern of small dark perforations. Fixed seed: the same belt in every dataset."""
    rng = np.random.default_rng(20250604)
    k = w / 320
    width = 2 * w
    raw = rng.normal(0.0, 6.0, (h, 1)).astype(np.float32) * np.ones((1, width), np.float32)
    raw += rng.normal(0.0, 3.0, (h, width)).astype(np.float32)
    grey = 152.0 + cv2.GaussianBlur(raw, (0, 0), sigmaX=8.0 * k, sigmaY=0.5)
    grey += np.linspace(5.0, -5.0, h, dtype=np.float32)[:, None]
    perf = np.zeros((h, width), np.uint8)
    pitch, r = 12.0 * k, max(0.8, 1.7 * k)
    for row, y in enumerate(np.arange(0.5 * pitch, h + pitch, pitch * math.sqrt(3.0) / 2)):
        for x in np.arange(0.25 * pitch + (0.5 * pitch if row % 2 else 0.0), width + pitch, pitch):
            cv2.circle(perf, (round(x * 16), round(y * 16)), round(r * 16), 255, -1, cv2.LINE_AA, 4)
    t = perf.astype(np.float32) * (1.0 / 255.0)
    grey = grey * (1.0 - t) + 34.0 * t
    out = np.clip(np.rint(np.stack([grey * 1.03, grey, grey * 0.96], axis=2)), 0, 255).astype(np.uint8)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=4)
def _fibre_bank(w: int) -> np.ndarray:
    """The fibre sheet as a float32 bank of two channels: 0 the brightness variation in percent (a
    fine grain, short fibres, a density mottle), 1 the fibres' warmth (-1..1: yellower or darker)."""
    k = w / 320
    side = 2 * _half(k) + 1 + _TEX_SPREAD
    rng = np.random.default_rng(83)
    bank = np.zeros((side, side, 3), np.float32)
    n = int(side * side / (30.0 * k * k))
    xs, ys = rng.uniform(0, side, n), rng.uniform(0, side, n)
    angles, lengths = rng.uniform(0.0, math.pi, n), rng.uniform(3.0, 9.0, n) * k
    tones, warm = rng.normal(0.0, 7.0, n), rng.uniform(-1.0, 1.0, n)
    for x, y, a, length, tone, wv in zip(xs, ys, angles, lengths, tones, warm, strict=True):
        dx, dy = 0.5 * length * math.cos(a), 0.5 * length * math.sin(a)
        p0, p1 = fix(np.array([[x - dx, y - dy], [x + dx, y + dy]]))
        cv2.line(bank, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), (float(tone), float(wv), 0.0),
                 max(1, round(k)), cv2.LINE_AA, 4)  # fmt: skip
    grain = cv2.GaussianBlur(rng.normal(0.0, 2.5, (side, side)).astype(np.float32), (0, 0), 0.6)
    n_cloud = max(2, side // 20)
    cloud = cv2.resize(rng.normal(0.0, 3.0, (n_cloud, n_cloud)).astype(np.float32), (side, side),
                       interpolation=cv2.INTER_CUBIC)  # fmt: skip
    out = np.stack([cv2.GaussianBlur(bank[:, :, 0], (0, 0), 0.4) + grain + cloud, bank[:, :, 1]], axis=2)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=4)
def _matte(w: int, h: int) -> np.ndarray:
    """How much of the lamp a flat matte surface takes, per pixel: the lamp above the top edge."""
    xs = np.arange(w, dtype=np.float32)[None, :] - 0.45 * w
    ys = np.arange(h, dtype=np.float32)[:, None] + 0.3 * h
    height = 1.2 * w
    irradiance = height / (xs**2 + ys**2 + height**2) ** 1.5
    out = (0.55 + 0.45 * irradiance / irradiance.max()).astype(np.float32)
    out.setflags(write=False)
    return out


def _box(x: float, y: float, reach: float, size: tuple[int, int]) -> tuple[slice, slice]:
    """The (rows, columns) slices of the square of half size ``reach`` around ``(x, y)``, clipped."""
    return (slice(max(0, math.floor(y - reach)), min(size[0], max(0, math.ceil(y + reach) + 1))),
            slice(max(0, math.floor(x - reach)), min(size[1], max(0, math.ceil(x + reach) + 1))))  # fmt: skip


def draw_gasket(
    img: np.ndarray,
    label: str,
    geo: np.random.Generator,
    *,
    jitter_px: float,
    rotation_deg: float,
    x_offset: float = 0.0,
) -> PartShape:
    """Draw a gasket of class ``label`` onto ``img`` (in place); every part draw comes from ``geo``."""
    h, w = img.shape[:2]
    pose = draw_pose(geo, (w, h), jitter_px, rotation_deg, x_offset)
    k, angle = pose.k, pose.angle
    tex_x, tex_y = (int(v) for v in geo.integers(0, _TEX_SPREAD, 2))
    gain = float(geo.uniform(0.9, 1.1))
    tone = _BRICK + (_TAN - _BRICK) * float(geo.random())
    ink = float(geo.uniform(0.55, 0.9))
    cx, cy = pose.cx, pose.cy
    outline = rotated(_outline_local(k), angle, (cx, cy))
    ears = rotated(np.array([[-_EAR_X, 0.0], [_EAR_X, 0.0]]) * k, angle, (cx, cy))
    bolts = [Hole(float(x), float(y), _BOLT_R * k, (_BOLT_R + 1.0) * k) for x, y in ears]
    if label == "missing_hole":
        bolts.pop(int(geo.integers(0, len(bolts))))
    holes = (Hole(cx, cy, _PORT_R * k, _RING_R * k), *bolts)

    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [fix(outline)], 255, cv2.LINE_AA, 4)
    shadow_at = outline + _SHADOW * k
    x0, y0, x1, y1 = part_window(outline, shadow_at, (w, h), (4, 5))
    background: np.ndarray | None = None
    if x1 > x0 and y1 > y0:
        size = (y1 - y0, x1 - x0)
        origin = np.array([x0, y0], np.float64)
        # a short, crisp shadow down-right of the sheet
        under, background = drop_shadow(img, (x0, y0, x1, y1), shadow_at - origin, 0.8 * k, 0.4, label == "chip")
        # the fibre sheet: the part's own window of the bank and tone, lit as a matte surface
        half = _half(k)
        bx, by = x0 - round(cx) + half + tex_x, y0 - round(cy) + half + tex_y
        tex = _fibre_bank(w)[by : by + size[0], bx : bx + size[1]]
        lum = _matte(w, h)[y0:y1, x0:x1] * gain * (1.0 + tex[:, :, 0] * 0.01)
        bgr = lum[:, :, None] * tone[None, None, :]
        bgr[:, :, 2] += 12.0 * tex[:, :, 1]
        bgr[:, :, 1] += 5.0 * tex[:, :, 1]
        part = np.clip(bgr + 0.5, 0, 255).astype(np.uint8)
        # the printed part number: a row of blocks along the tangent beside the port
        a = math.radians(angle + 90.0)
        ux, uy, tx, ty = math.cos(a), math.sin(a), -math.sin(a), math.cos(a)
        px, py = cx + _PRINT_R * k * ux - x0, cy + _PRINT_R * k * uy - y0
        sl = _box(px, py, 0.5 * (sum(_GLYPHS) + 1.5 * len(_GLYPHS)) * k + 2.0, size)
        layer = np.zeros(part[sl].shape[:2], np.uint8)
        if layer.size:
            along = -0.5 * (sum(_GLYPHS) + 1.5 * (len(_GLYPHS) - 1))
            for gw in _GLYPHS:
                quad = [(along, -2.5), (along + gw, -2.5), (along + gw, 2.5), (along, 2.5)]
                pts = [(px + (s * tx + n * ux) * k - sl[1].start, py + (s * ty + n * uy) * k - sl[0].start)
                       for s, n in quad]  # fmt: skip
                cv2.fillPoly(layer, [fix(np.array(pts))], 255, cv2.LINE_AA, 4)
                along += gw + 1.5
            pa = layer.astype(np.float32) * (ink / 255.0) * np.clip(0.85 + 0.04 * tex[sl][:, :, 0], 0.0, 1.0)
            part[sl] = np.clip(part[sl] + (_INK - part[sl]) * pa[:, :, None] + 0.5, 0, 255).astype(np.uint8)
        # die-cut edges: the outline and the bolt holes' walls a little darker; the belt through the holes
        eb, eg, er = (float(c) for c in 0.62 * gain * tone)
        edge = (eb, eg, er)
        cv2.polylines(part, [fix(outline - origin)], True, edge, max(1, round(k)), cv2.LINE_AA, 4)
        for hole in bolts:
            sl = _box(hole.x - x0, hole.y - y0, hole.r_chamfer + 2.0, size)
            if sl[0].start >= sl[0].stop or sl[1].start >= sl[1].stop:
                continue
            local = Hole(hole.x - x0 - sl[1].start, hole.y - y0 - sl[0].start, hole.r, hole.r_chamfer)
            view = np.ascontiguousarray(part[sl])
            local.cut(view, hole.r_chamfer, edge)
            through = np.zeros(view.shape[:2], np.uint8)
            local.cut(through, hole.r, 255)
            t = through.astype(np.float32) * (1.0 / 255.0)
            part[sl] = cv2.blendLinear(view, np.ascontiguousarray(under[sl]), 1.0 - t, t)
        # the eyelet: a rolled steel profile, matte and specular towards the lamp; the belt through the port
        sl = _box(cx - x0, cy - y0, _RING_R * k + 2.0, size)
        ox = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx))[None, sl[1]]
        oy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy))[sl[0], None]
        if ox.size and oy.size:
            r = np.maximum(np.sqrt(ox * ox + oy * oy), 1e-3)
            mid, width = 0.5 * (_PORT_R + _RING_R) * k, 0.5 * (_RING_R - _PORT_R) * k
            tilt = np.clip((r - mid) / width, -0.97, 0.97)
            nx, ny, nz = tilt * ox / r, tilt * oy / r, np.sqrt(1.0 - tilt * tilt)
            diffuse = np.clip(nx * _LAMP[0] + ny * _LAMP[1] + nz * _LAMP[2], 0.0, 1.0)
            spec = np.clip(nx * _HALFWAY[0] + ny * _HALFWAY[1] + nz * _HALFWAY[2], 0.0, 1.0) ** 40
            crease = np.exp(-(((r - _RING_R * k) / (0.8 * k)) ** 2))
            steel = (58.0 + 112.0 * diffuse + 80.0 * spec + 0.4 * tex[sl][:, :, 0]) * (1.0 - 0.45 * crease)
            ring = np.stack([steel * 1.03, steel, steel * 0.97], axis=2)
            on = aa_step(_RING_R * k - r)[:, :, None]
            mixed = part[sl].astype(np.float32) * (1.0 - on) + ring * on
            port = aa_step(_PORT_R * k - r)[:, :, None]
            mixed = mixed * (1.0 - port) + under[sl].astype(np.float32) * (0.9 * port)
            part[sl] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
        m = mask[y0:y1, x0:x1].astype(np.float32) * (1.0 / 255.0)
        img[y0:y1, x0:x1] = cv2.blendLinear(part, under, m, 1.0 - m)
    elif label == "chip":
        background = img.copy()

    spine = rotated(np.array([[-_EAR_X, 0.0], [_EAR_X, 0.0]]) * k, angle, (cx, cy))
    shape = PartShape((cx, cy), angle, BOLT_SPACING * k, outline, holes, mask, spine)
    if label == "scratch":
        draw_scratch(img, shape, geo, k)
    elif label == "dent":
        draw_dent(img, shape, geo, k)
    elif label in EXTRA_DEFECTS:
        draw_extra(label, img, shape, geo, k, background)
    return shape
