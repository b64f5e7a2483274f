"""The good-part model: learn what good parts look like, score how far a part is from them.

An industrial variation model with a learned subspace, in the spirit of PaDiM's per-location
statistics, sized for scikit-learn and ONNX:

* the registered, per-image normalised pooled pixels of good parts are fitted with a PCA
  (scikit-learn) of ``k`` components: what good parts share, lighting gradients and small residual
  misalignment included; on a colour grid (BGR, chosen by planted patches in
  :mod:`converters.registration_fit`) the three channels of every pixel together;
* the reconstruction residual of a part, divided by the residual's per-pixel spread on good PARTS
  the PCA did not see (held back whole, with their augmented copies: a copy in the fit teaches the
  PCA the part's own texture), is a signed z-map per channel;
* the anomaly map is, per cell, the largest over channels of: the 3x3 mean of ``|z|`` (thin and
  small defects), and at each scale of :data:`COARSE_SCALES` the ``|mean|`` of the SIGNED ``z`` over
  k x k cells, divided by its own spread on good parts. A stain or a faint dent moves many
  neighbouring pixels the same way: averaging the signed residual keeps that shift while the noise
  falls as 1/k (on the development plates and the flange this took the escape at 1% false reject
  from 30/300 to 4/300 on the flange, mostly stains). A surface texture of each part's own (mottled
  steel, fibre) is what the PCA cannot explain: in ``|z|`` its energy adds up, in the signed means it
  averages out, so the 3x3 signed map sees a small blemish on it that the 3x3 ``|z|`` map drowns
  (dev bracket 56 -> 52/150 escapes at 1% false reject, gasket 76 -> 66). Each signed map is
  weighted so that its tail on held-back good parts equals the fine map's, so the map speaks in the
  fine map's z units at every scale;
* the map's largest value is the anomaly score; the share of part cells whose fine map is above
  :data:`HOT_CELL_Z` is the global score that tells a foreign object from a local defect.

Everything is MatMul, Sub, Abs, pooling (and a Transpose and ReduceMax for colour), so the branch
runs in ONNX Runtime with no new dependency on the device, and its two MatMuls quantize to int8.
:func:`score_numpy` computes the same figures in numpy for cross-validation (the ONNX graph is
checked against it in the tests).
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
#: kernel sizes (cells) of the coarse maps of the signed residual (see the module doc)
COARSE_SCALES: tuple[int, ...] = (3, 5, 9)
#: a coarse map's weight makes this quantile of its per-image maximum on held-back good parts equal
#: the fine map's
SCALE_QUANTILE = 0.95
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
    #: kernel sizes of the coarse maps and their per-cell weights (len(coarse), P); () for none
    coarse: tuple[int, ...] = ()
    coarse_weight: np.ndarray | None = None
    #: colour channels of the grid (1: grey; 3: BGR, the features interleaved pixel by pixel); the
    #: maps are per channel and the anomaly map takes the largest over channels
    channels: int = 1

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
    coarse: tuple[int, ...] = COARSE_SCALES,
    channels: int = 1,
    groups: np.ndarray | None = None,
) -> GoodPartModel:
    """Fit on good parts' features ``(N, >= h*w*channels)``; the first h*w*channels columns are the
    pixel grid (channels interleaved pixel by pixel, as the preprocessing lays out a colour image);
    ``mask`` is per cell (h*w).

    A share of the PARTS (``spread_share``, at least 4 rows) is held back from the PCA to measure the
    residual spread on parts the PCA did not see; then the PCA is NOT refitted, so the spread matches
    the model that ships. ``groups`` (per row, the part it shows) keeps a part's augmented copies on
    the same side: a copy in the fit would teach the PCA the held-back part's own texture, and the
    spread measured on it would be too small for parts never seen (rows are parts when None)."""
    h, w = grid
    c = channels
    p = h * w * c
    if x_good.ndim != 2 or x_good.shape[1] < p:
        raise TrainingError(f"good-part model needs {p} pixel features, got shape {x_good.shape}")
    n = len(x_good)
    if n < MIN_GOOD:
        raise TrainingError(f"a good-part model needs at least {MIN_GOOD} good images, got {n}")
    xp = np.asarray(x_good[:, :p], dtype=np.float64)
    rng = np.random.default_rng(seed)
    if groups is None:
        order = rng.permutation(n)
        n_spread = max(4, round(n * spread_share))
        spread_idx, fit_idx = order[:n_spread], order[n_spread:]
    else:
        spread_idx, fit_idx = _split_by_part(np.asarray(groups), spread_share, rng)
    k = max(1, min(components, len(fit_idx) - 1, p))
    pca = PCA(n_components=k, random_state=seed, svd_solver="full").fit(xp[fit_idx])
    mean = pca.mean_
    comps = pca.components_
    held = xp[spread_idx] - mean
    resid = held - (held @ comps.T) @ comps
    rsd = np.sqrt(np.mean(resid * resid, axis=0)).reshape(h, w, c).astype(np.float32)
    rsd_img = cv2.blur(rsd, (3, 3)).reshape(h, w, c).astype(np.float64)  # per channel
    cells = np.ones(h * w, np.float64) if mask is None else np.asarray(mask, np.float64).reshape(h * w)
    weights = np.repeat(cells, c)  # HWC order, like the features
    floor = RSD_FLOOR * np.median(rsd_img.reshape(h * w, c)[cells > 0], axis=0) + 1e-6  # per channel
    rsd_img = np.maximum(rsd_img, floor).reshape(-1)
    inv_rsd = (weights / rsd_img).astype(np.float32)  # zero off the part: the belt is not inspected
    scales = tuple(k for k in coarse if 3 <= k <= min(h, w))
    z_held = to_planes(resid.astype(np.float32) * inv_rsd, (h, w), c)
    coarse_weight = _coarse_weights(z_held, scales, cells > 0) if scales else None
    return GoodPartModel(
        mean=mean.astype(np.float32),
        components=comps.astype(np.float32),
        inv_rsd=inv_rsd,
        grid=(h, w),
        fit_rows=len(fit_idx),
        spread_rows=len(spread_idx),
        hot_scale=float(h * w / max(1, int(np.sum(cells > 0)))),
        coarse=scales if coarse_weight is not None else (),
        coarse_weight=coarse_weight,
        channels=c,
    )


def _split_by_part(groups: np.ndarray, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (held back, fitted): ``share`` of the parts (at least 4 rows) held back whole."""
    parts = rng.permutation(np.unique(groups))
    n_held = max(1, round(len(parts) * share))
    while np.sum(np.isin(groups, parts[:n_held])) < 4 and n_held < len(parts) - 1:
        n_held += 1
    held = np.isin(groups, parts[:n_held])
    return np.flatnonzero(held), np.flatnonzero(~held)


