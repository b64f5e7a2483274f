"""The steps of the inspection build (:func:`converters.inspection_build.build_inspection`), one
responsibility each: what the dataset holds and which kind of model it allows (:func:`plan_data`),
the registered features and what the good-part model is fitted on (:func:`fit_features`), the
out-of-fold operating point (:func:`operating_point`), and the ONNX graph and its quantization
(:func:`export_model`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from converters.anomaly import MIN_GOOD, Calibration, part_mask, score_numpy, unknown_limit
from converters.anomaly_onnx import anomaly_only_onnx, join_with_classifier
from converters.blemish import choose_components
from converters.dataset import ImageFolder, read_image_and_digest, scan_image_folder, scan_images
from converters.errors import DatasetError, TrainingError
from converters.features import FeatureSet, extract
from converters.gate import GateConfig, check_conversion
from converters.inspection_eval import (
    Fitted,
    ModelPlan,
    OutOfFold,
    calibrated_probabilities,
    combine,
    fit_models,
    out_of_fold,
)
from converters.line_gate import LineGate, LineTargets, judge
from converters.onnx_export import run_probabilities, sklearn_to_onnx
from converters.operating_point import Counts, choose_threshold, count, cross_fitted
from converters.registration_fit import RegisterChoice, fit_registration
from converters.selection import Selection, select_model
from converters.synth.lighting import Augment
from edge_agent.errors import PreprocessError
from edge_agent.preprocessing import Preprocessor
from edge_agent.verdict import ANOMALY
from edgeline.core.protocol.manifest import AnomalySpec, PreprocessSpec

log = logging.getLogger(__name__)


@dataclass
class DataPlan:
    """The dataset and the kind of model it allows."""

    folder: ImageFolder
    classes: tuple[str, ...]
    ok: int
    counts: dict[str, int]
    chosen_kind: str
    cls_classes: tuple[int, ...]
    warnings: list[str]


def plan_data(
    dataset_dir: Path | str | Sequence[Path | str],
    kind: str,
    ok_label: str,
    min_class_images: int,
    exclude: Sequence[Path],
) -> DataPlan:
    """Scan the dataset, check the good class is there, and choose the kind (``auto``: hybrid when
    some defect kind has at least ``min_class_images`` images)."""
    folder = scan_image_folder(dataset_dir if not isinstance(dataset_dir, str) else Path(dataset_dir), min_classes=1)
    if exclude:  # images kept apart for a later judgement (e.g. retraining's drift gate)
        folder = _without(folder, {Path(x) for x in exclude})
    classes = folder.classes
    if ok_label not in classes:
        raise DatasetError(f"no class {ok_label!r} among {', '.join(classes)}; name the good-part class (ok_label)")
    ok = classes.index(ok_label)
    counts = folder.counts
    learnable = tuple(i for i, c in enumerate(classes) if i != ok and counts[c] >= min_class_images)
    rare = [c for i, c in enumerate(classes) if i != ok and i not in learnable]
    if kind == "hybrid" and not learnable:
        raise TrainingError(
            f"a classifier needs a defect kind with at least {min_class_images} images; "
            f"counts: {', '.join(f'{c} {n}' for c, n in counts.items())} (use --model anomaly)"
        )
    chosen_kind = "hybrid" if (kind == "hybrid" or (kind == "auto" and learnable)) else "anomaly"
    cls_classes = tuple(sorted((ok, *learnable))) if chosen_kind == "hybrid" else ()
    warnings: list[str] = []
    if rare:
        warnings.append(
            f"defect kinds with fewer than {min_class_images} images are not learned by a classifier, only "
            f"caught by the good-part model and counted in the escape rate: {', '.join(rare)}"
        )
    return DataPlan(folder, tuple(classes), ok, dict(counts), chosen_kind, cls_classes, warnings)


@dataclass
class FeaturePlan:
    """The preprocessing chosen, the features of every image and what the models are fitted with."""

    spec: PreprocessSpec
    feats: FeatureSet
    plan: ModelPlan
    augment: Augment | None
    reg_notes: dict[str, Any]


def fit_features(
    data: DataPlan,
    spec: PreprocessSpec,
    register: RegisterChoice | str,
    *,
    augment: Augment | None,
    augment_copies: int,
    components: int | None,
    estimator: str,
    params: dict[str, Any] | None,
    seed: int,
    rng: np.random.Generator,
    hook: Any,
) -> FeaturePlan:
    """Registration fitted on good parts, the good-part model's size chosen by planted blemishes
    (unless given), every image's features (with ``augment_copies`` augmented copies) and the plan."""
    folder, ok = data.folder, data.ok
    if "hog" in spec.features:
        # the pixel grid alone, for the classifier of a hybrid too: gradient histograms cost more than
        # the whole good-part model on the device (hybrid 0.71 -> 0.33 ms a frame), with the same
        # escapes on the plate and flange (hex nut: 28 -> 30 of 300 at 1% false reject)
        spec = PreprocessSpec.model_validate({**spec.model_dump(), "features": "pixels"})
    hook.stage("registration (good parts)")
    good_paths = [p for p, t in zip(folder.paths, folder.targets, strict=True) if t == ok]
    good_frames = [read_image_and_digest(p)[0] for p in good_paths[:300]]
    spec, reg_notes = fit_registration(good_frames, spec, register)  # type: ignore[arg-type]
    if components is None:
        hook.stage("good-part model size (planted blemishes)")
        components, found = _components(spec, good_frames, augment, augment_copies, seed)
        reg_notes = {**reg_notes, "components_found": found}
    del good_frames
    hook.stage("features", len(folder))
    feats = extract(
        list(folder.paths),
        list(folder.targets),
        spec,
        augment=augment,
        augment_copies=augment_copies,
        rng=rng,
        keep_samples=1,
        progress=hook.advance,
    )
    grid = (spec.pixel_pool[1], spec.pixel_pool[0])
    good_masks = [m for m, t in zip(feats.masks, folder.targets, strict=False) if t == ok]
    plan = ModelPlan(
        grid=grid,
        ok=ok,
        classifier_classes=data.cls_classes,
        estimator=estimator,
        params=params,
        components=components,
        seed=seed,
        mask=part_mask(good_masks, grid),
        channels=1 if spec.color == "gray" else 3,
    )
    return FeaturePlan(spec, feats, plan, augment, reg_notes)


