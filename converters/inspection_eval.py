"""Out-of-fold evaluation of an inspection model: every image scored by a model that never saw it.

With few images (a new line has hundreds of good parts and a handful of defects, or none) one small
held-out split decides nothing. So the images are cut into ``k`` stratified folds; for each fold the
good-part model and (for known defect kinds with enough examples) the classifier are fitted on the
other folds (augmented copies travel with their original), and the fold's ORIGINAL images are scored.
The operating point, the unknown limit, the score calibration and the gate's counts all come from
these out-of-fold scores; the shipped model is then fitted on everything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from converters.anomaly import MIN_GOOD, Calibration, GoodPartModel, Scores, calibrate, fit_good_part_model, score_numpy
from converters.errors import TrainingError
from converters.estimators import fit, make_estimator

log = logging.getLogger(__name__)


@dataclass
class ModelPlan:
    """What to fit. ``classes``: the classifier's labels (ok first among them is not required;
    index into it with ``ok``), empty for a good-part model alone."""

    grid: tuple[int, int]
    ok: int  # dataset class index of the good class
    classifier_classes: tuple[int, ...]  # dataset class indices the classifier learns ((): none)
    estimator: str = "mlp"
    params: dict[str, Any] | None = None
    components: int = 48
    seed: int = 0
    #: cells of the grid the good-part model inspects (None: all)
    mask: np.ndarray | None = None
    #: colour channels of the pixel grid (1 grey, 3 BGR)
    channels: int = 1


@dataclass
class Fitted:
    good: GoodPartModel
    classifier: Any | None  # fitted scikit-learn pipeline over classifier_classes (in that order)
    fit_notes: dict[str, Any]


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Sample weights that give every class the same total weight (class weights for any estimator)."""
    classes, counts = np.unique(y, return_counts=True)
    per = {c: len(y) / (len(classes) * n) for c, n in zip(classes, counts, strict=True)}
    return np.asarray([per[v] for v in y], dtype=np.float64)


def fit_models(plan: ModelPlan, x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> Fitted:
    """The good-part model on the good rows (its residual spread measured on held-back PARTS when
    ``groups`` says which rows are copies of one part) and the classifier, if planned."""
    good_rows = y == plan.ok
    good = fit_good_part_model(
        x[good_rows],
        plan.grid,
        components=plan.components,
        seed=plan.seed,
        mask=plan.mask,
        channels=plan.channels,
        groups=None if groups is None else groups[good_rows],
    )
    if not plan.classifier_classes:
        return Fitted(good, None, {})
    keep = np.isin(y, plan.classifier_classes)
    remap = {c: i for i, c in enumerate(plan.classifier_classes)}
    yc = np.asarray([remap[v] for v in y[keep]], dtype=np.int64)
    pipe = make_estimator(plan.estimator, seed=plan.seed, params=plan.params)
    notes = fit(pipe, x[keep], yc, sample_weight=balanced_weights(yc))
    return Fitted(good, pipe, notes)


def combine(probs_cls: np.ndarray | None, a: np.ndarray) -> np.ndarray:
    """The graph's probabilities in numpy: ``[p_1 (1 - a), ..., p_C (1 - a), a]`` (noisy OR), or
    ``[1 - a, a]`` without a classifier."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 1)
    if probs_cls is None:
        return np.hstack([1.0 - a, a])
    return np.hstack([np.asarray(probs_cls, dtype=np.float64) * (1.0 - a), a])


@dataclass
class OutOfFold:
    """Out-of-fold figures per ORIGINAL image (same order as the dataset's images)."""

    score: np.ndarray
    global_: np.ndarray
    maps: np.ndarray
    class_probs: np.ndarray | None  # (N, C) over plan.classifier_classes
    folds: int


def folds_for(targets: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A fold number per image, stratified by class (classes smaller than k spread as far as they go)."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(targets), dtype=np.int64)
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        rng.shuffle(idx)
        fold[idx] = np.arange(len(idx)) % k
    return fold


def out_of_fold(
    plan: ModelPlan,
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    original: np.ndarray,
    k: int,
    progress: Callable[[int], None] | None = None,
) -> OutOfFold:
    """Score every original image with models fitted without it (see the module doc)."""
    n_images = int(groups.max()) + 1
    img_target = np.zeros(n_images, dtype=np.int64)
    img_target[groups[original]] = y[original]
    n_good = int(np.sum(img_target == plan.ok))
    if n_good < 2 * MIN_GOOD:
        raise TrainingError(
            f"{n_good} good images: judging a model out of fold needs at least {2 * MIN_GOOD} (two folds of "
            f"{MIN_GOOD}); add good parts"
        )
    k = max(2, min(k, n_good // MIN_GOOD))
    fold = folds_for(img_target, k, plan.seed)
    h, w = plan.grid
    score = np.full(n_images, np.nan)
    glob = np.full(n_images, np.nan)
    maps = np.zeros((n_images, h, w), np.float32)
    probs = np.full((n_images, len(plan.classifier_classes)), np.nan) if plan.classifier_classes else None
    row_fold = fold[groups]
    for f in range(k):
        train = row_fold != f
        test = (row_fold == f) & original
        if not np.any(test):
            continue
        if np.sum(y[train] == plan.ok) < 8:
            raise TrainingError(f"fold {f + 1} of {k} has fewer than 8 good images to learn from; add good parts")
        fitted = fit_models(plan, x[train], y[train], groups[train])
        s: Scores = score_numpy(fitted.good, x[test])
        img = groups[test]
        score[img], glob[img], maps[img] = s.score, s.global_, s.maps
        if probs is not None and fitted.classifier is not None:
            probs[img] = _aligned_proba(fitted.classifier, x[test], len(plan.classifier_classes))
        if progress is not None:
            progress(1)
    if not np.all(np.isfinite(score)):
        raise TrainingError("some images were never scored out of fold (a class too small for the folds?)")
    return OutOfFold(score, glob, maps, probs, k)


def _aligned_proba(pipe: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """predict_proba with a column for every class, also those a fold did not contain."""
    p = pipe.predict_proba(x)
    out = np.zeros((len(x), n_classes))
    out[:, np.asarray(pipe.classes_, dtype=np.int64)] = p
    return out


def calibrated_probabilities(oof: OutOfFold, img_target: np.ndarray, plan: ModelPlan) -> tuple[np.ndarray, Calibration]:
    """The combined model's probabilities per image (as the graph computes them) and the score
    calibration fitted on good parts' out-of-fold scores."""
    cal = calibrate(oof.score[img_target == plan.ok])
    return combine(oof.class_probs, cal.apply(oof.score)), cal
