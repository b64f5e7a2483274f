"""The printed circuit board's design (the same on every board) and the belt it rides on; see
:mod:`converters.synth.pcb` for the family.

The artwork is drawn once per frame scale into a board-aligned canvas (:class:`Art`): the outline,
the drills, the exposed copper, the copper under the solder mask, the bare laminate, the silkscreen
and the glass-weave texture. :mod:`converters.synth.pcb` colours, lights and places it per part.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from converters.synth.shape import fix

#: local coordinates in pixels at 320x240 (scaled with the frame), origin at the board's centre, the
#: long axis along x: the body spans x -80..62 and y -44..44, the edge-connector tab x 62..80 and
#: y -26..26 with a keying slot; the corner at the upper left is chamfered
OUTLINE: tuple[tuple[float, float], ...] = (
    (-72.0, -44.0), (62.0, -44.0), (62.0, -26.0), (78.5, -26.0), (80.0, -24.5), (80.0, 4.0), (70.0, 4.0),
    (70.0, 8.0), (80.0, 8.0), (80.0, 24.5), (78.5, 26.0), (62.0, 26.0), (62.0, 44.0), (-80.0, 44.0), (-80.0, -36.0),
)  # fmt: skip
PCB_SIZE = 160.0  # its length: the part's size S
PCB_REACH = math.hypot(80.0, 44.0) + 0.5  # centre to the farthest point of the outline
_PAD = 4.0  # canvas margin round the outline
MOUNT = ((-70.0, 34.0), (52.0, -34.0), (52.0, 34.0))  # plated mounting holes
MOUNT_R = (3.4, 5.4)  # drill, copper ring
HEADER = tuple((x, y) for x in (-62.0, -55.5) for y in (-14.0, -7.0, 0.0, 7.0, 14.0))  # a 2x5 pin header
HEADER_R = (1.5, 2.8)
VIA_R = (1.0, 2.1)
_QFP = (-18.0, -2.0)  # a 32-pin quad flat package's land pattern
_FINGERS = (-21.0, -14.0, -7.0, 0.0, 14.0, 21.0)  # gold edge fingers on the tab (y centres)
_PASSIVES = ((26.0, -33.0, 0), (38.0, -33.0, 0), (26.0, -25.0, 0), (38.0, -25.0, 0), (10.0, 25.0, 1), (17.0, 25.0, 1),
             (24.0, 25.0, 1))  # fmt: skip
_SOT = (32.0, 6.0)
_FIDUCIALS = ((-68.0, -30.0), (36.0, 37.0))
SERIAL = (-52.0, 21.5, 6, 1.8)  # a data-matrix serial in ink: top-left corner, cells, cell size


def _fanout() -> tuple[list[np.ndarray], list[tuple[float, float]]]:
    """Traces from the package's pads to vias (three sides), to the header (the fourth side) and from
    the edge fingers to vias."""
    traces: list[np.ndarray] = []
    vias: list[tuple[float, float]] = []
    cx, cy = _QFP
    for (dx, dy), spread, runs in (((1, 0), 0.6, (2.0, 6.0)), ((0, -1), 0.55, (1.5, 5.0)), ((0, 1), 0.6, (2.0, 6.0))):
        d, p = np.array([dx, dy], float), np.array([-dy, dx], float)
        for i in range(8):
            if i in (2, 5):
                continue  # those pads are joined under the package
            t = (i - 3.5) * 3.2
            start = np.array([cx, cy]) + d * 18.75 + p * t
            a = start + d * (2.0 if dx else 1.5)
            b = a + (d + p * math.copysign(1.0, t)) * spread * abs(t)
            c = b + d * runs[i % 2]
            traces.append(np.stack([start, a, b, c]))
            vias.append((float(c[0]), float(c[1])))
    for yh, yp in zip((-14.0, -7.0, 0.0, 7.0, 14.0), (-13.2, -6.8, -0.4, 6.0, 9.2), strict=True):
        traces.append(np.array([[-55.5, yh], [-44.0, yh], [-44.0 + abs(yp - yh), yp], [-36.75, yp]]))
    for yf in _FINGERS:
        jog = (56.0 - 0.4 * abs(yf), 0.6 * yf)
        traces.append(np.array([[66.0, yf], [56.0, yf], jog, [jog[0] - 3.0, jog[1]]]))
        vias.append((jog[0] - 3.0, jog[1]))
    return traces, vias


TRACES, VIAS = _fanout()


@dataclass(frozen=True)
class Canvas:
    """A board-aligned canvas ``k`` px per unit; ``origin`` is the canvas position of the board's
    centre. Its painters draw on 8-bit layers (OpenCV anti-aliases only those)."""

    k: float
    origin: tuple[float, float]

    def px(self, p: tuple[float, float] | np.ndarray) -> np.ndarray:
        """Local units to canvas pixels."""
        return np.asarray(p, np.float64) * self.k + np.asarray(self.origin)

    def disc(self, layer: np.ndarray, at: tuple[float, float], r: float, value: int = 255) -> None:
        cx, cy = self.px(at)
        cv2.circle(layer, (round(cx * 16), round(cy * 16)), max(1, round(r * self.k * 16)), value, -1,
                   cv2.LINE_AA, 4)  # fmt: skip

    def box(self, layer: np.ndarray, at: tuple[float, float], half: tuple[float, float], value: int = 255,
            thickness: int = -1) -> None:  # fmt: skip
        (x, y), (hx, hy) = at, half
        poly = self.px(np.array([[x - hx, y - hy], [x + hx, y - hy], [x + hx, y + hy], [x - hx, y + hy]]))
        if thickness < 0:
            cv2.fillPoly(layer, [fix(poly)], value, cv2.LINE_AA, 4)
        else:
            cv2.polylines(layer, [fix(poly)], True, value, thickness, cv2.LINE_AA, 4)


@dataclass(frozen=True)
class Art(Canvas):
    """The board's artwork on its canvas: each layer float32 0..1, canvas-sized (read-only)."""

    board: np.ndarray  # inside the outline
    cut: np.ndarray  # 0 in the drills, 1 elsewhere (also beyond the outline)
    copper: np.ndarray  # exposed copper (gold): pads, rings, fingers, fiducials
    buried: np.ndarray  # copper under the solder mask: traces and the ground pour
    bare: np.ndarray  # laminate without solder mask: the routed edge and the fiducials' clearings
    silk: np.ndarray  # the silkscreen legend
    weave: np.ndarray  # the glass weave, -1..1, larger than the canvas (windows per part)
    mottle: np.ndarray  # the mask's thickness cloud, -1..1, larger than the canvas
    grid: tuple[np.ndarray, np.ndarray]  # canvas x and y of every pixel


