"""The sixth part family (sealed for, and measured once in, the fourth final run): a sand-cast aluminium cover seen from
above, on a woven wire-mesh foundry belt.

At 320x240 the cover is 136 px long and 100 px wide (that length is the part's size S for the
defects): a flange plate 112x76 px with rounded corners, 3 px thick, carrying a raised box 100x64 px
(6.5 px high, a 4 px draft wall and a faint dome on top) and, at the four corners, round lugs (11 px
radius, joined to the flange by 4 px fillets) with a cast boss each (8.5 px radius) drilled with an
8.4 px mounting hole and a bright machined chamfer. In the middle a machined pad 50 px across stands
proud of the box round a 22 px through-bore; four ribs, 2.4 px high, run from the pad over the box's
wall to the bosses. Two round ejector-pin marks (smooth, slightly recessed) and a row of five raised
cast letters beside the pad break the symmetry. All of it is one height field shaded by a lamp fixed
to the frame (upper left, about 40 degrees up), so walls, ribs and bosses light and shade by how the
part lies. The cast skin is rough at three scales (fine and medium sand grain in the relief, a
coarse cloud in the tone), each part with its own weights of them, window of the texture, tone (cool
bright grey to duller, warmer grey) and 25-70 porosity dots (0.5-1.3 px pits, some clustered, a few
on the machined faces: normal, not defects). The machined faces are smooth and brighter, with the
bow-tie highlight of a faced surface lit from one side. Its shadow falls 5 px down-right, soft; the
belt shows dim through its holes. The belt is a woven wire mesh of oxidised, partly rusty steel:
cross rods every 12 px, chevron spirals between them, dark gaps. Position jitter
(``Conditions.casting_jitter_px``, ±10 px by default) and in-plane rotation
(``Conditions.casting_rotation_deg``, any angle by default: castings slide off the shake-out chute
onto the belt at any angle) are drawn per part.

Classes, as a casting has them: ``scratch`` a handling scratch (a straight groove through the skin:
a scraped line, brighter than the skin but not than the part's brightest faces, with a dark edge,
30-55% of S long); ``dent`` an impact mark (a shallow crater in the relief, 5-8% of S in radius, its
skin crushed smoother, shaded by the same lamp); ``missing_hole`` one of the four bosses never
drilled (its cast top stays rough, no chamfer, no hole); ``crack`` a hot tear (a jagged, branched,
dark and partly open tear 12-25% of S long, starting where a rib or a boss meets the wall or
flange); ``stain`` an oil or discoloration blotch (:mod:`converters.synth.defects`' painter);
``chip`` a broken corner (an irregular bite out of a lug or the flange edge, the belt showing
through, the fresh fracture matte and grainy).
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from converters.synth.defects import draw_stain
from converters.synth.shape import Hole, PartShape, aa_step, draw_pose, drop_shadow, fix, part_window, rotated

#: sizes in pixels at 320x240, scaled with the frame width; local coordinates: the long axis along x
_FLANGE = (56.0, 38.0, 12.0)  # half length, half width, corner radius
_BODY = (50.0, 32.0, 9.0)
_LUG = (57.0, 39.0)  # the lug centres, at (+-x, +-y)
_LUG_R, _FILLET, _BOSS_R = 11.0, 4.0, 8.5
_HOLE_R, _CHAMFER_R = 4.2, 5.6
_PAD_R, _BORE_R = 25.0, 11.0
CASTING_SIZE = 2 * (_LUG[0] + _LUG_R)  # its length: the part's size S, 136 px
CASTING_REACH = math.hypot(*_LUG) + _LUG_R + 0.5  # centre to the farthest point of the outline
_SHADOW = 5.0
_TEX_SPREAD = 64
_EJECTORS = ((-24.0, 21.0), (24.0, 21.0))
_LETTERS = tuple((-12.0 + 5.5 * i, -24.5) for i in range(5))  # centres; blocks 3.4x5 px
#: towards the lamp (x, y, z; y down the frame, z towards the camera) and the half vector to the camera
_LAMP = np.array([-0.5, -0.55, 0.67]) / np.linalg.norm([-0.5, -0.55, 0.67])
_HALFWAY = (_LAMP + np.array([0.0, 0.0, 1.0])) / np.linalg.norm(_LAMP + np.array([0.0, 0.0, 1.0]))
_LAMP_AZ = math.atan2(_LAMP[1], _LAMP[0])
#: the alloy's tone (B, G, R gains): cool bright grey and a duller, warmer grey; each part between
_COOL = np.array([1.03, 1.0, 0.97], np.float32)
_WARM = np.array([0.93, 0.98, 1.03], np.float32)


def _ramp(v: np.ndarray, width: float) -> np.ndarray:
    """0 below 0, 1 above ``width``, smooth in between."""
    t = np.clip(v / width, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _sd_box(u: np.ndarray, v: np.ndarray, hx: float, hy: float, r: float) -> np.ndarray:
    """Signed distance to a rounded rectangle centred at the origin (negative inside)."""
    qx, qy = np.abs(u) - (hx - r), np.abs(v) - (hy - r)
    return np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0)) + np.minimum(np.maximum(qx, qy), 0.0) - r


def _sd_part(u: np.ndarray, v: np.ndarray, k: float) -> np.ndarray:
    """Signed distance to the outline: the flange and the four lugs, joined by smooth fillets."""
    a = _sd_box(u, v, _FLANGE[0] * k, _FLANGE[1] * k, _FLANGE[2] * k)
    b = np.hypot(np.abs(u) - _LUG[0] * k, np.abs(v) - _LUG[1] * k) - _LUG_R * k
    f = _FILLET * k
    t = np.maximum(f - np.abs(a - b), 0.0) / f
    return np.minimum(a, b) - t * t * f / 4.0


@functools.lru_cache(maxsize=4)
def _outline_local(k: float) -> np.ndarray:
    """The outline, found along 480 rays from the centre (the part is star-shaped about it)."""
    a = np.linspace(0.0, 2 * math.pi, 480, endpoint=False)
    lo, hi = np.zeros_like(a), np.full_like(a, (CASTING_REACH + 2.0) * k)
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        inside = _sd_part(mid * np.cos(a), mid * np.sin(a), k) < 0
        lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    r = 0.5 * (lo + hi)
    out = np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
    out.setflags(write=False)
    return out


def _half(k: float) -> int:
    return math.ceil((CASTING_REACH + _SHADOW * math.sqrt(2.0) + 4.0) * k) + 10


@functools.lru_cache(maxsize=4)
def casting_belt_strip(w: int, h: int) -> np.ndarray:
    """A woven wire-mesh belt twice the frame width: cross rods every 12 px, chevron spirals between
    them, dark gaps, oxidised and partly rusty steel. Fixed seed: the same belt in every dataset."""
    rng = np.random.default_rng(20251202)
    k = w / 320
    width = 2 * w
    wires = np.zeros((h, width), np.float32)
    pitch, step = 12.0 * k, 5.0 * k
    for i, x in enumerate(np.arange(0.0, width + pitch, pitch)):
        rise = 1.6 * step * (1 if i % 2 else -1)
        for y in np.arange(-3 * step, h + 3 * step, step):
            p0, p1 = fix(np.array([[x + 1.0 * k, y], [x + pitch - 1.0 * k, y + rise]]))
            cv2.line(wires, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), 0.85, max(1, round(1.3 * k)),
                     cv2.LINE_AA, 4)  # fmt: skip
    for x in np.arange(0.0, width + pitch, pitch):
        cv2.line(wires, (round(x * 16), -16), (round(x * 16), (h + 1) * 16), 1.0, max(1, round(2.6 * k)),
                 cv2.LINE_AA, 4)  # fmt: skip
    shade = cv2.GaussianBlur(wires, (0, 0), 0.45 * k + 0.2)
    n_rust = (max(2, h // 24), max(2, width // 24))
    rust = cv2.resize(rng.uniform(0.0, 1.0, n_rust).astype(np.float32), (width, h), interpolation=cv2.INTER_CUBIC)
    rust = np.clip(1.3 * rust - 0.25, 0.0, 1.0)[:, :, None]
    steel = np.array([90.0, 97.0, 106.0], np.float32) * (1 - rust) + np.array([60.0, 86.0, 122.0], np.float32) * rust
    grain = cv2.GaussianBlur(rng.normal(0.0, 6.0, (h, width)).astype(np.float32), (0, 0), 0.7)[:, :, None]
    gap = np.array([20.0, 23.0, 27.0], np.float32)
    s = np.clip(shade, 0.0, 1.0)[:, :, None]
    bgr = gap + (steel + grain - gap) * s**0.8 + 30.0 * s**6  # a glint along each wire's crown
    bgr += np.linspace(5.0, -5.0, h, dtype=np.float32)[:, None, None]
    out = np.clip(np.rint(bgr), 0, 255).astype(np.uint8)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=4)
def _sand_bank(w: int) -> np.ndarray:
    """The cast skin as three unit-variance channels: a fine grain, a medium grain, a coarse cloud."""
    k = w / 320
    side = 2 * _half(k) + 1 + _TEX_SPREAD
    rng = np.random.default_rng(47)
    out = []
    for sigma in (0.7 * k, 2.2 * k):
        g = cv2.GaussianBlur(rng.normal(0.0, 1.0, (side, side)).astype(np.float32), (0, 0), max(0.5, sigma))
        out.append(g / g.std())
    n = max(2, side // 16)
    cloud = cv2.resize(rng.normal(0.0, 1.0, (n, n)).astype(np.float32), (side, side), interpolation=cv2.INTER_CUBIC)
    out.append(cloud / cloud.std())
    bank = np.stack(out, axis=2)
    bank.setflags(write=False)
    return bank


def _relief(u: np.ndarray, v: np.ndarray, k: float, drilled: tuple[bool, ...]) -> tuple[np.ndarray, ...]:
    """The height field (px), the machined faces, the smooth faces and the through-holes (0..1)."""
    au, av = np.abs(u), np.abs(v)
    h = 3.0 * k * _ramp(-_sd_part(u, v, k), 1.5 * k)  # the flange, its edge eased
    body = -_sd_box(u, v, _BODY[0] * k, _BODY[1] * k, _BODY[2] * k)
    dome = 2.0 * np.clip(1.0 - (u / (_BODY[0] * k)) ** 2 - (v / (_BODY[1] * k)) ** 2, 0.0, 1.0)
    h = h + (6.5 + dome) * k * _ramp(body, 4.0 * k)
    lx, ly = au - _LUG[0] * k, av - _LUG[1] * k
    h = np.maximum(h, (3.0 + 5.0 * _ramp(_BOSS_R * k - np.hypot(lx, ly), 1.2 * k)) * k)
    # the ribs, pad to bosses: by symmetry one, in |u|, |v|
    length = math.hypot(*_LUG)
    dx, dy = _LUG[0] / length, _LUG[1] / length
    t = np.clip((au * dx + av * dy - _PAD_R * k) / ((length - _PAD_R - _BOSS_R) * k), 0.0, 1.0)
    off = np.abs(au * dy - av * dx) / (3.2 * k)
    rib = 2.4 * k * np.sqrt(np.clip(1.0 - off * off, 0.0, 1.0))
    h = h + np.where((t > 0.0) & (t < 1.0), rib, 0.0)
    for bx, by in _LETTERS:  # raised cast letters
        h = h + 1.0 * k * _ramp(-_sd_box(u - bx * k, v - by * k, 1.7 * k, 2.5 * k, 0.5 * k), 0.6 * k)
    smooth = np.zeros_like(h)
    for ex, ey in _EJECTORS:  # ejector-pin marks: round, smooth, a little recessed
        pin = aa_step((3.2 - np.hypot(u / k - ex, v / k - ey)) * k)
        h, smooth = h - 0.5 * k * pin, np.maximum(smooth, pin)
    rp = np.hypot(u, v)
    pad = (13.0 - 2.5 * np.clip((rp - (_PAD_R - 1.0) * k) / k, 0.0, 1.0)) * k
    h = np.where(rp < _PAD_R * k, np.maximum(h, pad), h)
    bore = (11.5 + np.clip((rp - _BORE_R * k) / (1.5 * k), 0.0, 1.0)) * k
    h = np.where(rp < (_BORE_R + 1.5) * k, np.minimum(h, bore), h)
    machined = aa_step((_PAD_R - 1.0) * k - rp)
    through = aa_step(_BORE_R * k - rp)
    for i, (sx, sy) in enumerate(((-1, -1), (1, -1), (1, 1), (-1, 1))):
        r = np.hypot(u - sx * _LUG[0] * k, v - sy * _LUG[1] * k)
        if drilled[i]:
            cone = (8.0 - 1.2 * (_CHAMFER_R - r / k)) * k
            h = np.where(r < _CHAMFER_R * k, np.minimum(h, cone), h)
            machined = np.maximum(machined, aa_step(_CHAMFER_R * k - r))
            through = np.maximum(through, aa_step(_HOLE_R * k - r))
    return h, machined, np.maximum(smooth, machined), through


def _roi(layer: np.ndarray, pad: int = 2) -> tuple[slice, slice]:
    """The (rows, columns) box round a layer's non-zero pixels, padded and clipped (empty if none)."""
    x, y, w, h = cv2.boundingRect(layer)
    H, W = layer.shape[:2]  # noqa: N806
    return slice(max(0, y - pad), min(H, y + h + pad)), slice(max(0, x - pad), min(W, x + w + pad))


