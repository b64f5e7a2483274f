"""The seventh part family, sealed for the next final evaluation: a bare printed circuit board seen
from above, on a black antistatic belt.

At 320x240 the board is 160 px long (its size S for the defects) and 88 px wide: a body 142x88 px
with a chamfered corner and, at one end, a 52 px edge-connector tab with six gold fingers and a
keying slot. Green solder mask (lighter where copper runs under it: traces and a ground pour) over
a glass-weave laminate; exposed gold (ENIG) copper: the 32 pads and thermal pad of a quad flat
package, seven two-pad passives, a three-pad transistor, two fiducials, the fingers, the rings of a
2x5 pin header, of the vias and of three plated mounting holes; the laminate shows bare at the
routed edge and round the fiducials; a white silkscreen legend (outlines, designators, the board's
name and date code) and a data-matrix serial printed per board. The layout is in
:mod:`converters.synth.pcb_layout`. Each board has its own mask shade (from a bluer to a yellower
green) and brightness, its own window of the weave and of the mask's thickness cloud, its own gloss,
gold finish and ink density, a legend printed up to 0.8 px off the copper, and its own serial. A
bar light above the top of the frame puts a broad highlight band across the glossy mask and lights
the gold (the band moves a little from board to board: boards bow); the legend is matte. The board
is thin: a short, soft shadow; the belt shows through its drills. The belt is black antistatic
fabric with a fine twill, a grey conductive yarn every 40 px and a few specks of lint. Boards come
off a depaneling station: position jitter (``Conditions.pcb_jitter_px``, ±12 px by default),
in-plane rotation (``Conditions.pcb_rotation_deg``, ±25° by default) and a scale of 0.97-1.03 (the
belt's height under the camera; ``scale_jitter`` of :func:`draw_pcb`) are drawn per part.

Classes, as a board has them: ``scratch`` a scratch through the solder mask (a thin, slightly curved
line, 25-50% of S long: pale laminate where it crosses bare board, raw copper over copper, grey
nickel over gold); ``dent`` a blister where the mask has lifted (a pale, soft spot, 3.5-6% of S in
radius, the weave showing white through it, lit on its side towards the lamp); ``missing_hole`` one
hole never drilled (a mounting hole, 40%; a header hole, 40%; a via, 20%: the smallest): its pad
stays solid gold; ``crack`` a hairline crack in the laminate from a mounting hole, from an inner
corner of the tab or from the edge (10-22% of S long, dark, with a faint white crazing of the
mask round it); ``stain`` flux residue by a group of pads (a faint amber film with a lighter rim) or
a fingerprint (a dull, ridged smudge: it mostly shows where the highlight falls); ``chip`` a piece
broken out of a corner or an edge (the belt shows through; white glass fibres along the break).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from converters.synth.pcb_layout import (
    HEADER,
    HEADER_R,
    MOUNT,
    MOUNT_R,
    OUTLINE,
    PCB_REACH,
    PCB_SIZE,
    SERIAL,
    SPREAD,
    VIA_R,
    VIAS,
    Art,
    board_art,
)
from converters.synth.shape import Hole, PartShape, draw_pose, drop_shadow, fix, part_window, rotated

__all__ = ["PCB_REACH", "PCB_SIZE", "SCALE_JITTER", "draw_pcb"]

SCALE_JITTER = 0.03
#: every drill: (x, y, drill radius, ring radius) in local units; mounting holes, header, vias
DRILLS: tuple[tuple[float, float, float, float], ...] = (
    *((x, y, *MOUNT_R) for x, y in MOUNT), *((x, y, *HEADER_R) for x, y in HEADER), *((x, y, *VIA_R) for x, y in VIAS),
)  # fmt: skip
_SHADOW = 2.5
#: BGR: solder mask over laminate and over copper, its shades, the laminate, gold, ink
_LAM = np.array([44.0, 98.0, 30.0], np.float32)
_CU = np.array([58.0, 128.0, 50.0], np.float32)
_BLUER = np.array([12.0, -2.0, -6.0], np.float32)
_YELLOWER = np.array([-8.0, 6.0, 14.0], np.float32)
_BARE = np.array([118.0, 168.0, 176.0], np.float32)
_DEEP_GOLD = np.array([70.0, 168.0, 218.0], np.float32)
_PALE_GOLD = np.array([112.0, 190.0, 214.0], np.float32)
_INK = np.array([224.0, 230.0, 232.0], np.float32)
_SCRAPED = np.array([150.0, 180.0, 185.0], np.float32)
_RAW_CU = np.array([96.0, 142.0, 212.0], np.float32)
_NICKEL = np.array([150.0, 158.0, 165.0], np.float32)
_CORNERS = (0, 1, 3, 4, 9, 10, 12, 13, 14)  # the outline's convex corners (indices into OUTLINE)


@dataclass(frozen=True)
class _Look:
    """One board's own appearance, drawn from the part's generator."""

    tint: np.ndarray
    light: float
    gloss: float
    band_y: float  # the highlight's row as a fraction of the frame height
    metal: float
    gold: np.ndarray
    ink: float
    silk: np.ndarray
    weave: np.ndarray
    mottle: np.ndarray
    mottle_amp: float


@dataclass
class _Marks:
    """What a defect changes, in canvas pixels (None: nothing). Alphas are 0..1."""

    scrape: np.ndarray | None = None
    blister: np.ndarray | None = None
    crack: np.ndarray | None = None
    craze: np.ndarray | None = None
    film: np.ndarray | None = None
    flux: bool = True  # the film is flux (amber); else a fingerprint (dull, darker)
    cut: np.ndarray | None = None
    copper: np.ndarray | None = None
    bare: np.ndarray | None = None
    dropped: int = -1  # the index into DRILLS of the hole never drilled


def _look(geo: np.random.Generator, art: Art) -> _Look:
    k = art.k
    tint = _BLUER + (_YELLOWER - _BLUER) * float(geo.random())
    light, gloss = float(geo.uniform(0.9, 1.08)), float(geo.uniform(10.0, 26.0))
    band_y, metal = 0.24 + float(geo.uniform(-0.08, 0.08)), float(geo.uniform(0.85, 1.15))
    gold = _DEEP_GOLD + (_PALE_GOLD - _DEEP_GOLD) * float(geo.random())
    ink = float(geo.uniform(0.72, 0.95))
    shift = geo.uniform(-0.8, 0.8, 2) * k
    wx, wy, mx, my = (int(v) for v in geo.integers(0, SPREAD, 4))
    mottle_amp = float(geo.uniform(0.02, 0.06))
    sx, sy, n, cell = SERIAL
    bits = (geo.random((n - 2, n - 2)) < 0.5).astype(np.float32)
    code = np.zeros((n, n), np.float32)
    code[:, 0], code[-1, :] = 1.0, 1.0  # the finder: solid left and bottom
    code[0, ::2], code[::2, -1] = 1.0, 1.0  # the timing: alternate top and right
    code[1:-1, 1:-1] = bits
    side = max(n, round(n * cell * k))
    silk = art.silk.copy()
    x0, y0 = (round(float(v)) for v in art.px((sx, sy)))
    silk[y0 : y0 + side, x0 : x0 + side] = cv2.resize(code, (side, side), interpolation=cv2.INTER_NEAREST)
    move = np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]]], np.float32)
    h, w = silk.shape
    silk = cv2.warpAffine(silk, move, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    silk = np.minimum(silk, 1.0 - art.copper) * ink
    return _Look(tint, light, gloss, band_y, metal, gold, ink, silk, art.weave[wy : wy + h, wx : wx + w],
                 art.mottle[my : my + h, mx : mx + w], mottle_amp)  # fmt: skip


def _line(art: Art, pts: np.ndarray, width: float) -> np.ndarray:
    layer = np.zeros(art.board.shape, np.uint8)
    cv2.polylines(layer, [fix(art.px(pts))], False, 255, max(1, round(width * art.k)), cv2.LINE_AA, 4)
    return layer.astype(np.float32) * (1.0 / 255.0)


def _face_point(geo: np.random.Generator, margin: float) -> tuple[float, float]:
    """A point on the body at least ``margin`` units from its edge and from every drill's ring."""
    best, best_d = (0.0, 0.0), -math.inf
    for _ in range(48):
        x, y = float(geo.uniform(-78.0 + margin, 60.0 - margin)), float(geo.uniform(-42.0 + margin, 42.0 - margin))
        d = min(math.hypot(x - dx, y - dy) - ring for dx, dy, _, ring in DRILLS)
        if d >= margin:
            return x, y
        if d > best_d:
            best, best_d = (x, y), d
    return best