def to_planes(z: np.ndarray, grid: tuple[int, int], channels: int) -> np.ndarray:
    """(N, h*w*c) in the features' pixel-interleaved order -> (N, c, h, w) planes."""
    h, w = grid
    if channels == 1:
        return z.reshape(-1, 1, h, w)
    return np.ascontiguousarray(z.reshape(-1, h, w, channels).transpose(0, 3, 1, 2))


def _coarse_weights(z_img: np.ndarray, scales: tuple[int, ...], inside: np.ndarray) -> np.ndarray:
    """Per-cell weights of each coarse map, from the signed z planes of held-back good parts
    ``(n, c, h, w)``: 1 / the cell's spread at that scale in that channel (floored like the residual
    spread), times the ratio of the fine map's tail to the coarse map's, zero off the part (``inside``
    per cell). Shape (len(scales), c * h * w), channel-major."""
    n, c = z_img.shape[:2]
    fine_tail = float(np.quantile(_avg_pool(np.abs(z_img), 3).reshape(n, -1).max(axis=1), SCALE_QUANTILE))
    cell_in = np.tile(inside, c)
    out = []
    for k in scales:
        pooled = np.abs(_avg_pool(z_img, k)).reshape(n, c, -1)
        sd = np.sqrt(np.mean(pooled * pooled, axis=0))  # (c, h*w)
        sd = np.maximum(sd, RSD_FLOOR * np.median(sd[:, inside], axis=1, keepdims=True) + 1e-6).reshape(-1)
        raw = np.where(cell_in, 1.0 / sd, 0.0)
        tail = float(np.quantile((pooled.reshape(n, -1) * raw).max(axis=1), SCALE_QUANTILE))
        out.append(raw * (fine_tail / max(tail, 1e-6)))
    return np.stack(out).astype(np.float32)


@dataclass(frozen=True)
class Scores:
    score: np.ndarray  # (N,)
    global_: np.ndarray  # (N,)
    maps: np.ndarray  # (N, h, w)


def score_numpy(model: GoodPartModel, x: np.ndarray) -> Scores:
    """The figures the ONNX branch computes, in numpy (float32 like ONNX Runtime)."""
    h, w = model.grid
    c = model.channels
    d = np.asarray(x[:, : model.pixels], dtype=np.float32) - model.mean
    rec = (d @ model.components.T) @ model.components
    z_img = to_planes((d - rec) * model.inv_rsd, (h, w), c)
    fine = _avg_pool(np.abs(z_img), 3).max(axis=1)
    maps = fine
    if model.coarse_weight is not None:
        for k, weight in zip(model.coarse, model.coarse_weight, strict=True):
            coarse = np.abs(_avg_pool(z_img, k)) * weight.reshape(c, h, w)
            maps = np.maximum(maps, coarse.max(axis=1))
    share = np.mean(fine.reshape(len(x), -1) > np.float32(HOT_CELL_Z), axis=1) * np.float32(model.hot_scale)
    return Scores(maps.reshape(len(x), -1).max(axis=1), share, maps)


def _avg_pool(z: np.ndarray, k: int) -> np.ndarray:
    """k x k mean (k odd) with the padding left out of the count (ONNX AveragePool,
    count_include_pad=0)."""
    h, w = z.shape[2:]
    r = k // 2
    padded = np.pad(z, ((0, 0), (0, 0), (r, r), (r, r)))
    ones = np.pad(np.ones((h, w), np.float32), r)
    # summed-area tables: O(1) per cell whatever k
    sat = np.zeros((*padded.shape[:2], padded.shape[2] + 1, padded.shape[3] + 1), np.float64)
    sat[:, :, 1:, 1:] = padded.cumsum(axis=2).cumsum(axis=3)
    total = sat[:, :, k:, k:] - sat[:, :, :-k, k:] - sat[:, :, k:, :-k] + sat[:, :, :-k, :-k]
    osat = np.zeros((ones.shape[0] + 1, ones.shape[1] + 1), np.float64)
    osat[1:, 1:] = ones.cumsum(axis=0).cumsum(axis=1)
    count = osat[k:, k:] - osat[:-k, k:] - osat[k:, :-k] + osat[:-k, :-k]
    return (total / count).astype(np.float32)


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