def _tear(rng: np.random.Generator, start: np.ndarray, heading: float, length: float, k: float) -> np.ndarray:
    """A jagged path: short steps whose heading wanders and zig-zags (intergranular)."""
    n = max(5, int(length / (2.0 * k)))
    ang = heading + np.cumsum(rng.normal(0.0, 0.18, n)) + rng.normal(0.0, 0.6, n)
    steps = np.stack([np.cos(ang), np.sin(ang)], axis=1) * (length / n)
    return np.vstack([start[None, :], start + np.cumsum(steps, axis=0)])


def _draw_crack(img: np.ndarray, shape: PartShape, rng: np.random.Generator, k: float) -> None:
    """A hot tear where a rib meets the box or a boss meets the flange, with one to three branches."""
    a = math.radians(shape.angle)
    corner = (int(rng.integers(0, 2)) * 2 - 1, int(rng.integers(0, 2)) * 2 - 1)
    length_ = math.hypot(*_LUG)
    if rng.random() < 0.5:  # at a boss, on its side towards the box
        base = math.atan2(-corner[1] * _LUG[1], -corner[0] * _LUG[0]) + float(rng.uniform(-1.0, 1.0))
        lu = corner[0] * _LUG[0] + (_BOSS_R + 0.8) * math.cos(base)
        lv = corner[1] * _LUG[1] + (_BOSS_R + 0.8) * math.sin(base)
        heading_local = base + float(rng.normal(0.0, 0.5))
    else:  # at a rib's root where it crosses the box's wall, along the wall or across the rib
        f = float(rng.uniform(0.55, 0.8))
        side = 1 if rng.random() < 0.5 else -1
        du, dv = corner[0] * _LUG[0] / length_, corner[1] * _LUG[1] / length_
        lu, lv = f * corner[0] * _LUG[0] - side * 3.0 * dv, f * corner[1] * _LUG[1] + side * 3.0 * du
        heading_local = math.atan2(du, -dv) * side + float(rng.normal(0.0, 0.5))
    start = rotated(np.array([[lu, lv]]) * k, shape.angle, shape.centre)[0]
    length = float(rng.uniform(0.12, 0.25)) * shape.size
    pts = [_tear(rng, start, heading_local + a, length, k)]
    for _ in range(int(rng.integers(1, 4))):
        at = pts[0][int(rng.integers(1, len(pts[0]) - 1))]
        turn = float(rng.uniform(0.5, 1.1)) * (1 if rng.random() < 0.5 else -1)
        pts.append(_tear(rng, at, heading_local + a + turn, length * float(rng.uniform(0.15, 0.4)), k))
    layer = np.zeros(img.shape[:2], np.uint8)
    cv2.polylines(layer, [fix(pts[0])], False, 255, max(1, round(1.6 * k)), cv2.LINE_AA, 4)
    cv2.polylines(layer, [fix(p) for p in pts[1:]], False, 190, max(1, round(k)), cv2.LINE_AA, 4)
    box = _roi(layer)
    alpha = layer[box].astype(np.float32) * shape.material()[box] * (float(rng.uniform(0.7, 0.9)) / 65025.0)
    roi = img[box].astype(np.float32)
    img[box] = np.clip(roi - 0.75 * roi * alpha[:, :, None] + 0.5, 0, 255).astype(np.uint8)