SPREAD = 24  # per-part windows of the texture banks are offset by up to this many canvas px


def _pads(art: Canvas, copper: np.ndarray) -> None:
    qx, qy = _QFP
    for i in range(8):
        t = (i - 3.5) * 3.2
        for cx, cy, hx, hy in ((qx + 16.5, qy + t, 2.25, 0.8), (qx - 16.5, qy + t, 2.25, 0.8),
                               (qx + t, qy - 16.5, 0.8, 2.25), (qx + t, qy + 16.5, 0.8, 2.25)):  # fmt: skip
            art.box(copper, (cx, cy), (hx, hy))
    art.box(copper, _QFP, (5.0, 5.0))  # the thermal pad
    for x, y, vertical in _PASSIVES:
        for s in (-2.6, 2.6):
            art.box(copper, (x, y + s) if vertical else (x + s, y), (1.5, 1.2) if vertical else (1.2, 1.5))
    for dx, dy in ((-3.2, 3.0), (3.2, 3.0), (0.0, -3.0)):
        art.box(copper, (_SOT[0] + dx, _SOT[1] + dy), (1.0, 1.2))
    for yf in _FINGERS:
        art.box(copper, (72.0, yf), (7.5, 2.2))
    for at in MOUNT:
        art.disc(copper, at, MOUNT_R[1])
    for at in HEADER:
        art.disc(copper, at, HEADER_R[1])
    for at in VIAS:
        art.disc(copper, at, VIA_R[1])
    for at in _FIDUCIALS:
        art.disc(copper, at, 1.6)


def _legend(art: Canvas, silk: np.ndarray) -> None:
    k = art.k
    line = max(1, round(k))
    art.box(silk, (_QFP[0], _QFP[1]), (13.5, 13.5), 255, line)
    art.disc(silk, (_QFP[0] - 15.5, _QFP[1] - 15.5), 0.9)
    art.box(silk, (-58.75, 0.0), (6.8, 17.6), 255, line)
    for x, y, vertical in _PASSIVES:
        art.box(silk, (x, y), (2.9, 5.2) if vertical else (5.2, 2.9), 255, line)
    art.box(silk, _SOT, (5.2, 5.0), 255, line)
    font, scale = cv2.FONT_HERSHEY_PLAIN, 0.42 * k
    for text, at in (("U1", (-23.0, 0.5)), ("J1", (-63.0, -20.5)), ("EL-7 REV C", (-60.0, 42.0)),
                     ("2619", (2.0, -38.5)), ("+", (4.5, 23.0)), ("Q1", (27.5, -1.0))):  # fmt: skip
        x, y = art.px(at)
        cv2.putText(silk, text, (round(x), round(y)), font, scale, 255, line, cv2.LINE_AA)
    sx, sy, n, cell = SERIAL
    art.box(silk, (sx + n * cell / 2, sy + n * cell / 2), (n * cell / 2 + 1.0, n * cell / 2 + 1.0), 255, line)


