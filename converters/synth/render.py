"""Seeded synthetic inspection-line images: machined parts on a conveyor belt, with defects.

A frame (BGR, 320x240 by default) shows a belt and, at the inspection position, a part of one of
seven families (``family=``):

* ``plate`` (the default): an aluminium plate, 150x108 px, with four drilled holes, on a dark
  green-grey rubber belt with cleats;
* ``flange``: a round turned steel flange, 132 px across, with a centre bore and a bolt circle of six
  holes, on a blue-grey modular plastic belt (see :mod:`converters.synth.flange`);
* ``bracket``: an L-shaped stamped steel bracket, 150x126 px, dark and mottled, with two slots, two
  round holes and a bend line, on a wooden slat conveyor (see :mod:`converters.synth.bracket`). It
  was the sealed family of the first final evaluation and has been used;
* ``hexnut``: a large zinc-plated hex nut seen from above, 118 px across the flats, with a chamfer
  ring and a threaded bore, on a dark green cutting mat with grid lines (see
  :mod:`converters.synth.hexnut`). It was the sealed family of the second final evaluation and has
  been used;
* ``gasket``: a die-cut gasket, the sealed family of the third final evaluation, now used (see its
  module);
* ``casting``: a sand-cast cover, the sealed family of the fourth final evaluation, now used (see its
  module);
* ``pcb``: the sealed family for the next final evaluation, not for tuning (see its module).

Default defect classes (:data:`CLASSES`, what a dataset holds unless asked otherwise):

* ``ok``: a clean part;
* ``scratch``: a thin bright or dark line across the part;
* ``dent``: a dark, soft-edged spot;
* ``missing_hole``: one of the holes (on the flange: one of the six bolt holes; on the bracket: a
  slot or a hole) was never drilled or punched; on the hex nut, the bore was never pierced; on the
  gasket, the casting and the pcb, see their modules.

Extra kinds, only when asked for by name (:data:`EXTRA_DEFECTS`; looks and sizes in
:mod:`converters.synth.defects`): ``crack``, ``stain``, ``chip``. ``label="empty"`` gives the belt
alone. Frames that are no part at all (a black or covered lens, a cup, a cat, the wrong part) come
from :func:`converters.synth.ood.render_ood`.

Everything random comes from the ``numpy.random.Generator`` passed in, so a seed reproduces a dataset
bit for bit. The lighting (:class:`~converters.synth.lighting.Lighting`) is applied last, exactly as
:func:`~converters.synth.lighting.apply_lighting` applies it to any image. Rendering costs about a
millisecond per 320x240 frame (the bracket and the hex nut about two, the pcb, composed on a canvas
of its own and warped into the frame, five to thirteen, the casting, whose relief is shaded per
pixel, about fifteen): textures are drawn once per frame size and cached.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from converters.errors import DatasetError
from converters.synth.bracket import bracket_belt_strip, draw_bracket
from converters.synth.casting import casting_belt_strip, draw_casting
from converters.synth.defects import EXTRA_DEFECTS, draw_extra
from converters.synth.flange import draw_flange, flange_belt_strip
from converters.synth.gasket import draw_gasket, gasket_belt_strip
from converters.synth.hexnut import draw_hexnut, hexnut_mat_strip
from converters.synth.lighting import Lighting, apply_lighting
from converters.synth.pcb import draw_pcb
from converters.synth.pcb_layout import pcb_belt_strip
from converters.synth.shape import Hole, PartShape, fix, rotated

#: the classes of a dataset unless asked otherwise; models trained on them never saw the extra kinds
CLASSES: tuple[str, ...] = ("ok", "scratch", "dent", "missing_hole")
#: every part class that can be rendered, on any family
ALL_CLASSES: tuple[str, ...] = CLASSES + EXTRA_DEFECTS
#: the part families; "pcb" is the sealed one, kept for the next final measurement ("bracket",
#: "hexnut", "gasket" and "casting" have been used for the first four)
FAMILIES: tuple[str, ...] = ("plate", "flange", "bracket", "hexnut", "gasket", "casting", "pcb")
FRAME_SIZE: tuple[int, int] = (320, 240)  # (width, height)
#: Plate size in pixels at the default frame size; scaled with the frame.
_PLATE = (150.0, 108.0)
_HOLE_R = 8.5
_HOLES = ((-0.36, -0.30), (0.36, -0.30), (-0.36, 0.30), (0.36, 0.30))  # centres, fractions of plate size
#: the families with a pose of their own in :class:`Conditions` (``<family>_jitter_px``, ``<family>_rotation_deg``)
_POSED: tuple[str, ...] = ("flange", "bracket", "hexnut", "gasket", "casting", "pcb")


@dataclass(frozen=True)
class Conditions:
    """Camera and part variation. Each frame draws its own values within these bounds."""

    lighting: Lighting = field(default_factory=Lighting)
    #: random per-frame lighting variation: +- grey levels, +- relative contrast
    brightness_jitter: float = 6.0
    contrast_jitter: float = 0.05
    #: largest Gaussian blur sigma in pixels (each frame draws 0..blur); 0 = sharp
    blur: float = 0.6
    #: sensor noise standard deviation in grey levels; 0 = none
    noise: float = 3.0
    #: the plate's position jitter in pixels and rotation jitter in degrees
    jitter_px: float = 6.0
    rotation_deg: float = 3.0
    #: the flange's position jitter in pixels and in-plane rotation jitter in degrees (180 = any angle)
    flange_jitter_px: float = 10.0
    flange_rotation_deg: float = 180.0
    #: the bracket's position jitter in pixels and in-plane rotation jitter in degrees
    bracket_jitter_px: float = 12.0
    bracket_rotation_deg: float = 20.0
    #: the hex nut's position jitter in pixels and in-plane rotation jitter in degrees (30 = one period
    #: of the hexagon; its maker's mark still shows the angle)
    hexnut_jitter_px: float = 10.0
    hexnut_rotation_deg: float = 30.0
    #: the gasket's position jitter in pixels and in-plane rotation jitter in degrees (see its module)
    gasket_jitter_px: float = 12.0
    gasket_rotation_deg: float = 90.0
    #: the casting's position jitter in pixels and in-plane rotation jitter in degrees (see its module)
    casting_jitter_px: float = 10.0
    casting_rotation_deg: float = 180.0
    #: the board's position jitter in pixels and in-plane rotation jitter in degrees (see its module)
    pcb_jitter_px: float = 12.0
    pcb_rotation_deg: float = 25.0

    def __post_init__(self) -> None:
        names = ("brightness_jitter", "contrast_jitter", "blur", "noise", "jitter_px", "rotation_deg")
        poses = tuple(f"{family}_{what}" for family in _POSED for what in ("jitter_px", "rotation_deg"))
        for name in (*names, *poses):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise DatasetError(f"{name} must be a non-negative number, got {value}")
        if self.blur > 10 or self.noise > 64 or self.jitter_px > 40 or self.rotation_deg > 45:
            raise DatasetError("blur <= 10, noise <= 64, jitter_px <= 40 and rotation_deg <= 45")
        for family in _POSED:
            jitter, rotation = self.jitter_for(family)
            if jitter > 40:
                raise DatasetError(f"{family}_jitter_px (position jitter) must be at most 40 px, got {jitter}")
            if rotation > 180:
                raise DatasetError(
                    f"{family}_rotation_deg (rotation jitter) must be at most 180 degrees (any angle), got {rotation}"
                )

    def jitter_for(self, family: str) -> tuple[float, float]:
        """``(position jitter px, rotation jitter degrees)`` of a part family."""
        if family in _POSED:
            return getattr(self, f"{family}_jitter_px"), getattr(self, f"{family}_rotation_deg")
        return self.jitter_px, self.rotation_deg


# --- textures (cached per frame size; they are the same belt and the same metal in every frame) --


@functools.lru_cache(maxsize=4)
def _belt_strip(w: int, h: int) -> np.ndarray:
    """A belt texture twice the frame width (the belt moves in the video): dark green-grey rubber with
    cleats every 40 px and grain. Fixed seed: it is the same belt in every dataset."""
    rng = np.random.default_rng(20240611)
    width = 2 * w
    noise = np.full((h, width), 58.0, dtype=np.float32) + rng.normal(0.0, 5.0, (h, width)).astype(np.float32)
    base: np.ndarray = cv2.GaussianBlur(noise, (0, 0), 0.8)
    cleat = (np.arange(width) % 40) < 3
    base[:, cleat] -= 14.0
    base += np.linspace(-4.0, 4.0, h, dtype=np.float32)[:, None]  # light falls off towards the bottom
    grey = np.clip(base, 0, 255)
    bgr = np.stack([grey * 1.02, grey * 1.08, grey * 0.92], axis=2)  # slightly green rubber
    out = np.clip(np.rint(bgr), 0, 255).astype(np.uint8)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=4)
def _metal(w: int, h: int) -> np.ndarray:
    """Brushed aluminium: horizontal streaks and a soft highlight, as a full-frame BGR texture."""
    rng = np.random.default_rng(7)
    raw = rng.normal(0.0, 7.0, (h, 1)).astype(np.float32) * np.ones((1, w), np.float32)
    raw += rng.normal(0.0, 2.5, (h, w)).astype(np.float32)
    streaks: np.ndarray = cv2.GaussianBlur(raw, (0, 0), sigmaX=6.0, sigmaY=0.5)
    xs = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    ys = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    highlight = 18.0 * np.exp(-((xs + 0.3) ** 2 + (ys + 0.4) ** 2) / 0.5)
    grey = np.clip(168.0 + streaks + highlight, 0, 255)
    out = np.clip(np.rint(np.stack([grey * 1.01, grey, grey * 0.98], axis=2)), 0, 255).astype(np.uint8)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=8)
def _noise_bank(w: int, h: int, sigma: float) -> np.ndarray:
    """Gaussian noise larger than a frame; a frame takes a random window of it (cheap, seeded)."""
    rng = np.random.default_rng(99)
    bank = np.rint(rng.normal(0.0, sigma, (h + 48, w + 48, 3))).astype(np.int16)
    bank.setflags(write=False)
    return bank


# --- rendering -----------------------------------------------------------------------------------


_rotated = rotated
_fix = fix


def _plate_outline(pw: float, ph: float, corner: float) -> np.ndarray:
    """Rounded-rectangle outline centred at the origin."""
    pts: list[tuple[float, float]] = []
    for cx, cy, a0 in ((pw / 2 - corner, -ph / 2 + corner, -90), (pw / 2 - corner, ph / 2 - corner, 0)):
        pts += [
            (cx + corner * math.cos(math.radians(a0 + t)), cy + corner * math.sin(math.radians(a0 + t)))
            for t in range(0, 91, 15)
        ]
    for cx, cy, a0 in ((-pw / 2 + corner, ph / 2 - corner, 90), (-pw / 2 + corner, -ph / 2 + corner, 180)):
        pts += [
            (cx + corner * math.cos(math.radians(a0 + t)), cy + corner * math.sin(math.radians(a0 + t)))
            for t in range(0, 91, 15)
        ]
    return np.asarray(pts, dtype=np.float64)


def _draw_scratch(
    img: np.ndarray, rng: np.random.Generator, centre: np.ndarray, pw: float, ph: float, angle: float
) -> None:
    length = rng.uniform(0.35, 0.7) * pw
    theta = rng.uniform(-60, 60) + (90 if rng.random() < 0.3 else 0)
    mid = np.array([rng.uniform(-0.2, 0.2) * pw, rng.uniform(-0.15, 0.15) * ph])
    d = np.array([math.cos(math.radians(theta)), math.sin(math.radians(theta))]) * length / 2
    ends = _rotated(np.stack([mid - d, mid + d]), angle, (float(centre[0]), float(centre[1])))
    bright = rng.random() < 0.6
    colour = (238, 238, 240) if bright else (92, 92, 96)
    thickness = int(rng.integers(2, 4))
    p0, p1 = _fix(ends)
    cv2.line(img, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), colour, thickness, cv2.LINE_AA, 4)


def _draw_dent(
    img: np.ndarray, rng: np.random.Generator, centre: np.ndarray, pw: float, ph: float, angle: float
) -> None:
    # away from the holes, somewhere on the face of the plate
    local = np.array([[rng.uniform(-0.22, 0.22) * pw, rng.uniform(-0.3, 0.3) * ph]])
    cx, cy = _rotated(local, angle, (float(centre[0]), float(centre[1])))[0]
    r = rng.uniform(0.045, 0.075) * pw
    depth = rng.uniform(55, 85)
    pad = int(r * 2.5) + 2
    x0, y0 = max(0, int(cx) - pad), max(0, int(cy) - pad)
    x1, y1 = min(img.shape[1], int(cx) + pad), min(img.shape[0], int(cy) + pad)
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.float32)
    axes = (max(1, int(r * 16)), max(1, int(r * rng.uniform(0.6, 1.0) * 16)))
    cv2.ellipse(
        mask, (int((cx - x0) * 16), int((cy - y0) * 16)), axes, rng.uniform(0, 180), 0, 360, 1.0, -1, cv2.LINE_AA, 4
    )
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.8, r / 3))
    patch = img[y0:y1, x0:x1].astype(np.float32) - depth * mask[:, :, None]
    img[y0:y1, x0:x1] = np.clip(patch, 0, 255).astype(np.uint8)


def check_family(family: str) -> None:
    if family not in FAMILIES:
        raise DatasetError(f"unknown part family {family!r}; known: {', '.join(FAMILIES)}")


def check_label(label: str) -> None:
    if label not in ALL_CLASSES and label != "empty":
        raise DatasetError(f"unknown class {label!r}; known: {', '.join(ALL_CLASSES)} (and 'empty')")


def check_size(size: tuple[int, int]) -> None:
    w, h = size
    if not (64 <= w <= 4096 and 48 <= h <= 4096):
        raise DatasetError(f"frame size {w}x{h} is outside 64x48..4096x4096")


#: the posed families' belts and painters (the plate's are this module's own)
_STRIPS: dict[str, Callable[[int, int], np.ndarray]] = {
    "flange": flange_belt_strip, "bracket": bracket_belt_strip, "hexnut": hexnut_mat_strip,
    "gasket": gasket_belt_strip, "casting": casting_belt_strip, "pcb": pcb_belt_strip,
}  # fmt: skip
_DRAWERS: dict[str, Callable[..., PartShape]] = {
    "flange": draw_flange, "bracket": draw_bracket, "hexnut": draw_hexnut, "gasket": draw_gasket,
    "casting": draw_casting, "pcb": draw_pcb,
}  # fmt: skip


def belt(family: str, size: tuple[int, int], belt_shift: int = 0) -> np.ndarray:
    """A fresh (writable) frame of a family's belt, shifted by ``belt_shift`` pixels."""
    w, h = size
    strip = _STRIPS.get(family, _belt_strip)(w, h)
    shift = belt_shift % w
    return np.ascontiguousarray(strip[:, w - shift : 2 * w - shift])