def _draw_scratch(img: np.ndarray, shape: PartShape, rng: np.random.Generator, k: float) -> None:
    """A handling scratch: a straight groove, scraped bright, its edge towards the lamp dark."""
    length = float(rng.uniform(0.3, 0.55)) * shape.size
    mx, my = shape.sample_face(rng, 0.06 * shape.size)
    theta = float(rng.uniform(0.0, math.pi))
    d = np.array([math.cos(theta), math.sin(theta)]) * length / 2
    ends = np.array([[mx, my]]) + np.stack([-d, d])
    normal = np.array([-d[1], d[0]]) / np.linalg.norm(d)
    if normal @ _LAMP[:2] < 0:
        normal = -normal
    bright, dark = np.zeros(img.shape[:2], np.uint8), np.zeros(img.shape[:2], np.uint8)
    for layer, shift, width in ((bright, 0.0, 2.0), (dark, 1.3, 1.0)):
        p0, p1 = fix(ends + shift * k * normal)
        cv2.line(layer, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), 255, max(1, round(width * k)),
                 cv2.LINE_AA, 4)  # fmt: skip
    lift, sink = float(rng.uniform(30.0, 48.0)), float(rng.uniform(20.0, 34.0))
    part = _roi(shape.mask)
    cap = float(np.percentile(img[part][shape.material()[part] > 0], 98.0))  # no brighter than its bright faces
    box = _roi(cv2.bitwise_or(bright, dark))
    m = shape.material()[box].astype(np.float32) * (1.0 / 65025.0)
    base = img[box].astype(np.float32)
    scraped = np.maximum(np.minimum(base + lift, cap), base)
    a_bright = (bright[box].astype(np.float32) * m)[:, :, None]
    a_dark = (dark[box].astype(np.float32) * m * (1.0 - bright[box] / 255.0))[:, :, None]
    out = base + (scraped - base) * a_bright - sink * a_dark
    img[box] = np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _draw_chip(img: np.ndarray, shape: PartShape, rng: np.random.Generator, k: float, background: np.ndarray) -> None:
    """A broken corner: a bite out of a lug or the flange edge; the fracture is matte and grainy."""
    cx, cy = shape.centre
    if rng.random() < 0.7:  # a lug's outer edge
        sx, sy = int(rng.integers(0, 2)) * 2 - 1, int(rng.integers(0, 2)) * 2 - 1
        b = math.atan2(sy * _LUG[1], sx * _LUG[0]) + float(rng.uniform(-0.9, 0.9))
        local = np.array([[sx * _LUG[0] + _LUG_R * math.cos(b), sy * _LUG[1] + _LUG_R * math.sin(b)]]) * k
        ex, ey = rotated(local, shape.angle, (cx, cy))[0]
    else:
        ex, ey = shape.sample_edge(rng)
    rb = float(rng.uniform(0.05, 0.08)) * shape.size
    n = int(rng.integers(7, 11))
    angles = np.sort(rng.uniform(0.0, 2 * math.pi, n))
    radii = rb * rng.uniform(0.6, 1.15, n)
    poly = np.stack([ex + radii * np.cos(angles), ey + radii * np.sin(angles)], axis=1)
    bite = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(bite, [fix(poly)], 255, cv2.LINE_AA, 4)
    grow = max(1, round(1.5 * k))
    box = _roi(bite, grow + 2)
    part = shape.mask[box].astype(np.float32) * (1.0 / 255.0)
    gone = bite[box].astype(np.float32) * (1.0 / 255.0) * part
    rim = cv2.dilate(bite[box], np.ones((3, 3), np.uint8), iterations=grow).astype(np.float32)
    face = (np.clip(rim * (1.0 / 255.0) - gone, 0.0, 1.0) * part)[:, :, None]
    roi = img[box].astype(np.float32)
    fresh = roi * 0.95 + 14.0 + rng.normal(0.0, 14.0, part.shape).astype(np.float32)[:, :, None]
    out = roi * (1.0 - 0.85 * face) + fresh * (0.85 * face)
    out = out * (1.0 - gone[:, :, None]) + background[box].astype(np.float32) * gone[:, :, None]
    img[box] = np.clip(out + 0.5, 0, 255).astype(np.uint8)


