"""Planted blemishes: how well a good-part model would see faint defects, measured on good parts.

With good parts only there is nothing to tell one preprocessing or model size from another by the
escape rate. So faint synthetic blemishes (round, soft-edged, lighter or darker, a few sizes) are
planted on the part in held-out good images, and a choice is judged by the share of them a
good-part model fitted on the other good images scores above the held-out good parts' 98th
percentile: the same false reject for every candidate. In the spirit of the synthetic anomalies of
DRAEM and CutPaste, used here to choose, never to train. Used for the angle search
(:mod:`converters.registration_fit`) and the number of components (:func:`choose_components`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from converters.anomaly import fit_good_part_model, part_mask, score_numpy
from edge_agent.preprocessing import Preprocessor, resize
from edge_agent.registration import silhouette_mask

log = logging.getLogger(__name__)

#: (blur sigma in output pixels, grey levels at the centre) of the planted blemishes
BLEMISHES: tuple[tuple[float, float], ...] = ((1.0, 24.0), (2.0, 12.0), (3.0, 8.0), (5.0, 6.0))
#: (radius in output pixels, share blended) of the planted patches: a soft disc of the colour around
#: the part (what shows through a hole or a chip, a foreign tone), half blended into the part. A grey
#: blob moves every colour channel alike; a patch moves them as the part's and the belt's colours
#: differ, which is what a colour grid can see and a grey one may not
PATCHES: tuple[tuple[float, float], ...] = ((3.0, 0.5), (5.0, 0.35))
#: candidate numbers of components; the smallest within :data:`COMPONENT_TIE` of the best is taken
COMPONENT_CHOICES: tuple[int, ...] = (24, 48, 96)
COMPONENT_TIE = 0.02


def blemish(img: np.ndarray, cx: float, cy: float, sigma: float, contrast: float) -> np.ndarray:
    """``img`` with a soft round blemish of ``contrast`` grey levels at its centre (cx, cy)."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    blob = contrast * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2.0 * sigma * sigma))
    if img.ndim == 3:
        blob = blob[:, :, None]
    return np.clip(img.astype(np.float32) + blob, 0, 255).astype(np.uint8)


def patch(img: np.ndarray, cx: float, cy: float, radius: float, share: float, colour: np.ndarray) -> np.ndarray:
    """``img`` with a soft disc of ``colour`` (per channel) blended in by ``share`` at (cx, cy)."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    alpha = share * np.clip(radius - r + 0.5, 0.0, 1.0)
    if img.ndim == 3:
        alpha = alpha[:, :, None]
    out = img.astype(np.float32) * (1.0 - alpha) + np.asarray(colour, np.float32) * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


def planted(held: Sequence[np.ndarray], seed: int = 0, patches: bool = False) -> list[np.ndarray]:
    """Every :data:`BLEMISHES` entry (and with ``patches`` every :data:`PATCHES` entry) once on each
    held-out image, at a random place on its part (a patch takes the median colour of the image's
    border)."""
    rng = np.random.default_rng(seed)
    out = []
    for img in held:
        ys, xs = np.nonzero(silhouette_mask(_gray(img), 15.0))
        if len(ys) == 0:
            continue
        for sigma, contrast in BLEMISHES:
            i = int(rng.integers(len(ys)))
            out.append(blemish(img, float(xs[i]), float(ys[i]), sigma, contrast * float(rng.choice((-1.0, 1.0)))))
        if not patches:
            continue
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]).reshape(-1, 1 if img.ndim == 2 else 3)
        colour = np.median(border, axis=0)
        for radius, share in PATCHES:
            i = int(rng.integers(len(ys)))
            out.append(patch(img, float(xs[i]), float(ys[i]), radius, share, colour))
    return out


def detectability(
    pre: Preprocessor,
    fit_images: Sequence[np.ndarray],
    held: Sequence[np.ndarray],
    components: int,
    seed: int = 0,
    patches: bool = False,
) -> float:
    """Share of the blemishes (with ``patches``, and patches) planted on ``held`` (prepared images)
    that a good-part model of ``components`` fitted on ``fit_images`` scores above the 98th
    percentile of ``held`` itself."""
    w, h = pre.spec.pixel_pool
    x_fit = np.stack([pre.features_of(p) for p in fit_images])
    masks = [resize(silhouette_mask(_gray(p), 15.0).astype(np.float32), (w, h)) for p in fit_images]
    channels = 1 if fit_images[0].ndim == 2 else 3
    model = fit_good_part_model(x_fit, (h, w), components=components, mask=part_mask(masks, (h, w)), channels=channels)
    threshold = float(np.quantile(score_numpy(model, np.stack([pre.features_of(p) for p in held])).score, 0.98))
    marked = planted(held, seed, patches)
    if not marked:
        return 0.0
    return float(np.mean(score_numpy(model, np.stack([pre.features_of(p) for p in marked])).score > threshold))


def choose_components(
    pre: Preprocessor, images: Sequence[np.ndarray], copies: Sequence[np.ndarray] = ()
) -> tuple[int, dict[str, float]]:
    """The number of components for the good-part model: fitted on two thirds of ``images`` (and
    their augmented ``copies``, index for index), judged on the rest; the smallest candidate within
    :data:`COMPONENT_TIE` of the best. Returns (components, share found per candidate)."""
    n_fit = (2 * len(images)) // 3
    fit = list(images[:n_fit]) + list(copies[:n_fit])
    held = images[n_fit:]
    candidates = [k for k in COMPONENT_CHOICES if k <= len(fit) // 2] or [max(1, len(fit) // 2)]
    found = {k: detectability(pre, fit, held, k) for k in candidates}
    chosen = pick_components(found)
    log.info("good-part model: %d components (planted blemishes found: %s)", chosen, found)
    return chosen, {str(k): round(v, 4) for k, v in found.items()}


def pick_components(found: dict[int, float]) -> int:
    """The smallest number of components whose share found is within :data:`COMPONENT_TIE` of the
    best (a smaller model is faster and less prone to learn a defect as good)."""
    if not found:
        raise ValueError("no candidate numbers of components")
    best = max(found.values())
    return min(k for k, v in found.items() if v >= best - COMPONENT_TIE)


def _gray(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