@dataclass
class Operating:
    """Out-of-fold scores and what is decided from them."""

    oof: OutOfFold
    oof_probs: np.ndarray
    cal: Calibration
    d: np.ndarray  # defect score per original image
    is_good: np.ndarray
    img_target: np.ndarray
    limit: float
    unknown: np.ndarray
    threshold: float
    review: float
    honest: Counts  # cross-fitted: each share counted at the threshold chosen on the others
    line: LineGate
    at_threshold: Counts


def operating_point(
    fp: FeaturePlan, data: DataPlan, targets: LineTargets, folds: int, seed: int, hook: Any
) -> Operating:
    """Every image scored out of fold; calibration, unknown limit, threshold, review band and the
    line gate's counts from those scores."""
    feats, plan = fp.feats, fp.plan
    hook.stage(f"out-of-fold evaluation ({folds} folds)", folds)
    oof = out_of_fold(plan, feats.x, feats.y, feats.groups, feats.original, folds, progress=hook.advance)
    img_target = np.asarray(data.folder.targets, dtype=np.int64)
    oof_probs, cal = calibrated_probabilities(oof, img_target, plan)
    ok = data.ok
    d = 1.0 - oof_probs[:, plan.classifier_classes.index(ok) if plan.classifier_classes else 0]
    is_good = img_target == ok
    limit = unknown_limit(oof.global_[is_good], oof.global_[~is_good])
    unknown = (oof.global_ > limit) | np.asarray(feats.foreign, dtype=bool)
    threshold = choose_threshold(d[is_good], d[~is_good], unknown[is_good], targets.operate_for, targets.design_value)
    review_fr = min(0.05, 3 * targets.max_false_reject)  # the review band: at most 5% of good parts
    review = min(threshold, choose_threshold(d[is_good], d[~is_good], unknown[is_good], "max_false_reject", review_fr))
    honest = cross_fitted(
        d[is_good],
        d[~is_good],
        unknown[is_good],
        unknown[~is_good],
        targets.operate_for,
        targets.design_value,
        seed=seed,
    )
    line = judge(honest, targets)
    at_threshold = count(d[is_good], d[~is_good], unknown[is_good], unknown[~is_good], threshold, review)
    return Operating(
        oof, oof_probs, cal, d, is_good, img_target, limit, unknown, threshold, review, honest, line, at_threshold
    )


@dataclass
class Exported:
    """The final models, the float graph and the shipped (quantized) one."""

    final: Fitted
    anomaly: AnomalySpec
    labels: tuple[str, ...]
    chosen: Selection
    agree: float
    score_diff: float


