"""Fit the registration step on good training parts: the window, whether rotation can be corrected,
and the silhouette sizes a good part has (outside them a frame is ``unknown``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np

from edge_agent.errors import PreprocessError
from edge_agent.preprocessing import Preprocessor, crop_roi, resize, to_color
from edge_agent.protocol.manifest import PreprocessSpec, Registration
from edge_agent.registration import locate

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
    reg = Registration(mode=mode, window=window, reference_angle=max(-90.0, min(90.0, ref)))
    if mode == "rigid":
        # a turned part's extent along the frame's axes grows with its angle; once it is turned back,
        # the window need only hold the part itself (plus the margin), so the features spend
        # themselves on the part, not on the belt around it
        reg = _tighten(reg, frames[:200], spec)
        window = reg.window
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
        window=[round(window[0], 4), round(window[1], 4)],
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
            sil = locate(pre.prepare(f), reg.min_contrast)
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


def replace_registration(spec: PreprocessSpec, reg: Registration | None) -> PreprocessSpec:
    return PreprocessSpec.model_validate({**spec.model_dump(), "registration": reg.model_dump() if reg else None})


__all__ = ["REGISTER_CHOICES", "RegisterChoice", "fit_registration", "replace", "replace_registration"]