@functools.lru_cache(maxsize=4)
def board_art(k: float) -> Art:
    """The board's artwork at ``k`` px per unit (cached: the same design on every board)."""
    cw, ch = math.ceil((160.0 + 2 * _PAD) * k), math.ceil((88.0 + 2 * _PAD) * k)
    canvas = Canvas(k, (cw / 2, ch / 2))
    board, copper, silk, traces, pour, clear = (np.zeros((ch, cw), np.uint8) for _ in range(6))
    cut = np.full((ch, cw), 255, np.uint8)
    cv2.fillPoly(board, [fix(canvas.px(np.array(OUTLINE)))], 255, cv2.LINE_AA, 4)
    _pads(canvas, copper)
    for at, (drill, _) in [*((m, MOUNT_R) for m in MOUNT), *((h, HEADER_R) for h in HEADER),
                           *((v, VIA_R) for v in VIAS)]:  # fmt: skip
        canvas.disc(cut, at, drill, 0)
    for t in TRACES:
        cv2.polylines(traces, [fix(canvas.px(t))], False, 255, max(1, round(1.4 * k)), cv2.LINE_AA, 4)
    canvas.box(pour, (31.0, 0.0), (27.0, 40.0))
    for at in _FIDUCIALS:
        canvas.disc(clear, at, 3.4)
    keep = cv2.dilate(np.maximum(traces, copper), np.ones((3, 3), np.uint8), iterations=max(1, round(1.5 * k)))
    _legend(canvas, silk)
    f = [layer.astype(np.float32) * (1.0 / 255.0) for layer in (board, cut, copper, traces, pour, clear, keep, silk)]
    board_f, cut_f, copper_f, traces_f, pour_f, clear_f, keep_f, silk_f = f
    rim = cv2.distanceTransform((board > 127).astype(np.uint8), cv2.DIST_L2, 3)
    bare = np.maximum(np.clip(1.6 - rim / k, 0.0, 1.0) * board_f, clear_f * (1.0 - copper_f))
    buried = np.maximum(traces_f, pour_f * (1.0 - keep_f) * (1.0 - clear_f))
    rng = np.random.default_rng(20261203)
    big = (ch + SPREAD, cw + SPREAD)
    by, bx = np.mgrid[0 : big[0], 0 : big[1]].astype(np.float32)
    period = max(2.2, 2.6 * k)
    warp = cv2.resize(rng.normal(0.0, 1.0, (6, 10)).astype(np.float32), big[::-1], interpolation=cv2.INTER_CUBIC)
    weave = 0.5 * (np.sin(bx * (2 * math.pi / period)) + np.sin(by * (2 * math.pi / period) + 0.6 * warp))
    cloud = cv2.resize(rng.normal(0.0, 1.0, (7, 12)).astype(np.float32), big[::-1], interpolation=cv2.INTER_CUBIC)
    ys, xs = np.mgrid[0:ch, 0:cw].astype(np.float32)
    art = Art(k, canvas.origin, board_f, cut_f, copper_f, buried, bare, np.minimum(silk_f, 1.0 - copper_f),
              weave.astype(np.float32), np.clip(cloud / 2.0, -1.0, 1.0), (xs, ys))  # fmt: skip
    for layer in (art.board, art.cut, art.copper, art.buried, art.bare, art.silk, art.weave, art.mottle, *art.grid):
        layer.setflags(write=False)
    return art


@functools.lru_cache(maxsize=4)
def pcb_belt_strip(w: int, h: int) -> np.ndarray:
    """A black antistatic belt twice the frame width: a fine diagonal twill, a faint mottle, a grey
    conductive yarn across it every 40 px and a few specks of light lint. Fixed seed: the same belt
    in every dataset."""
    rng = np.random.default_rng(20261204)
    k = w / 320
    width = 2 * w
    ys, xs = np.mgrid[0:h, 0:width].astype(np.float32)
    twill = np.sin((xs + ys) * (2 * math.pi / max(2.5, 3.2 * k)))
    cloud = cv2.resize(rng.normal(0.0, 1.0, (max(2, h // 30), max(2, width // 30))).astype(np.float32), (width, h),
                       interpolation=cv2.INTER_CUBIC)  # fmt: skip
    grey = 27.0 + 2.2 * twill + 2.5 * cloud + rng.normal(0.0, 1.4, (h, width)).astype(np.float32)
    yarn = np.zeros((h, width), np.uint8)
    rows = np.arange(-8.0, h + 8.0, 8.0)
    for x in np.arange(17.0 * k, width, 40.0 * k):
        pts = np.stack([x + 1.5 * k * np.sin(rows / (13.0 * k)), rows], axis=1)
        cv2.polylines(yarn, [fix(pts)], False, 255, max(1, round(k)), cv2.LINE_AA, 4)
    grey += (10.0 / 255.0) * yarn
    for _ in range(14):  # lint: short bent fibres
        start = rng.uniform((0.0, 0.0), (width, h))
        bend = np.cumsum(rng.normal(0.0, 0.5, 4))
        steps = np.stack([np.cos(bend), np.sin(bend)], axis=1) * rng.uniform(1.5, 3.5) * k
        fibre = np.zeros((h, width), np.uint8)
        cv2.polylines(fibre, [fix(np.vstack([start, start + np.cumsum(steps, axis=0)]))], False, 255, 1,
                      cv2.LINE_AA, 4)  # fmt: skip
        grey += fibre * (float(rng.uniform(30.0, 70.0)) / 255.0)
    bgr = np.stack([grey * 1.06, grey, grey * 0.97], axis=2)
    out = np.clip(np.rint(bgr), 0, 255).astype(np.uint8)
    out.setflags(write=False)
    return out