def _draw_plate(img: np.ndarray, label: str, geo: np.random.Generator, cond: Conditions, x_offset: float) -> PartShape:
    """Draw a plate of class ``label`` onto ``img`` in place; every part draw comes from ``geo``."""
    h, w = img.shape[:2]
    k = w / FRAME_SIZE[0]
    dx = geo.uniform(-1, 1) * cond.jitter_px * k
    dy = geo.uniform(-1, 1) * cond.jitter_px * k
    angle = geo.uniform(-1, 1) * cond.rotation_deg
    pw, ph = _PLATE[0] * k, _PLATE[1] * k
    centre = np.array([w / 2 + dx + x_offset, h / 2 + dy])
    outline = _rotated(_plate_outline(pw, ph, 9.0 * k), angle, (float(centre[0]), float(centre[1])))
    # a soft shadow down-right of the plate, then the plate itself
    cv2.fillPoly(img, [_fix(outline + 4 * k)], (30, 33, 28), cv2.LINE_AA, 4)
    background = img.copy() if label == "chip" else None
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [_fix(outline)], 255, cv2.LINE_AA, 4)
    metal = _metal(w, h)
    cv2.copyTo(metal, mask, img)
    cv2.polylines(img, [_fix(outline)], True, (205, 205, 208), max(1, round(k)), cv2.LINE_AA, 4)
    holes = list(_HOLES)
    if label == "missing_hole":
        holes.pop(int(geo.integers(0, len(holes))))
    hole_px = _rotated(np.array(holes) * [pw, ph], angle, (float(centre[0]), float(centre[1])))
    r = _HOLE_R * k * geo.uniform(0.95, 1.05)
    for hx, hy in hole_px:
        at = (round(hx * 16), round(hy * 16))
        cv2.circle(img, at, int((r + 1.8 * k) * 16), (122, 122, 126), -1, cv2.LINE_AA, 4)  # chamfer
        cv2.circle(img, at, int(r * 16), (34, 37, 32), -1, cv2.LINE_AA, 4)  # through-hole: belt shows
    shape = PartShape(
        (float(centre[0]), float(centre[1])),
        float(angle),
        pw,
        outline,
        tuple(Hole(float(hx), float(hy), float(r), float(r + 1.8 * k)) for hx, hy in hole_px),
        mask,
    )
    if label == "scratch":
        _draw_scratch(img, geo, centre, pw, ph, angle)
    elif label == "dent":
        _draw_dent(img, geo, centre, pw, ph, angle)
    elif label in EXTRA_DEFECTS:
        draw_extra(label, img, shape, geo, k, background)
    return shape


