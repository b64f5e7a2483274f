"""Training features come from :class:`edge_agent.preprocessing.Preprocessor` and nothing else: the
very code the device runs on camera frames. This module only streams images through it.

The default spec looks at the inspection position of the synthetic line (a 192x168 px window in the
middle of a 320x240 frame, as fractions so it survives a resolution change), resized to 64x56 grey:
a 32x28 pooled image (dents, missing holes) plus HOG over 8x8 cells (scratches, edges).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from converters.dataset import read_image_and_digest
from converters.errors import DatasetError
from converters.synth.lighting import Augment
from edge_agent.errors import PreprocessError
from edge_agent.preprocessing import STAT_RANGES, Preprocessor, input_stats
from edge_agent.registration import is_foreign, silhouette_mask
from edgeline.core.protocol.manifest import PreprocessSpec

log = logging.getLogger(__name__)

DEFAULT_SPEC = PreprocessSpec(
    color="gray",
    roi=(0.2, 0.15, 0.6, 0.7),
    size=(64, 56),
    pixel_pool=(32, 28),
    features="pixels+hog",
    hog_cell=8,
    hog_bins=9,
)

Progress = Callable[[int], None]


@dataclass
class FeatureSet:
    """Features of a list of images (plus augmented copies), with what the bundle needs besides."""

    x: np.ndarray  # (N, F) float32
    y: np.ndarray  # (N,) int class index
    #: input statistics of the original (not augmented) images, by statistic name
    stats: dict[str, list[float]] = field(default_factory=dict)
    #: file sha256 by path (for the dataset hash)
    digests: dict[Path, str] = field(default_factory=dict)
    #: a few original frames per class, kept for self-test vectors: class index -> frames
    samples: dict[int, list[np.ndarray]] = field(default_factory=dict)
    augmented: int = 0
    #: per row, the index of the image it came from (augmented copies share their original's)
    groups: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    #: per row, True for an original image (False for an augmented copy)
    original: np.ndarray = field(default_factory=lambda: np.empty(0, bool))
    #: per ORIGINAL image: registration found no part, or one unlike good parts in size
    foreign: list[bool] = field(default_factory=list)
    #: per ORIGINAL image, with registration: the part's silhouette in the prepared image, pooled to
    #: the pixel grid (share of each cell covered by the part)
    masks: list[np.ndarray] = field(default_factory=list)


def features_of(pre: Preprocessor, frame: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(prepared image, feature vector) of one frame; preprocessing errors name the image."""
    try:
        prepared = pre.prepare(frame)
        return prepared, pre.features_of(prepared)
    except PreprocessError as exc:
        raise DatasetError(f"{where}: cannot preprocess: {exc}") from exc


def placed_features_of(pre: Preprocessor, frame: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """(prepared image, feature vector, foreign) of one frame: foreign when registration finds no
    part like the good ones."""
    try:
        prepared, placement = pre.place(frame)
        foreign = is_foreign(placement.silhouette, pre.spec.registration)
        return prepared, pre.features_of(prepared), foreign
    except PreprocessError as exc:
        raise DatasetError(f"{where}: cannot preprocess: {exc}") from exc


def extract(
    paths: Sequence[Path],
    targets: Sequence[int],
    spec: PreprocessSpec,
    *,
    augment: Augment | None = None,
    augment_copies: int = 0,
    rng: np.random.Generator | None = None,
    keep_samples: int = 0,
    progress: Progress | None = None,
) -> FeatureSet:
    """Read every image once, preprocess it, and (when ``augment`` is given) add ``augment_copies``
    augmented versions of it. ``keep_samples`` original frames per class are kept in memory."""
    if len(paths) != len(targets):
        raise DatasetError("paths and targets differ in length")
    if augment is not None and augment_copies < 1:
        augment_copies = 1
    rng = rng or np.random.default_rng(0)
    pre = Preprocessor(spec)
    rows: list[np.ndarray] = []
    ys: list[int] = []
    groups: list[int] = []
    original: list[bool] = []
    out = FeatureSet(np.empty((0, 0), np.float32), np.empty(0, np.int64), {name: [] for name in STAT_RANGES})
    for index, (path, target) in enumerate(zip(paths, targets, strict=True)):
        frame, digest = read_image_and_digest(path)
        out.digests[path] = digest
        prepared, vec, foreign = placed_features_of(pre, frame, str(path))
        out.foreign.append(foreign)
        if spec.registration is not None:
            sil = silhouette_mask(prepared if prepared.ndim == 2 else prepared[:, :, 0], spec.registration.min_contrast)
            out.masks.append(cv2.resize(sil.astype(np.float32), spec.pixel_pool, interpolation=cv2.INTER_AREA))
        rows.append(vec)
        ys.append(int(target))
        groups.append(index)
        original.append(True)
        for name, value in input_stats(prepared).items():
            out.stats[name].append(value)
        kept = out.samples.setdefault(int(target), [])
        if len(kept) < keep_samples:
            kept.append(frame)
        if augment is not None:
            for _ in range(augment_copies):
                try:
                    aug = augment(frame, rng)
                except Exception as exc:  # a user-supplied callable: name it and the image
                    raise DatasetError(f"augmentation failed on {path}: {exc}") from exc
                rows.append(features_of(pre, aug, f"{path} (augmented)")[1])
                ys.append(int(target))
                groups.append(index)
                original.append(False)
                out.augmented += 1
        if progress is not None:
            progress(1)
    if not rows:
        raise DatasetError("no images to extract features from")
    out.x = np.stack(rows).astype(np.float32, copy=False)
    out.y = np.asarray(ys, dtype=np.int64)
    out.groups = np.asarray(groups, dtype=np.int64)
    out.original = np.asarray(original, dtype=bool)
    if not np.all(np.isfinite(out.x)):
        raise DatasetError("preprocessing produced NaN or infinite features")
    return out