def export_model(
    fp: FeaturePlan,
    data: DataPlan,
    op: Operating,
    *,
    ok_label: str,
    quantization: str,
    gate: GateConfig,
    calib_dir: Path | str | None,
    calib_rows: int,
    rng: np.random.Generator,
    hook: Any,
) -> Exported:
    """Fit the models on every image, build the ONNX graph (checked against numpy), quantize it
    (the first mode whose verdicts agree with float at the threshold)."""
    feats, plan, spec = fp.feats, fp.plan, fp.spec
    hook.stage(f"training ({data.chosen_kind}) on every image")
    final = fit_models(plan, feats.x, feats.y, feats.groups)
    cal = op.cal
    anomaly = AnomalySpec(map_shape=plan.grid, center=cal.center, scale=cal.scale, unknown_global=op.limit)
    n_features = feats.x.shape[1]
    if final.classifier is not None:
        cls_model = sklearn_to_onnx(final.classifier, n_features)
        float_model = join_with_classifier(cls_model, final.good, cal, anomaly)
        labels = (*tuple(data.classes[i] for i in data.cls_classes), ANOMALY)
    else:
        float_model = anomaly_only_onnx(final.good, cal, anomaly, n_features)
        labels = (ok_label, ANOMALY)
    x_orig = feats.x[feats.original]
    p_float = run_probabilities(float_model, x_orig)
    p_numpy = _numpy_probabilities(final, cal, x_orig)
    check_conversion(float(np.max(np.abs(p_float - p_numpy))), 1.0, gate, what="ONNX graph of the inspection model")

    hook.stage(f"quantization ({quantization}) and gates")
    if calib_dir is not None:
        calib_paths = scan_images(calib_dir)[:calib_rows]
        calib = extract(calib_paths, [0] * len(calib_paths), spec).x
    else:
        calib = feats.x[rng.permutation(len(feats.x))[:calib_rows]]
    ok_pos = labels.index(ok_label)
    threshold = op.threshold
    plan_q = [quantization] + (["dynamic", "float"] if quantization == "auto" else [])
    for mode in plan_q:
        # per-tensor uint8 weights and activations: ONNX Runtime fuses the good-part model's MatMuls into
        # integer kernels then; per-channel weights (0.48 vs 0.08 ms) or int8 activations (0.125 vs
        # 0.072 ms) left the projection's weights dequantized at every frame
        chosen = select_model(
            float_model,
            mode,
            calibration=calib,
            x_eval=x_orig,
            y_eval=None,
            p_float=p_float,
            gate=gate,
            per_channel=False,
            unsigned=True,  # uint8 activations: both MatMuls fuse into integer kernels (quantize.py)
        )
        agree = float(np.mean((1 - p_float[:, ok_pos] >= threshold) == (1 - chosen.probs[:, ok_pos] >= threshold)))
        if agree >= gate.min_label_agreement or mode == plan_q[-1]:
            break
        log.warning(
            "%s verdicts agree with float on %.2f%% of parts; trying the next quantization",
            chosen.report.mode,
            100 * agree,
        )
    score_float = model_scores(float_model, x_orig)
    score_ship = model_scores(chosen.model, x_orig)
    score_diff = float(np.max(np.abs(score_float - score_ship)))
    return Exported(final, anomaly, labels, chosen, agree, score_diff)


def model_scores(model: bytes, x: np.ndarray) -> np.ndarray:
    return run_probabilities(model, x, output="anomaly_score").reshape(-1)


def _components(
    spec: PreprocessSpec, frames: list[np.ndarray], augment: Augment | None, copies: int, seed: int
) -> tuple[int, dict[str, float]]:
    """The good-part model's number of components, chosen by planted blemishes on good parts
    (:func:`converters.blemish.choose_components`), with the augmented copies the training sees."""
    pre = Preprocessor(spec)
    rng = np.random.default_rng(seed + 17)
    images, extra = [], []
    for f in frames[:240]:
        try:
            images.append(pre.prepare(f))
            if augment is not None and copies:
                extra.append(pre.prepare(augment(f, rng)))
        except PreprocessError:
            continue
    if len(images) < 3 * MIN_GOOD:
        return 48, {}
    return choose_components(pre, images, extra)


def _without(folder: ImageFolder, drop: set[Path]) -> ImageFolder:
    keep = [i for i, path in enumerate(folder.paths) if path not in drop]
    if not keep:
        raise DatasetError("every image of the dataset was excluded")
    return replace(folder, paths=tuple(folder.paths[i] for i in keep), targets=tuple(folder.targets[i] for i in keep))


def _numpy_probabilities(final: Fitted, cal: Calibration, x: np.ndarray) -> np.ndarray:
    a = cal.apply(score_numpy(final.good, x).score)
    probs = final.classifier.predict_proba(x) if final.classifier is not None else None
    return combine(probs, a)
