"""The good-part model: learn what good parts look like, score how far a part is from them.

An industrial variation model with a learned subspace, in the spirit of PaDiM's per-location
statistics, sized for scikit-learn and ONNX:

* the registered, per-image normalised pooled pixels of good parts are fitted with a PCA
  (scikit-learn) of ``k`` components: what good parts share, lighting gradients and small residual
  misalignment included;
* the reconstruction residual of a part, divided by the residual's per-pixel spread on good parts
  the PCA did not see (so edges, which vary more, tolerate more), is a z-map; smoothed over 3x3
  cells it is the anomaly map, its largest value the anomaly score, and the mean squared z over the
  whole part the global score that tells a foreign object from a local defect.

Everything is MatMul, Sub, Abs and pooling, so the branch runs in ONNX Runtime with no new
dependency on the device, and its two MatMuls quantize to int8. :func:`score_numpy` computes the
same figures in numpy for cross-validation (the ONNX graph is checked against it in the tests).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
from sklearn.decomposition import PCA

from converters.errors import TrainingError

log = logging.getLogger(__name__)

#: floor of the per-pixel residual spread, as a share of its median: a pixel that never varied on
#: the good parts seen must not turn the smallest deviation into a huge z
RSD_FLOOR = 0.5
MIN_GOOD = 8
#: a map cell this many residual spreads away counts as "hot" for the global score
HOT_CELL_Z = 3.0
#: a frame with at least this share of hot cells is never a part this model knows, whatever
#: defects were seen in training
UNKNOWN_SHARE_FLOOR = 0.25


@dataclass(frozen=True)
class GoodPartModel:
    """A fitted good-part model over the first ``pixels`` features (a ``grid`` = (h, w) image)."""

    mean: np.ndarray  # (P,)
    components: np.ndarray  # (k, P), orthonormal rows
    inv_rsd: np.ndarray  # (P,) 1 / residual spread per pixel
    grid: tuple[int, int]  # (h, w)
    fit_rows: int
    spread_rows: int
    #: ``pixels / cells of the part``: the hot share is counted on the part, not on the whole grid
    hot_scale: float = 1.0

    @property
    def pixels(self) -> int:
        return int(self.mean.shape[0])

    @property
    def k(self) -> int:
        return int(self.components.shape[0])


def part_mask(masks: list[np.ndarray], grid: tuple[int, int], share: float = 0.5) -> np.ndarray:
    """Cells where the part is, from good parts' pooled silhouettes: covered in at least ``share`` of
    them on average, grown by one cell (so a chip out of the outer edge is still on the part). All
    ones when there are no silhouettes (no registration). Flattened (h * w,) float32 of 0/1."""
    h, w = grid
    if not masks:
        return np.ones(h * w, np.float32)
    mean = np.mean(np.stack(masks), axis=0)
    cells = (mean >= share).astype(np.uint8)
    if cells.sum() < 0.05 * h * w:  # no stable silhouette: look everywhere
        return np.ones(h * w, np.float32)
    grown = cv2.dilate(cells, np.ones((3, 3), np.uint8))
    return grown.reshape(-1).astype(np.float32)


def fit_good_part_model(
    x_good: np.ndarray,
    grid: tuple[int, int],
    *,
    components: int = 48,
    seed: int = 0,
    spread_share: float = 0.25,
    mask: np.ndarray | None = None,
) -> GoodPartModel:
    """Fit on good parts' features ``(N, >= h*w)``; the first h*w columns are the pixel grid.

    A share of the rows (``spread_share``, at least 4) is held back from the PCA to measure the
    residual spread on parts the PCA did not see; then the PCA is NOT refitted, so the spread matches
    the model that ships."""
    h, w = grid
    p = h * w
    if x_good.ndim != 2 or x_good.shape[1] < p:
        raise TrainingError(f"good-part model needs {p} pixel features, got shape {x_good.shape}")
    n = len(x_good)
    if n < MIN_GOOD:
        raise TrainingError(f"a good-part model needs at least {MIN_GOOD} good images, got {n}")
    xp = np.asarray(x_good[:, :p], dtype=np.float64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_spread = max(4, round(n * spread_share))
    spread_idx, fit_idx = order[:n_spread], order[n_spread:]
    k = max(1, min(components, len(fit_idx) - 1, p))
    pca = PCA(n_components=k, random_state=seed, svd_solver="full").fit(xp[fit_idx])
    mean = pca.mean_
    comps = pca.components_
    held = xp[spread_idx] - mean
    resid = held - (held @ comps.T) @ comps
    rsd = np.sqrt(np.mean(resid * resid, axis=0))
    rsd_img = cv2.blur(rsd.reshape(h, w).astype(np.float32), (3, 3)).reshape(-1).astype(np.float64)
    weights = np.ones(p, np.float64) if mask is None else np.asarray(mask, np.float64).reshape(p)
    inside = weights > 0
    rsd_img = np.maximum(rsd_img, RSD_FLOOR * float(np.median(rsd_img[inside])) + 1e-6)
    return GoodPartModel(
        mean=mean.astype(np.float32),
        components=comps.astype(np.float32),
        inv_rsd=(weights / rsd_img).astype(np.float32),  # zero off the part: the belt is not inspected
        grid=(h, w),
        fit_rows=len(fit_idx),
        spread_rows=len(spread_idx),
        hot_scale=float(p / max(1, int(inside.sum()))),
    )


@dataclass(frozen=True)
class Scores:
    score: np.ndarray  # (N,)
    global_: np.ndarray  # (N,)
    maps: np.ndarray  # (N, h, w)


def score_numpy(model: GoodPartModel, x: np.ndarray) -> Scores:
    """The figures the ONNX branch computes, in numpy (float32 like ONNX Runtime)."""
    h, w = model.grid
    d = np.asarray(x[:, : model.pixels], dtype=np.float32) - model.mean
    rec = (d @ model.components.T) @ model.components
    z = np.abs(d - rec) * model.inv_rsd
    z_img = z.reshape(-1, 1, h, w)
    maps = _avg_pool3(z_img)[:, 0]
    flat = maps.reshape(len(x), -1)
    share = np.mean(flat > np.float32(HOT_CELL_Z), axis=1) * np.float32(model.hot_scale)
    return Scores(flat.max(axis=1), share, maps)


def _avg_pool3(z: np.ndarray) -> np.ndarray:
    """3x3 mean with the padding left out of the count (ONNX AveragePool, count_include_pad=0)."""
    h, w = z.shape[2:]
    padded = np.pad(z, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ones = np.pad(np.ones((h, w), np.float32), 1)
    total = np.zeros_like(z)
    count = np.zeros((h, w), np.float32)
    for dy in range(3):
        for dx in range(3):
            total += padded[:, :, dy : dy + h, dx : dx + w]
            count += ones[dy : dy + h, dx : dx + w]
    return total / count


@dataclass(frozen=True)
class Calibration:
    """``a = sigmoid((score - center) / scale)``: about 0.007 at the median good part, 0.5 at the
    far tail of good parts (``center``: the 99.5th percentile; ``scale``: a fifth of the distance
    from the median to it)."""

    center: float
    scale: float

    def apply(self, score: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(np.asarray(score, dtype=np.float64) - self.center) / self.scale))


def calibrate(good_scores: np.ndarray) -> Calibration:
    s = np.asarray(good_scores, dtype=np.float64)
    if len(s) < 2 or not np.all(np.isfinite(s)):
        raise TrainingError("cannot calibrate the anomaly score: too few finite good-part scores")
    median, tail = float(np.median(s)), float(np.quantile(s, 0.995))
    return Calibration(center=tail, scale=max((tail - median) / 5.0, 1e-3 * max(1.0, abs(tail))))


def unknown_limit(good_global: np.ndarray, defect_global: np.ndarray | None = None) -> float:
    """The global score (share of hot cells) above which a frame is ``unknown``: three times the
    largest share a good part reached, above every known defect seen (a defect is a part, not a
    foreign object), at least :data:`UNKNOWN_SHARE_FLOOR` and at most 0.9."""
    g = np.asarray(good_global, dtype=np.float64)
    limit = max(UNKNOWN_SHARE_FLOOR, 3.0 * float(np.max(g)))
    if defect_global is not None and len(defect_global):
        limit = max(limit, 1.5 * float(np.max(defect_global)))
    return min(0.9, limit)
