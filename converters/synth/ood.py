"""Out-of-distribution frames: what a line camera sees when there is no valid part to judge.

For tests of ``unknown`` verdicts: a model must route these to review, never give them a confident
class. :func:`render_ood` draws one frame of a kind, as a line of ``family`` parts would see it
(that family's belt, the same camera: blur, noise, lighting):

* ``black``: a covered or dark lens: near-black (mean grey 1-8 levels) with sensor noise (sigma
  1.5-3.5), faint row banding and a few hot pixels. No scene lighting is applied.
* ``blurred``: something close to the lens (a glove, a hand, cloth, cardboard, dust): a near-uniform,
  smeared frame: the covering colour with a smooth low-frequency variation and a light gradient,
  mixed with 15-35% of the line scene blurred beyond recognition.
* ``empty``: the belt alone.
* ``cup``: a coffee cup seen from the side, standing on the belt: a slightly tapered cylinder
  45-65% of the frame height with cylindrical shading and a specular stripe, an elliptical rim
  with coffee inside, a handle on one side and a shadow. Ceramic white, red, blue, black, yellow or
  green.
* ``cat``: a crude cat lying on the belt: body and head ellipses, two ears, a curled tail, paws,
  eyes and a nose, with a fur-like directional noise texture (striped for tabbies); ginger, grey,
  black, white or brown. The body is 44-64% of the frame width.
* ``wrong_part``: another family's part (a flange on the plate line, a plate on the flange line, a
  plate or a flange, half and half, on the bracket line; a plate, a flange or a bracket, a third
  each, on the hex nut line; a plate, a flange, a bracket or a hex nut, a quarter each, on the
  gasket line; any of those five, a fifth each, on the casting line; any of those six, a sixth each,
  on the pcb line), undamaged, at the inspection position. The bracket never appears on the plate
  and flange lines, the hex nut on no other line but the gasket's, the casting's and the pcb's, the
  gasket on no other line but the casting's and the pcb's, the casting on no other line but the
  pcb's, the pcb on no other line.

Everything random comes from the generator passed in: a seed reproduces the frames.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from converters.errors import DatasetError
from converters.synth.lighting import Lighting
from converters.synth.render import (
    FRAME_SIZE,
    Conditions,
    _noise_bank,
    belt,
    camera,
    check_family,
    check_size,
    draw_part,
    render_part,
)
from converters.synth.shape import fix

OOD_KINDS: tuple[str, ...] = ("black", "blurred", "empty", "cup", "cat", "wrong_part")

_COVERS = ((172, 112, 52), (118, 148, 196), (104, 104, 110), (82, 126, 166), (150, 150, 152))
_CUPS = ((226, 226, 229), (48, 46, 178), (160, 92, 40), (40, 40, 44), (58, 190, 222), (70, 150, 64))
_CATS = ((58, 122, 204), (118, 118, 124), (34, 34, 38), (214, 218, 222), (70, 96, 126))
_TABBY = (True, True, False, False, True)


def _pick(rng: np.random.Generator, options: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    return np.array(options[int(rng.integers(0, len(options)))], np.float32)


def _pt(x: float, y: float) -> tuple[int, int]:
    return round(x * 16), round(y * 16)


def _black(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    level = float(rng.uniform(1.0, 8.0))
    sigma = (1.5, 2.5, 3.5)[int(rng.integers(0, 3))]
    bank = _noise_bank(w, h, sigma)
    oy, ox = int(rng.integers(0, 48)), int(rng.integers(0, 48))
    rows = rng.normal(0.0, 0.6, (h, 1, 1)).astype(np.float32)
    img = np.clip(level + bank[oy : oy + h, ox : ox + w] + rows, 0, 255).astype(np.uint8)
    n_hot = int(rng.integers(0, 12))
    if n_hot:
        ys, xs = rng.integers(0, h, n_hot), rng.integers(0, w, n_hot)
        img[ys, xs] = rng.integers(60, 256, (n_hot, 1)).astype(np.uint8)
    return img


def _blurred(rng: np.random.Generator, size: tuple[int, int], family: str, cond: Conditions) -> np.ndarray:
    w, h = size
    cover = _pick(rng, _COVERS)
    shade = rng.normal(0.0, 9.0, (3, 4, 1)) + rng.normal(0.0, 2.5, (3, 4, 3))  # mostly brightness, little hue
    low = (cover + shade).astype(np.float32)
    a = float(rng.uniform(0.0, 2 * math.pi))
    ramp = (np.cos(a) * np.linspace(-1, 1, 4)[None, :] + np.sin(a) * np.linspace(-1, 1, 3)[:, None]).astype(np.float32)
    low *= (1.0 + 0.15 * ramp)[:, :, None]
    scene = belt(family, size)
    draw_part(scene, family, "ok", rng, cond)
    tiny = cv2.resize(scene, (8, 6), interpolation=cv2.INTER_AREA).astype(np.float32)
    mix = float(rng.uniform(0.15, 0.35))
    small = cv2.resize(low, (8, 6), interpolation=cv2.INTER_LINEAR) * (1 - mix) + tiny * mix
    smooth = cv2.resize(cv2.GaussianBlur(small, (0, 0), 0.8), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(smooth + 0.5, 0, 255).astype(np.uint8)


def _cup(rng: np.random.Generator, size: tuple[int, int], family: str) -> np.ndarray:
    w, h = size
    img = belt(family, size)
    H = float(rng.uniform(0.45, 0.65)) * h  # noqa: N806
    W = H * float(rng.uniform(0.6, 0.85))  # noqa: N806
    cx = w / 2 + float(rng.uniform(-0.15, 0.15)) * w
    bottom = h / 2 + H / 2 + float(rng.uniform(-0.06, 0.06)) * h
    top = bottom - H
    ry = 0.14 * W
    colour = _pick(rng, _CUPS)
    shade_c = tuple(float(v) for v in colour * 0.5)
    # shadow on the belt, then the handle (the body covers its ends), then the body
    cv2.ellipse(img, _pt(cx + 0.18 * W, bottom), _pt(0.62 * W, 0.16 * W), 0, 0, 360, (24, 26, 24), -1, cv2.LINE_AA, 4)
    side = 1 if rng.random() < 0.5 else -1
    handle_c = _pt(cx + side * 0.5 * W, top + 0.45 * H)
    thick = max(2, round(0.09 * W))
    arc = (-90, 90) if side > 0 else (90, 270)
    handle_colour = tuple(float(v) for v in colour * 0.8)
    cv2.ellipse(img, handle_c, _pt(0.26 * W, 0.25 * H), 0, arc[0], arc[1], handle_colour, thick, cv2.LINE_AA, 4)
    mask = np.zeros((h, w), np.uint8)
    body = np.array([[cx - W / 2, top], [cx + W / 2, top], [cx + 0.43 * W, bottom], [cx - 0.43 * W, bottom]])
    cv2.fillPoly(mask, [fix(body)], 255, cv2.LINE_AA, 4)
    cv2.ellipse(mask, _pt(cx, bottom), _pt(0.43 * W, 0.12 * W), 0, 0, 180, 255, -1, cv2.LINE_AA, 4)
    u = np.clip((np.arange(w, dtype=np.float32) - cx) / (W / 2), -1.0, 1.0)
    shade = 0.45 + 0.55 * np.sqrt(1.0 - u**2) + 0.3 * np.exp(-(((u + 0.45) / 0.12) ** 2))
    lit = np.clip(colour[None, None, :] * shade[None, :, None] + 0.5, 0, 255)
    x0, x1 = max(0, int(cx - W / 2) - 2), min(w, int(cx + W / 2) + 3)
    roi = img[:, x0:x1]
    np.copyto(roi, np.broadcast_to(lit[:, x0:x1], roi.shape).astype(np.uint8), where=mask[:, x0:x1, None] > 127)
    cv2.ellipse(img, _pt(cx, top), _pt(W / 2, ry), 0, 0, 360, tuple(float(v) for v in np.minimum(colour * 1.08, 255)),
                -1, cv2.LINE_AA, 4)  # fmt: skip
    coffee = (28, 44, 70) if rng.random() < 0.8 else shade_c
    cv2.ellipse(img, _pt(cx, top + 0.1 * ry), _pt(0.44 * W, 0.78 * ry), 0, 0, 360, coffee, -1, cv2.LINE_AA, 4)
    return img


@functools.lru_cache(maxsize=4)
def _fur_bank(w: int, h: int) -> np.ndarray:
    """Directional noise (hairs along x), unit variance, twice the frame in each direction."""
    rng = np.random.default_rng(77)
    raw = rng.normal(0.0, 1.0, (2 * h, 2 * w)).astype(np.float32)
    blurred: np.ndarray = cv2.GaussianBlur(raw, (0, 0), sigmaX=2.5, sigmaY=0.6)
    fur = (blurred / max(float(blurred.std()), 1e-6)).astype(np.float32)
    fur.setflags(write=False)
    return fur


def _cat(rng: np.random.Generator, size: tuple[int, int], family: str) -> np.ndarray:
    w, h = size
    img = belt(family, size)
    k = w / FRAME_SIZE[0]
    a = float(rng.uniform(0.22, 0.32)) * w
    b = a * float(rng.uniform(0.45, 0.6))
    cx = w / 2 + float(rng.uniform(-0.08, 0.08)) * w
    cy = h / 2 + float(rng.uniform(-0.05, 0.1)) * h
    tilt = float(rng.uniform(-20, 20))
    t = math.radians(tilt)
    along, up = np.array([math.cos(t), math.sin(t)]), np.array([math.sin(t), -math.cos(t)])
    side = 1 if rng.random() < 0.5 else -1
    head = np.array([cx, cy]) + side * 0.85 * a * along + 0.55 * b * up
    hr = b * float(rng.uniform(0.6, 0.8))
    cv2.ellipse(img, _pt(cx + 6 * k, cy + 0.8 * b), _pt(1.05 * a, 0.35 * b), tilt, 0, 360, (22, 24, 22), -1,
                cv2.LINE_AA, 4)  # fmt: skip
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, _pt(cx, cy), _pt(a, b), tilt, 0, 360, 255, -1, cv2.LINE_AA, 4)
    cv2.circle(mask, _pt(*head), round(hr * 16), 255, -1, cv2.LINE_AA, 4)
    for s in (-1, 1):  # ears
        e_dir = up * math.cos(0.6) + s * along * math.sin(0.6)
        base = head + 0.75 * hr * e_dir
        tip = head + 1.55 * hr * e_dir
        perp = np.array([-e_dir[1], e_dir[0]]) * 0.42 * hr
        cv2.fillPoly(mask, [fix(np.array([base - perp, tip, base + perp]))], 255, cv2.LINE_AA, 4)
    for px in (0.45, 0.7):  # paws under the head end
        paw = np.array([cx, cy]) + side * px * a * along - 0.85 * b * up
        cv2.ellipse(mask, _pt(*paw), _pt(0.16 * a, 0.1 * a), tilt, 0, 360, 255, -1, cv2.LINE_AA, 4)
    curl = float(rng.uniform(0.6, 1.4))
    ts = np.linspace(0.0, 1.0, 12)
    tail = (
        np.array([cx, cy])[None, :]
        - side * (0.9 * a + 0.55 * a * ts[:, None]) * along[None, :]
        + (np.sin(ts * math.pi * curl) * 0.7 * b)[:, None] * up[None, :]
    )
    cv2.polylines(mask, [fix(tail)], False, 255, max(2, round(0.2 * b)), cv2.LINE_AA, 4)

    x0, y0, bw, bh = cv2.boundingRect(mask)
    if bw == 0 or bh == 0:
        return img
    x1, y1 = x0 + bw, y0 + bh
    colour = _pick(rng, _CATS)
    tabby = _TABBY[int(np.argmin(np.abs(np.array(_CATS, np.float32) - colour).sum(axis=1)))]
    fur_bank = _fur_bank(w, h)
    oy, ox = int(rng.integers(0, h)), int(rng.integers(0, w))
    fur = fur_bank[oy + y0 : oy + y1, ox + x0 : ox + x1]
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    tone = 1.0 + 0.22 * fur
    if tabby:
        phase = float(rng.uniform(0, 2 * math.pi))
        warp = 3.0 * k * np.sin(ys / (9.0 * k))
        tone *= 0.8 + 0.2 * np.sin((xs + warp) * (2 * math.pi / (0.07 * w)) + phase)
    tone *= 1.12 - 0.3 * (ys - y0) / max(bh, 1)  # lit from above
    alpha = cv2.GaussianBlur(mask[y0:y1, x0:x1].astype(np.float32) * (1.0 / 255.0), (0, 0), 0.9)[:, :, None]
    roi = img[y0:y1, x0:x1].astype(np.float32)
    cat = colour[None, None, :] * tone[:, :, None]
    img[y0:y1, x0:x1] = np.clip(roi + (cat - roi) * alpha + 0.5, 0, 255).astype(np.uint8)
    eye_c = (40, 190, 150) if rng.random() < 0.5 else (30, 170, 210)
    for s in (-1, 1):
        eye = head + 0.38 * hr * s * along + 0.1 * hr * up
        cv2.ellipse(img, _pt(*eye), _pt(0.17 * hr, 0.12 * hr), tilt, 0, 360, eye_c, -1, cv2.LINE_AA, 4)
        cv2.ellipse(img, _pt(*eye), _pt(0.04 * hr, 0.11 * hr), tilt, 0, 360, (10, 10, 10), -1, cv2.LINE_AA, 4)
    nose = head - 0.22 * hr * up
    tri = np.array([nose - 0.1 * hr * along, nose + 0.1 * hr * along, nose - 0.12 * hr * up])
    cv2.fillPoly(img, [fix(tri)], (140, 130, 200), cv2.LINE_AA, 4)
    return img


def render_ood(
    kind: str,
    rng: np.random.Generator,
    *,
    size: tuple[int, int] = FRAME_SIZE,
    family: str = "plate",
    conditions: Conditions | None = None,
    lighting: Lighting | None = None,
) -> np.ndarray:
    """One BGR frame of out-of-distribution ``kind`` (one of :data:`OOD_KINDS`, see the module doc),
    as the camera of a ``family`` line sees it. ``lighting`` overrides ``conditions.lighting``."""
    if kind not in OOD_KINDS:
        raise DatasetError(f"unknown OOD kind {kind!r}; known: {', '.join(OOD_KINDS)}")
    check_family(family)
    check_size(size)
    cond = conditions or Conditions()
    light = lighting if lighting is not None else cond.lighting
    if kind == "black":
        return _black(rng, size)
    if kind == "empty":
        return render_part("empty", rng, conditions=cond, lighting=light, size=size, family=family)
    if kind == "blurred":
        img = _blurred(rng, size, family, cond)
    elif kind == "cup":
        img = _cup(rng, size, family)
    elif kind == "cat":
        img = _cat(rng, size, family)
    else:  # wrong_part
        img = belt(family, size)
        if family == "bracket":
            other = "plate" if rng.random() < 0.5 else "flange"
        elif family == "hexnut":
            other = ("plate", "flange", "bracket")[int(rng.integers(0, 3))]
        elif family == "gasket":
            other = ("plate", "flange", "bracket", "hexnut")[int(rng.integers(0, 4))]
        elif family == "casting":
            other = ("plate", "flange", "bracket", "hexnut", "gasket")[int(rng.integers(0, 5))]
        elif family == "pcb":
            other = ("plate", "flange", "bracket", "hexnut", "gasket", "casting")[int(rng.integers(0, 6))]
        else:
            other = "flange" if family == "plate" else "plate"
        draw_part(img, other, "ok", rng, cond)
    return camera(img, rng, cond, light)