def draw_casting(
    img: np.ndarray,
    label: str,
    geo: np.random.Generator,
    *,
    jitter_px: float,
    rotation_deg: float,
    x_offset: float = 0.0,
) -> PartShape:
    """Draw a cast cover of class ``label`` onto ``img`` (in place); every part draw comes from ``geo``."""
    h, w = img.shape[:2]
    pose = draw_pose(geo, (w, h), jitter_px, rotation_deg, x_offset)
    k, angle, cx, cy = pose.k, pose.angle, pose.cx, pose.cy
    tex_x, tex_y = (int(v) for v in geo.integers(0, _TEX_SPREAD, 2))
    gain = float(geo.uniform(0.88, 1.08))
    tone = _COOL + (_WARM - _COOL) * float(geo.random())
    fine, medium, coarse = (float(v) for v in geo.uniform((0.5, 0.4, 0.5), (1.1, 1.2, 1.5)))
    n_pores = int(geo.integers(25, 71))
    clump = geo.uniform((-45.0, -28.0), (45.0, 28.0))
    pores = np.where(geo.random((n_pores, 1)) < 0.3, clump + geo.normal(0.0, 5.0, (n_pores, 2)),
                     geo.uniform((-62.0, -44.0), (62.0, 44.0), (n_pores, 2)))  # fmt: skip
    pore_r = geo.uniform(0.45, 1.3, n_pores)
    drilled = [True, True, True, True]
    if label == "missing_hole":
        drilled[int(geo.integers(0, 4))] = False
    outline = rotated(_outline_local(k), angle, (cx, cy))
    lugs = rotated(np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], np.float64) * _LUG * k, angle, (cx, cy))
    bosses = [Hole(float(x), float(y), _HOLE_R * k, _BOSS_R * k) for (x, y), d in zip(lugs, drilled, strict=True) if d]
    holes = (Hole(cx, cy, _BORE_R * k, (_PAD_R + 1.0) * k), *bosses)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [fix(outline)], 255, cv2.LINE_AA, 4)
    shape = PartShape((cx, cy), angle, CASTING_SIZE * k, outline, holes, mask)
    dent = None
    if label == "dent":
        dx, dy = shape.sample_face(geo, 0.09 * shape.size)
        dr = float(geo.uniform(0.05, 0.08)) * shape.size
        dent = (dx, dy, dr, float(geo.uniform(0.6, 1.0)) * dr * 0.8, float(geo.uniform(0.6, 1.0)))
    shadow_at = outline + _SHADOW * k
    x0, y0, x1, y1 = part_window(outline, shadow_at, (w, h), (5, 6))
    background: np.ndarray | None = None
    if x1 > x0 and y1 > y0:
        size = (y1 - y0, x1 - x0)
        under, background = drop_shadow(img, (x0, y0, x1, y1), shadow_at - [x0, y0], 2.5 * k, 0.55, label == "chip")
        xs = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
        ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        u, v = xs * ca + ys * sa, ys * ca - xs * sa
        height, machined, smooth, through = _relief(u, v, k, tuple(drilled))
        half = _half(k)
        bx, by = x0 - round(cx) + half + tex_x, y0 - round(cy) + half + tex_y
        tex = _sand_bank(w)[by : by + size[0], bx : bx + size[1]]
        skin = 1.0 - smooth
        pits = np.zeros(size, np.float32)
        centres = rotated(pores * k, angle, (cx - x0, cy - y0))
        for (px, py), pr in zip(centres, pore_r * k, strict=True):
            cv2.circle(pits, (round(px * 16), round(py * 16)), max(4, round(pr * 16)), 1.0, -1, cv2.LINE_AA, 4)
        rough = k * (0.22 * fine * tex[:, :, 0] + 0.14 * medium * tex[:, :, 1])
        pits *= 1.0 - 0.7 * smooth  # fewer pores show on the machined faces
        height = height + rough * skin - 1.2 * k * pits
        crush = np.zeros(size, np.float32)
        if dent is not None:
            ddx, ddy, dr, depth, squash = dent
            ox, oy = xs + np.float32(cx - ddx), ys + np.float32(cy - ddy)
            q = (ox * ca + oy * sa) ** 2 + ((oy * ca - ox * sa) / squash) ** 2
            crush = np.exp(-q / (dr * dr)).astype(np.float32)
            lip = np.exp(-(((np.sqrt(q) - 1.1 * dr) / (0.35 * dr)) ** 2))  # metal pushed up round it
            height = height - depth * (crush - 0.3 * lip) - rough * skin * np.clip(1.6 * crush, 0.0, 1.0)
        gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3) * 0.125
        gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3) * 0.125
        norm = np.sqrt(gx * gx + gy * gy + 1.0)
        lit = np.clip((-gx * _LAMP[0] - gy * _LAMP[1] + _LAMP[2]) / norm, 0.0, 1.0)
        spec = np.clip((-gx * _HALFWAY[0] - gy * _HALFWAY[1] + _HALFWAY[2]) / norm, 0.0, 1.0)
        flat = 0.3 + 0.9 * _LAMP[2]
        sand = 0.045 * coarse * tex[:, :, 2] + 0.035 * fine * tex[:, :, 0] + 0.02 * medium * tex[:, :, 1]
        albedo = (148.0 * (1.0 + sand) * skin + 172.0 * smooth) * gain
        albedo = albedo * (1.0 - 0.5 * pits) * (1.0 + 0.03 * crush)
        phi = np.arctan2(ys, xs) - _LAMP_AZ
        bow = 26.0 * np.exp(-(np.sin(phi) ** 2) / 0.04) * aa_step((_PAD_R - 1.5) * k - np.hypot(xs, ys))
        grey = albedo * (0.3 + 0.9 * lit) / flat + 10.0 * skin * spec**8 + machined * (40.0 * spec**40 + bow)
        bgr = grey[:, :, None] * tone[None, None, :]
        dim = under.astype(np.float32) * 0.45
        t = through[:, :, None]
        part = np.clip(bgr * (1.0 - t) + dim * t + 0.5, 0, 255).astype(np.uint8)
        m = mask[y0:y1, x0:x1].astype(np.float32) * (1.0 / 255.0)
        img[y0:y1, x0:x1] = cv2.blendLinear(part, under, m, 1.0 - m)
    elif label == "chip":
        background = img.copy()

    if label == "scratch":
        _draw_scratch(img, shape, geo, k)
    elif label == "crack":
        _draw_crack(img, shape, geo, k)
    elif label == "stain":
        draw_stain(img, shape, geo, k)
    elif label == "chip" and background is not None:
        _draw_chip(img, shape, geo, k, background)
    return shape