def draw_part(
    img: np.ndarray, family: str, label: str, geo: np.random.Generator, cond: Conditions, x_offset: float = 0.0
) -> PartShape:
    """Draw a part of ``family`` and class ``label`` onto ``img`` (any background) in place."""
    if family in _DRAWERS:
        jitter, rotation = cond.jitter_for(family)
        return _DRAWERS[family](img, label, geo, jitter_px=jitter, rotation_deg=rotation, x_offset=x_offset)
    return _draw_plate(img, label, geo, cond, x_offset)


def camera(img: np.ndarray, rng: np.random.Generator, cond: Conditions, light: Lighting) -> np.ndarray:
    """The camera's share of a frame, drawn from ``rng``: blur, sensor noise, lighting and its flicker."""
    h, w = img.shape[:2]
    if cond.blur > 0:
        sigma = float(rng.uniform(0.0, cond.blur))
        if sigma > 0.25:
            img = cv2.GaussianBlur(img, (0, 0), sigma)
    if cond.noise > 0:
        bank = _noise_bank(w, h, round(float(cond.noise), 2))
        oy, ox = int(rng.integers(0, 48)), int(rng.integers(0, 48))
        img = cv2.add(img, bank[oy : oy + h, ox : ox + w], dtype=cv2.CV_8U)
    b = light.brightness + rng.uniform(-1, 1) * cond.brightness_jitter
    c = light.contrast * (1.0 + rng.uniform(-1, 1) * cond.contrast_jitter)
    if b != 0.0 or c != 1.0 or light.vignette > 0:
        img = apply_lighting(img, float(np.clip(b, -255, 255)), float(np.clip(c, 1e-3, 10.0)), light.vignette)
    return img