def _jagged(geo: np.random.Generator, start: np.ndarray, heading: float, length: float) -> np.ndarray:
    n = max(5, int(length / 2.0))
    ang = heading + np.cumsum(geo.normal(0.0, 0.15, n)) + geo.normal(0.0, 0.45, n)
    return np.vstack([start[None, :], start + np.cumsum(np.stack([np.cos(ang), np.sin(ang)], axis=1), axis=0)
                      * (length / n)])  # fmt: skip


def _edge_point(geo: np.random.Generator) -> tuple[np.ndarray, float]:
    """A point on the outline (not in the keying slot), uniform along it, and the inward normal's
    angle there."""
    pts = np.array(OUTLINE)
    seg = np.roll(pts, -1, axis=0) - pts
    lengths = np.hypot(seg[:, 0], seg[:, 1])
    lengths[5:8] = 0.0  # the slot's three sides
    i = int(np.searchsorted(np.cumsum(lengths), float(geo.uniform(0.0, lengths.sum()))))
    i = min(i, len(pts) - 1)
    p = pts[i] + seg[i] * float(geo.uniform(0.1, 0.9))
    return p, math.atan2(seg[i][0], -seg[i][1])  # the outline runs clockwise: inward is to the right


def _plan(label: str, geo: np.random.Generator, art: Art) -> _Marks:
    """The defect of ``label`` on this board: every draw after the board's own ones."""
    k, marks = art.k, _Marks()
    inside = art.board * art.cut
    if label == "scratch":
        cx, cy = _face_point(geo, 6.0)
        theta, length = float(geo.uniform(0.0, math.pi)), float(geo.uniform(0.25, 0.5)) * PCB_SIZE
        d, n = np.array([math.cos(theta), math.sin(theta)]), np.array([-math.sin(theta), math.cos(theta)])
        t = np.linspace(-1.0, 1.0, 12)[:, None]
        pts = np.array([cx, cy]) + d * t * length / 2 + n * float(geo.uniform(-3.0, 3.0)) * (1 - t * t)
        marks.scrape = _line(art, pts, 1.0) * float(geo.uniform(0.55, 0.9)) * inside
    elif label == "dent":
        r = float(geo.uniform(0.035, 0.06)) * PCB_SIZE
        cx, cy = _face_point(geo, 0.8 * r)
        layer = np.zeros(art.board.shape, np.uint8)
        axes = (round(r * k * 16), round(r * k * float(geo.uniform(0.6, 1.0)) * 16))
        at = art.px((cx, cy))
        cv2.ellipse(layer, (round(at[0] * 16), round(at[1] * 16)), axes, float(geo.uniform(0, 180)), 0, 360, 255, -1,
                    cv2.LINE_AA, 4)  # fmt: skip
        soft = cv2.GaussianBlur(layer.astype(np.float32) * (1.0 / 255.0), (0, 0), max(0.8, r * k / 3.0))
        marks.blister = soft * float(geo.uniform(0.6, 1.0)) * inside
    elif label == "missing_hole":
        pick = float(geo.random())
        if pick < 0.4:
            marks.dropped = int(geo.integers(0, len(MOUNT)))
        elif pick < 0.8:
            marks.dropped = len(MOUNT) + int(geo.integers(0, len(HEADER)))
        else:
            marks.dropped = len(MOUNT) + len(HEADER) + int(geo.integers(0, len(VIAS)))
        x, y, drill, _ = DRILLS[marks.dropped]
        plug = np.zeros(art.board.shape, np.uint8)
        art.disc(plug, (x, y), drill + 0.7)
        filled = plug.astype(np.float32) * (1.0 / 255.0)
        marks.cut, marks.copper = np.maximum(art.cut, filled), np.maximum(art.copper, filled)
    elif label == "crack":
        where = float(geo.random())
        if where < 0.4:
            mx, my = MOUNT[int(geo.integers(0, len(MOUNT)))]
            a = float(geo.uniform(0.0, 2 * math.pi))
            start, heading = np.array([mx + MOUNT_R[0] * math.cos(a), my + MOUNT_R[0] * math.sin(a)]), a
        elif where < 0.75:
            side = 1.0 if geo.random() < 0.5 else -1.0
            start, heading = np.array([62.0, 26.0 * side]), math.atan2(-side, -1.0)
        else:
            start, heading = _edge_point(geo)
        heading += float(geo.normal(0.0, 0.4))
        length = float(geo.uniform(0.1, 0.22)) * PCB_SIZE
        path = _jagged(geo, start, heading, length)
        line = _line(art, path, 1.0)
        if geo.random() < 0.35:  # a branch from halfway
            turn = float(geo.choice([-0.8, 0.8]))
            line = np.maximum(line, _line(art, _jagged(geo, path[len(path) // 2], heading + turn, length * 0.35), 1.0))
        marks.crack = line * float(geo.uniform(0.6, 0.85)) * inside
        marks.craze = cv2.GaussianBlur(line, (0, 0), 1.3 * k) * float(geo.uniform(0.5, 0.8)) * inside
    elif label == "stain":
        marks.flux = bool(geo.random() < 0.5)
        layer = np.zeros(art.board.shape, np.uint8)
        if marks.flux:
            cx, cy = ((-18.0 + float(geo.choice([-18.0, 18.0])), -2.0 + float(geo.uniform(-10, 10))), (31.0, -29.0),
                      (17.0, 25.0), (-58.75, 0.0))[int(geo.integers(0, 4))]  # fmt: skip
            r = float(geo.uniform(0.05, 0.09)) * PCB_SIZE
            for _ in range(int(geo.integers(3, 6))):
                ox, oy = geo.normal(0.0, 0.4 * r, 2)
                at = art.px((cx + ox, cy + oy))
                ax = r * k * float(geo.uniform(0.4, 0.8))
                cv2.ellipse(layer, (round(at[0] * 16), round(at[1] * 16)), (round(ax * 16), round(ax * 0.7 * 16)),
                            float(geo.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA, 4)  # fmt: skip
            soft = cv2.GaussianBlur(layer.astype(np.float32) * (1.0 / 255.0), (0, 0), max(1.0, r * k / 4.0))
        else:
            cx, cy = _face_point(geo, 4.0)
            a, b, turn = float(geo.uniform(7.0, 9.5)), float(geo.uniform(5.0, 6.5)), float(geo.uniform(0.0, math.pi))
            xs, ys = art.grid
            ox, oy = (xs - art.px((cx, cy))[0]) / k, (ys - art.px((cx, cy))[1]) / k
            u, v = ox * math.cos(turn) + oy * math.sin(turn), oy * math.cos(turn) - ox * math.sin(turn)
            q = np.sqrt((u / a) ** 2 + (v / b) ** 2)
            ridges = 0.55 + 0.45 * np.sin(q * a * (2 * math.pi / 2.2) + 0.4 * np.sin(3.0 * u / a))
            soft = np.clip(1.6 * (1.0 - q), 0.0, 1.0) * ridges
        density = cv2.resize(geo.uniform(0.6, 1.0, (4, 4)).astype(np.float32), soft.shape[::-1],
                             interpolation=cv2.INTER_CUBIC)  # fmt: skip
        marks.film = np.clip(soft * density, 0.0, 1.0) * inside
    elif label == "chip":
        if geo.random() < 0.6:
            at = np.array(OUTLINE[_CORNERS[int(geo.integers(0, len(_CORNERS)))]])
            inward = math.atan2(-at[1], -at[0])
        else:
            at, inward = _edge_point(geo)
        rb = float(geo.uniform(0.035, 0.06)) * PCB_SIZE
        at = at + 0.35 * rb * np.array([math.cos(inward), math.sin(inward)])
        m = int(geo.integers(7, 11))
        angles = np.sort(geo.uniform(0.0, 2 * math.pi, m))
        radii = rb * geo.uniform(0.6, 1.15, m)
        poly = at + np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
        bite8 = np.zeros(art.board.shape, np.uint8)
        cv2.fillPoly(bite8, [fix(art.px(poly))], 255, cv2.LINE_AA, 4)
        grow = cv2.dilate(bite8, np.ones((3, 3), np.uint8), iterations=max(1, round(1.5 * k)))
        bite = bite8.astype(np.float32) * (1.0 / 255.0)
        fringe = np.clip(grow.astype(np.float32) * (1.0 / 255.0) - bite, 0.0, 1.0) * art.board
        marks.cut = art.cut * (1.0 - bite)
        marks.bare = np.maximum(art.bare, fringe * float(geo.uniform(0.7, 1.0)))
        marks.craze = fringe * geo.uniform(0.2, 1.0, bite.shape).astype(np.float32)
    return marks


def _compose(art: Art, look: _Look, marks: _Marks, band: np.ndarray, up: tuple[float, float]) -> np.ndarray:
    """The board's colours in the canvas (float32 BGR), lit by the bar light (``band``: its highlight
    per canvas pixel; ``up``: the frame's up in canvas coordinates, towards the lamp)."""
    bur = art.buried[:, :, None]
    col = (_LAM + look.tint) + (_CU - _LAM) * bur
    col = col * (look.light * (1.0 + look.mottle_amp * look.mottle + 0.02 * look.weave))[:, :, None]
    if marks.blister is not None:
        gy, gx = np.gradient(marks.blister)
        steep = float(np.abs(gx).max() + np.abs(gy).max())
        shade = -(gx * up[0] + gy * up[1]) * (float(marks.blister.max()) / max(1e-3, steep))
        lift = marks.blister * (22.0 + 12.0 * np.maximum(look.weave, 0.0)) + 14.0 * shade
        col = col + lift[:, :, None] * np.array([1.0, 1.02, 1.12], np.float32)
    bare = (marks.bare if marks.bare is not None else art.bare)[:, :, None]
    col = col + (_BARE * (1.0 + 0.06 * look.weave)[:, :, None] - col) * bare
    cop = (marks.copper if marks.copper is not None else art.copper)[:, :, None]
    gold = look.gold * ((0.72 + 0.5 * look.metal * band) * (1.0 + 0.03 * look.weave))[:, :, None]
    col = col + (gold - col) * cop
    silk = look.silk[:, :, None]
    col = col + (_INK * (0.96 + 0.04 * look.mottle)[:, :, None] - col) * silk
    gloss = (1.0 - bare) * (1.0 - cop) * (1.0 - silk)
    if marks.scrape is not None:
        s = marks.scrape[:, :, None]
        target = _SCRAPED + (_RAW_CU - _SCRAPED) * bur
        target = target + (_NICKEL - target) * cop
        col, gloss = col + (target - col) * s, gloss * (1.0 - s)
    if marks.film is not None:
        f = marks.film[:, :, None]
        if marks.flux:
            col = col * (1.0 - f * np.array([0.36, 0.13, -0.04], np.float32)) + 24.0 * f * (1.0 - f)
            gloss = gloss * (1.0 + 0.3 * f)
        else:
            col, gloss = col * (1.0 - 0.15 * f) - 8.0 * f, gloss * (1.0 - 0.8 * f)
    col = col + look.gloss * band[:, :, None] * gloss
    if marks.crack is not None and marks.craze is not None:
        col = col * (1.0 - 0.72 * marks.crack[:, :, None]) + 20.0 * (marks.craze * (1.0 - marks.crack))[:, :, None]
    elif marks.craze is not None:
        col = col + 40.0 * marks.craze[:, :, None]
    return np.asarray(col, np.float32)


def draw_pcb(
    img: np.ndarray,
    label: str,
    geo: np.random.Generator,
    *,
    jitter_px: float,
    rotation_deg: float,
    x_offset: float = 0.0,
    scale_jitter: float = SCALE_JITTER,
) -> PartShape:
    """Draw a bare board of class ``label`` onto ``img`` (in place); every part draw comes from
    ``geo`` (the pose, the scale, the board's look, then its defect)."""
    h, w = img.shape[:2]
    pose = draw_pose(geo, (w, h), jitter_px, rotation_deg, x_offset)
    k, angle, cx, cy = pose.k, pose.angle, pose.cx, pose.cy
    s = 1.0 + float(geo.uniform(-1.0, 1.0)) * scale_jitter
    art = board_art(k)
    look = _look(geo, art)
    marks = _plan(label, geo, art)
    outline = rotated(np.array(OUTLINE) * k * s, angle, (cx, cy))
    centres = rotated(np.array([d[:2] for d in DRILLS]) * k * s, angle, (cx, cy))
    holes = tuple(Hole(float(x), float(y), d[2] * k * s, d[3] * k * s)
                  for i, ((x, y), d) in enumerate(zip(centres, DRILLS, strict=True)) if i != marks.dropped)  # fmt: skip
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [fix(outline)], 255, cv2.LINE_AA, 4)
    shape = PartShape((cx, cy), angle, PCB_SIZE * k * s, outline, holes, mask)
    shadow_at = outline + _SHADOW * k
    x0, y0, x1, y1 = part_window(outline, shadow_at, (w, h), (4, 5))
    if x1 <= x0 or y1 <= y0:
        return shape
    under, _ = drop_shadow(img, (x0, y0, x1, y1), shadow_at - [x0, y0], 1.2 * k, 0.5, False)
    a = math.radians(angle)
    rot = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    shift = np.array([cx, cy]) - rot @ np.asarray(art.origin)
    xs, ys = art.grid
    frame_y = rot[1, 0] * xs + rot[1, 1] * ys + shift[1]
    band = np.exp(-(((frame_y / h - look.band_y) / 0.2) ** 2)).astype(np.float32)
    col = _compose(art, look, marks, band, (-math.sin(a), -math.cos(a)))
    cut = marks.cut if marks.cut is not None else art.cut
    to_window = np.hstack([rot, (shift - [x0, y0])[:, None]]).astype(np.float32)
    size = (x1 - x0, y1 - y0)
    part = cv2.warpAffine(col, to_window, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    open_ = cv2.warpAffine(np.ascontiguousarray(cut), to_window, size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=1.0)  # fmt: skip
    alpha = (mask[y0:y1, x0:x1].astype(np.float32) * (1.0 / 255.0) * open_)[:, :, None]
    out = under.astype(np.float32) * (1.0 - alpha) + part * alpha
    img[y0:y1, x0:x1] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    return shape
