"""Fit the registration step on good training parts: the window, whether rotation can be corrected,
and the silhouette sizes a good part has (outside them a frame is ``unknown``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import cv2
import numpy as np

from converters.blemish import detectability
from edge_agent.angle_search import fit_template
from edge_agent.errors import PreprocessError
from edge_agent.preprocessing import Preprocessor, crop_roi, resize, to_color
from edge_agent.registration import locate
from edgeline.core.protocol.manifest import AngleSearch, PreprocessSpec, Registration

log = logging.getLogger(__name__)

RegisterChoice = Literal["auto", "none", "translate", "rigid"]
REGISTER_CHOICES: tuple[str, ...] = ("auto", "none", "translate", "rigid")
#: share of good parts whose silhouette must be found for registration to be used
MIN_FOUND = 0.9
#: margin around the largest part extent (share of the extent) in the window
WINDOW_MARGIN = 0.15
#: a principal axis is usable for rotation when the part is at least this elongated
MIN_ELONGATION = 1.15
_LOCATE_WIDTH = 160
#: an angle search is kept when it finds this share more of the planted blemishes
SEARCH_GAIN = 0.02
#: range of the search for parts without a usable axis (any turn) and around an axis (a refinement)
SEARCH_FREE_DEG = 180.0
SEARCH_REFINE_DEG = 15.0
#: turning every axis back is tried when more than this share of good parts lies beyond ``max_angle``
FREE_TURN_SHARE = 0.05
#: the deviation from the reference axis within which a part counts as turned by a small angle
SMALL_TURN_DEG = 30.0


def fit_registration(
    frames: Sequence[np.ndarray], spec: PreprocessSpec, choice: RegisterChoice = "auto"
) -> tuple[PreprocessSpec, dict[str, Any]]:
    """The spec with a fitted :class:`Registration` (or without one), and notes for the report."""
    if choice == "none" or not frames:
        return replace_registration(spec, None), {"mode": "none", "reason": "not requested" if frames else "no frames"}
    sils = []
    for f in frames:
        img = crop_roi(to_color(f, "gray"), spec.roi)
        h, w = img.shape[:2]
        small = resize(img, (_LOCATE_WIDTH, max(8, round(h * _LOCATE_WIDTH / w))))
        sils.append(locate(small))
    found = [s for s in sils if s.found]
    share = len(found) / len(sils)
    notes: dict[str, Any] = {"good_parts": len(sils), "silhouette_found": round(share, 4)}
    if share < MIN_FOUND:
        why = f"a part silhouette was found in only {100 * share:.0f}% of good parts (needs {100 * MIN_FOUND:.0f}%)"
        if choice != "auto":
            log.warning("registration %s requested but %s; using it anyway", choice, why)
        else:
            log.warning("no registration: %s", why)
            return replace_registration(spec, None), {**notes, "mode": "none", "reason": why}
    if not found:
        return replace_registration(spec, None), {**notes, "mode": "none", "reason": "no silhouette found"}
    widths = np.array([s.width for s in found])
    heights = np.array([s.height for s in found])
    window = (
        float(min(1.0, np.quantile(widths, 0.98) * (1 + WINDOW_MARGIN))),
        float(min(1.0, np.quantile(heights, 0.98) * (1 + WINDOW_MARGIN))),
    )
    window = (max(0.05, window[0]), max(0.05, window[1]))
    elongation = float(np.median([s.elongation for s in found]))
    angles = np.array([s.angle for s in found])
    # circular median of axis angles (period 180 degrees)
    ref = float(
        np.degrees(np.angle(np.median(np.cos(np.radians(2 * angles))) + 1j * np.median(np.sin(np.radians(2 * angles)))))
        / 2
    )
    can_rotate = elongation >= MIN_ELONGATION
    mode: Literal["translate", "rigid"]
    if choice == "rigid":
        mode = "rigid"
    elif choice == "translate":
        mode = "translate"
    else:
        mode = "rigid" if can_rotate else "translate"
    reg = Registration(mode=mode, window=window, reference_angle=max(-90.0, min(90.0, ref)), resample="box")
    if mode == "rigid":
        # a turned part's extent along the frame's axes grows with its angle; once it is turned back,
        # the window need only hold the part itself (plus the margin), so the features spend
        # themselves on the part, not on the belt around it
        reg = _tighten(reg, frames[:200], spec)
    reg, search_notes = _angle_search(frames[:200], spec, reg)
    notes.update(search_notes)
    spec, reg, look_notes = _colour_and_turn(frames[:200], spec, reg, angles)
    notes.update(look_notes)
    spec, reg, iso_notes = _isotropic(frames[:200], spec, reg, angles)
    notes.update(iso_notes)
    # the silhouette sizes on the exact path the device runs
    staged = replace_registration(spec, reg)
    pre = Preprocessor(staged)
    areas = []
    for f in frames[:400]:
        try:
            sil = pre.place(f)[1].silhouette
        except PreprocessError:
            continue
        if sil is not None and sil.found:
            areas.append(sil.area)
    if areas:
        reg = reg.model_copy(update={"area": (float(np.min(areas)), float(np.max(areas)))})
    notes.update(
        mode=mode,
        window=[round(reg.window[0], 4), round(reg.window[1], 4)],
        elongation=round(elongation, 3),
        reference_angle=round(reg.reference_angle, 2),
        angle_spread_deg=round(float(np.std(((angles - ref + 90) % 180) - 90)), 2),
        area=[round(a, 4) for a in reg.area],
    )
    if choice == "auto" and not can_rotate:
        notes["rotation"] = (
            f"not corrected: the part has no clear axis (elongation {elongation:.2f} < {MIN_ELONGATION})"
        )
    return replace_registration(spec, reg), notes


def _tighten(reg: Registration, frames: Sequence[np.ndarray], spec: PreprocessSpec) -> Registration:
    pre = Preprocessor(replace_registration(spec, reg))
    ws, hs = [], []
    for f in frames:
        try:
            sil = locate(_gray(pre.prepare(f)), reg.min_contrast)
        except PreprocessError:
            continue
        if sil.found:
            ws.append(sil.width * reg.window[0])
            hs.append(sil.height * reg.window[1])
    if len(ws) < max(5, len(frames) // 2):
        return reg
    tight = (
        float(min(reg.window[0], max(0.05, np.quantile(ws, 0.98) * (1 + WINDOW_MARGIN)))),
        float(min(reg.window[1], max(0.05, np.quantile(hs, 0.98) * (1 + WINDOW_MARGIN)))),
    )
    return reg.model_copy(update={"window": tight})


def _angle_search(
    frames: Sequence[np.ndarray], spec: PreprocessSpec, reg: Registration
) -> tuple[Registration, dict[str, Any]]:
    """Add an angle search when it makes defects easier to see: its template is fitted on the
    centred good parts, and it is kept only when a good-part model fitted on two thirds of them
    finds more of the faint synthetic blemishes planted in the other third (at the same false
    reject) than without it (:func:`_detectability`). A part lit by a lamp fixed to the frame (a hex
    nut under a side light) can hide more once turned back; a disc with bolt holes much less."""
    base = Preprocessor(replace_registration(spec, reg))
    placed = _prepared(base, frames)
    if len(placed) < 30:
        return reg, {"angle_search": "not tried: too few good parts"}
    range_deg = SEARCH_FREE_DEG if reg.mode == "translate" else min(SEARCH_REFINE_DEG, reg.max_angle)
    candidate = reg.model_copy(update={"search": _search(placed, range_deg)})
    searched = Preprocessor(replace_registration(spec, candidate))
    turned = _prepared(searched, frames)
    before, after = _detectability(base, placed), _detectability(searched, turned)
    kept = after > before + SEARCH_GAIN
    notes = {
        "angle_search": f"{'kept' if kept else 'not kept'}: planted blemishes found {100 * before:.1f}% -> "
        f"{100 * after:.1f}% (kept above +{100 * SEARCH_GAIN:.0f} points), range ±{range_deg:.0f} degrees"
    }
    log.info("angle search %s", notes["angle_search"])
    return (candidate if kept else reg), notes


def _search(placed: Sequence[np.ndarray], range_deg: float) -> AngleSearch:
    """An angle search of ``range_deg`` with its template fitted on centred good parts."""
    template = fit_template(placed[:100], range_deg)
    return AngleSearch(range=range_deg, template=tuple(tuple(round(float(v), 4) for v in row) for row in template))


def isotropic_window(window: tuple[float, float], image: tuple[int, int], size: tuple[int, int]) -> tuple[float, float]:
    """The window grown on one axis so that one output pixel spans as many image pixels across as
    down (``image`` and ``size`` as (width, height)): a turn of the working image is then a turn of
    the part, not a turn and a shear."""
    (iw, ih), (ow, oh) = image, size
    per_px = max(window[0] * iw / ow, window[1] * ih / oh)
    return (min(1.0, per_px * ow / iw), min(1.0, per_px * oh / ih))


def _isotropic(
    frames: Sequence[np.ndarray], spec: PreprocessSpec, reg: Registration, angles: np.ndarray
) -> tuple[PreprocessSpec, Registration, dict[str, Any]]:
    """The window made isotropic (:func:`isotropic_window`), kept when planted blemishes and patches
    are found :data:`SEARCH_GAIN` more. A window fitted on a part's extents along the frame's axes
    scales the working image differently across and down (casting: 2.7 and 3.5 frame pixels per
    output pixel), so turning a part back by its axis, or by the angle search, also shears it; for a
    part that lies at any angle the shear differs part by part and no two registered parts match.
    The shear grows with the turn, so this is tried only for parts turned by large angles: more than
    :data:`FREE_TURN_SHARE` of good parts beyond ``max_angle`` of the reference axis (then every axis
    is turned back, or many parts are not turned at all), or an angle search of any turn. A part that
    lies within a few degrees (the bracket, +-20) keeps its tighter window: widening it costs
    resolution across (dev bracket: 34.3% -> 37.6% planted found, but 49 -> 58 of 100 fresh defects
    passed at 1% false reject)."""
    deviation = np.abs((angles - reg.reference_angle + 90.0) % 180.0 - 90.0)
    beyond = float(np.mean(deviation > SMALL_TURN_DEG)) if len(angles) else 0.0
    turns_far = (reg.mode == "rigid" and beyond > FREE_TURN_SHARE) or (
        reg.search is not None and reg.search.range > SEARCH_REFINE_DEG
    )
    if not turns_far or len(frames) < 30:
        return spec, reg, {}
    image = crop_roi(frames[0], spec.roi).shape[1::-1]
    window = isotropic_window(reg.window, (int(image[0]), int(image[1])), spec.size)
    if max(abs(a - b) / b for a, b in zip(window, reg.window, strict=True)) < 0.02:
        return spec, reg, {"isotropic_window": "already isotropic"}
    candidate = reg.model_copy(update={"window": window, "search": None})
    if reg.search is not None:
        unturned = Preprocessor(replace_registration(spec, candidate))
        candidate = candidate.model_copy(update={"search": _search(_prepared(unturned, frames), reg.search.range)})
    iso_spec = replace_registration(spec, candidate)
    before = _detectability(Preprocessor(spec), _prepared(Preprocessor(spec), frames), patches=True)
    after = _detectability(Preprocessor(iso_spec), _prepared(Preprocessor(iso_spec), frames), patches=True)
    kept = after > before + SEARCH_GAIN
    note = (
        f"{'kept' if kept else 'not kept'}: window {reg.window[0]:.3f} x {reg.window[1]:.3f} -> {window[0]:.3f} x "
        f"{window[1]:.3f}; planted blemishes found {100 * before:.1f}% -> {100 * after:.1f}%"
    )
    log.info("isotropic window %s", note)
    return (iso_spec, candidate, {"isotropic_window": note}) if kept else (spec, reg, {"isotropic_window": note})


def _colour_and_turn(
    frames: Sequence[np.ndarray], spec: PreprocessSpec, reg: Registration, angles: np.ndarray
) -> tuple[PreprocessSpec, Registration, dict[str, Any]]:
    """Two more choices by planted blemishes and patches (:func:`converters.blemish.planted`), each
    kept only when it finds :data:`SEARCH_GAIN` more:
    the colour grid (BGR, 3x the pixels) instead of grey, for colour frames (an orange gasket and the
    grey steel belt showing through its holes have nearly the same grey level); and, for rigid parts
    of which more than :data:`FREE_TURN_SHARE` lie beyond ``max_angle`` from the reference axis, turning
    every axis back (``max_angle`` 90)."""
    notes: dict[str, Any] = {}
    grey = replace_registration(spec, reg)
    colour_frames = bool(frames) and frames[0].ndim == 3 and frames[0].shape[2] >= 3
    chosen, found = grey, -1.0
    if spec.color == "gray" and "hog" not in spec.features and colour_frames and len(frames) >= 30:
        colour = PreprocessSpec.model_validate({**grey.model_dump(), "color": "bgr"})
        before = _detectability(Preprocessor(grey), _prepared(Preprocessor(grey), frames), patches=True)
        after = _detectability(Preprocessor(colour), _prepared(Preprocessor(colour), frames), patches=True)
        kept = after > before + SEARCH_GAIN
        notes["colour"] = (
            f"{'BGR' if kept else 'grey'}: planted blemishes found {100 * before:.1f}% grey, {100 * after:.1f}% "
            f"BGR (BGR kept above +{100 * SEARCH_GAIN:.0f} points)"
        )
        chosen, found = (colour, after) if kept else (grey, before)
    deviation = np.abs((angles - reg.reference_angle + 90.0) % 180.0 - 90.0)
    beyond = float(np.mean(deviation > reg.max_angle)) if len(angles) else 0.0
    if reg.mode == "rigid" and reg.max_angle < 90.0 and beyond > FREE_TURN_SHARE and len(frames) >= 30:
        if found < 0:
            found = _detectability(Preprocessor(grey), _prepared(Preprocessor(grey), frames), patches=True)
        free = reg.model_copy(update={"max_angle": 90.0})
        turned = PreprocessSpec.model_validate({**chosen.model_dump(), "registration": free.model_dump()})
        found_free = _detectability(Preprocessor(turned), _prepared(Preprocessor(turned), frames), patches=True)
        keep_free = found_free > found + SEARCH_GAIN
        notes["turn_every_axis"] = (
            f"{'kept' if keep_free else 'not kept'}: {100 * beyond:.0f}% of good parts beyond "
            f"{reg.max_angle:.0f} degrees; planted blemishes found {100 * found:.1f}% -> {100 * found_free:.1f}%"
        )
        if keep_free:
            chosen, reg = turned, free
    log.info("appearance: %s", "; ".join(f"{k} {v}" for k, v in notes.items()))
    return chosen, reg, notes


def _prepared(pre: Preprocessor, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    out = []
    for f in frames:
        try:
            out.append(pre.prepare(f))
        except PreprocessError:
            continue
    return out


def _detectability(pre: Preprocessor, prepared: Sequence[np.ndarray], patches: bool = False) -> float:
    """Planted blemishes found (:mod:`converters.blemish`): fitted on two thirds, judged on the rest."""
    n_fit = (2 * len(prepared)) // 3
    return detectability(pre, prepared[:n_fit], prepared[n_fit:], components=min(48, n_fit // 2), patches=patches)


def _gray(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def replace_registration(spec: PreprocessSpec, reg: Registration | None) -> PreprocessSpec:
    return PreprocessSpec.model_validate({**spec.model_dump(), "registration": reg.model_dump() if reg else None})


__all__ = [
    "REGISTER_CHOICES",
    "RegisterChoice",
    "fit_registration",
    "isotropic_window",
    "replace",
    "replace_registration",
]