def render_part(
    label: str,
    rng: np.random.Generator,
    lighting: Lighting | None = None,
    *,
    conditions: Conditions | None = None,
    size: tuple[int, int] = FRAME_SIZE,
    x_offset: float = 0.0,
    belt_shift: int = 0,
    part_seed: int | None = None,
    family: str = "plate",
) -> np.ndarray:
    """One BGR frame of a part of ``family`` (``"plate"``, ``"flange"``, ``"bracket"``, ``"hexnut"``,
    ``"gasket"``, ``"casting"`` or ``"pcb"``) and class ``label`` at the inspection position, on that family's
    belt (the hex nut's: a mat).

    ``label`` is one of :data:`ALL_CLASSES` or ``"empty"`` (the belt alone). ``rng`` draws everything
    by default. With ``part_seed``, the part itself (position jitter, rotation, which hole is missing,
    the defect's shape) comes from that seed and only the camera (blur, noise, lighting flicker) from
    ``rng``: the video shows one physical part over several frames that way, and the same part can be
    rendered with and without a defect. ``x_offset`` moves the part along the belt (pixels from the
    centre) and ``belt_shift`` the belt texture. ``lighting`` overrides ``conditions.lighting``."""
    cond = conditions or Conditions()
    light = lighting if lighting is not None else cond.lighting
    check_family(family)
    check_label(label)
    check_size(size)
    img = belt(family, size, belt_shift)
    if label != "empty":
        geo = rng if part_seed is None else np.random.default_rng(part_seed)
        draw_part(img, family, label, geo, cond, x_offset)
    return camera(img, rng, cond, light)
