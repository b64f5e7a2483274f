"""The inspection-grade build: good parts (and whatever defects there are) -> registered features ->
good-part model (+ classifier for defect kinds with enough examples) -> operating point -> line gate
-> ONNX -> int8 -> signed bundle.

    from converters.inspection_build import build_inspection
    result = build_inspection("data/line", "bundle-v1", key_dir="keys")

Kinds: ``anomaly`` (the good-part model alone: good parts only, or defect kinds too small to learn),
``hybrid`` (good-part model and a classifier for the defect kinds with at least ``min_class_images``
images, combined as a noisy OR), ``auto`` (hybrid when some defect kind is learnable, else anomaly).
Everything is judged out of fold (:mod:`converters.inspection_eval`) and gated in escape and
false-reject terms (:mod:`converters.line_gate`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from converters import inspection_report
from converters.anomaly import MIN_GOOD, Calibration, part_mask, unknown_limit
from converters.anomaly_onnx import anomaly_only_onnx, join_with_classifier
from converters.blemish import choose_components
from converters.dataset import ImageFolder, dataset_sha256, read_image_and_digest, scan_image_folder, scan_images
from converters.errors import DatasetError, GateFailed, TrainingError
from converters.estimators import make_estimator
from converters.features import DEFAULT_SPEC, extract
from converters.gate import GateConfig, GateResult, check_conversion
from converters.inspection_eval import ModelPlan, calibrated_probabilities, combine, fit_models, out_of_fold
from converters.line_gate import LineGate, LineTargets, judge
from converters.lineage import code_lineage
from converters.onnx_export import run_probabilities, sklearn_to_onnx
from converters.operating_point import auroc, choose_threshold, count, cross_fitted, curve
from converters.packaging import finite_metrics, load_key, prepare_out_dir, write_signed_bundle
from converters.photometric import photometric_augment
from converters.quantize import QuantReport
from converters.reference import build_reference, histogram, selftest_vectors
from converters.registration_fit import RegisterChoice, fit_registration
from converters.selection import QuantChoice, select_model
from converters.synth.lighting import Augment
from edge_agent.errors import PreprocessError
from edge_agent.preprocessing import Preprocessor
from edge_agent.telemetry.windows import ANOMALY_EDGES
from edge_agent.verdict import ANOMALY
from edgeline.core.protocol.manifest import AnomalySpec, Manifest, OperatingPoint, PreprocessSpec, Target, Thresholds

log = logging.getLogger(__name__)

Kind = Literal["auto", "anomaly", "hybrid"]
KINDS: tuple[str, ...] = ("auto", "anomaly", "hybrid")

#: the inspection spec: the default features on the registered part, standardised per image
#: (the pixel grid is the registered image itself: thin defects such as cracks vanish when pooled)
INSPECTION_SPEC = PreprocessSpec.model_validate(
    {**DEFAULT_SPEC.model_dump(), "roi": None, "normalize": "per_image", "pixel_pool": DEFAULT_SPEC.size}
)


class _Hook:
    def stage(self, name: str, total: int | None = None) -> None: ...
    def advance(self, n: int = 1) -> None: ...


@dataclass
class InspectionResult:
    bundle_dir: Path
    manifest: Manifest
    kind: str
    gate: LineGate
    fidelity: GateResult
    quantization: QuantReport
    metrics: dict[str, float]
    report_json: Path
    report_png: Path
    report: dict[str, Any] = field(default_factory=dict)


def build_inspection(
    dataset_dir: Path | str | Sequence[Path | str],
    out_dir: Path | str,
    *,
    kind: Kind | str = "auto",
    targets: LineTargets | None = None,
    register: RegisterChoice | str = "auto",
    estimator: str = "mlp",
    params: dict[str, Any] | None = None,
    name: str = "inspection",
    version: int = 1,
    key_dir: Path | str = Path("keys"),
    quantization: QuantChoice | str = "auto",
    gate: GateConfig | None = None,
    augment: Augment | None = None,
    augment_copies: int = 1,
    photometric: bool = True,
    spec: PreprocessSpec = INSPECTION_SPEC,
    components: int | None = None,
    folds: int = 5,
    min_class_images: int = 20,
    seed: int = 0,
    calib_rows: int = 500,
    calib_dir: Path | str | None = None,
    thresholds: Thresholds | None = None,
    target: Target | None = None,
    valid_days: float = 365.0,
    lineage: dict[str, Any] | None = None,
    report_dir: Path | str | None = None,
    force: bool = False,
    force_unverified: bool = False,
    exclude: Sequence[Path] = (),
    progress: Any = None,
) -> InspectionResult:
    """Build, judge and sign an inspection bundle (see the module doc). Training images get
    ``augment_copies`` augmented copies: ``augment`` when given, else (``photometric``) random light
    (:mod:`converters.photometric`). Raises a
    :class:`~converters.errors.ConverterError` subclass; :class:`GateFailed` names every missed target."""
    t_start = time.perf_counter()
    hook = progress or _Hook()
    targets = targets or LineTargets()
    gate = gate or GateConfig()
    thresholds = thresholds or Thresholds()
    if kind not in KINDS:
        raise TrainingError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
    out = prepare_out_dir(Path(out_dir), force=force)
    rep_dir = Path(report_dir) if report_dir is not None else out / "report"
    key = load_key(Path(key_dir))
    make_estimator(estimator, seed=seed, params=params)
    folder = scan_image_folder(dataset_dir if not isinstance(dataset_dir, str) else Path(dataset_dir), min_classes=1)
    if exclude:  # images kept apart for a later judgement (e.g. retraining's drift gate)
        folder = _without(folder, {Path(x) for x in exclude})
    classes = folder.classes
    ok_label = thresholds.ok_label
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

    if "hog" in spec.features:
        # the pixel grid alone, for the classifier of a hybrid too: gradient histograms cost more than
        # the whole good-part model on the device (hybrid 0.71 -> 0.33 ms a frame), with the same
        # escapes on the plate and flange (hex nut: 28 -> 30 of 300 at 1% false reject)
        spec = PreprocessSpec.model_validate({**spec.model_dump(), "features": "pixels"})
    hook.stage("registration (good parts)")
    good_paths = [p for p, t in zip(folder.paths, folder.targets, strict=True) if t == ok]
    good_frames = [read_image_and_digest(p)[0] for p in good_paths[:300]]
    spec, reg_notes = fit_registration(good_frames, spec, register)  # type: ignore[arg-type]
    if augment is None and photometric:
        augment = photometric_augment()
    if components is None:
        hook.stage("good-part model size (planted blemishes)")
        components, found = _components(spec, good_frames, augment, augment_copies, seed)
        reg_notes = {**reg_notes, "components_found": found}
    del good_frames
    hook.stage("features", len(folder))
    rng = np.random.default_rng(seed)
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
    pre = Preprocessor(spec)
    grid = (spec.pixel_pool[1], spec.pixel_pool[0])
    good_masks = [m for m, t in zip(feats.masks, folder.targets, strict=False) if t == ok]
    mask = part_mask(good_masks, (spec.pixel_pool[1], spec.pixel_pool[0]))
    plan = ModelPlan(
        grid=grid,
        ok=ok,
        classifier_classes=cls_classes,
        estimator=estimator,
        params=params,
        components=components,
        seed=seed,
        mask=mask,
    )

    hook.stage(f"out-of-fold evaluation ({folds} folds)", folds)
    oof = out_of_fold(plan, feats.x, feats.y, feats.groups, feats.original, folds, progress=hook.advance)
    img_target = np.asarray(folder.targets, dtype=np.int64)
    oof_probs, cal = calibrated_probabilities(oof, img_target, plan)
    center, scale = cal.center, cal.scale
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

    hook.stage(f"training ({chosen_kind}) on every image")
    final = fit_models(plan, feats.x, feats.y)
    anomaly = AnomalySpec(map_shape=grid, center=center, scale=scale, unknown_global=limit)
    n_features = feats.x.shape[1]
    if final.classifier is not None:
        cls_model = sklearn_to_onnx(final.classifier, n_features)
        float_model = join_with_classifier(cls_model, final.good, cal, anomaly)
        labels = (*tuple(classes[i] for i in cls_classes), ANOMALY)
    else:
        float_model = anomaly_only_onnx(final.good, cal, anomaly, n_features)
        labels = (ok_label, ANOMALY)
    x_orig = feats.x[feats.original]
    p_float = run_probabilities(float_model, x_orig)
    p_numpy = _numpy_probabilities(final, cal, x_orig, plan)
    check_conversion(float(np.max(np.abs(p_float - p_numpy))), 1.0, gate, what="ONNX graph of the inspection model")

    hook.stage(f"quantization ({quantization}) and gates")
    if calib_dir is not None:
        calib_paths = scan_images(calib_dir)[:calib_rows]
        calib = extract(calib_paths, [0] * len(calib_paths), spec).x
    else:
        calib = feats.x[rng.permutation(len(feats.x))[:calib_rows]]
    ok_pos = labels.index(ok_label)
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
    score_float = _scores(float_model, x_orig)
    score_ship = _scores(chosen.model, x_orig)
    score_diff = float(np.max(np.abs(score_float - score_ship)))

    failures = list(line.failures)
    if agree < gate.min_label_agreement:
        failures.append(
            f"{chosen.report.mode} verdicts agree with float on {100 * agree:.2f}% of parts at the operating "
            f"point, below {100 * gate.min_label_agreement:.2f}%"
        )
    if failures and not force_unverified:
        doc = inspection_report.failed_doc(name, version, chosen_kind, line, failures, warnings)
        path = inspection_report.write_json(rep_dir / "report.json", doc)
        raise GateFailed(
            "the line gate refused the model: " + "; ".join(failures) + f". No bundle written; figures in {path}"
        )
    if failures:
        log.warning("signing an UNVERIFIED bundle (--force-unverified): %s", "; ".join(failures))

    hook.stage("bundle")
    frames = [f for c in sorted(feats.samples) for f in feats.samples[c]]
    frame_labels = [classes[c] for c in sorted(feats.samples) for _ in feats.samples[c]]
    vectors = selftest_vectors(chosen.model, spec, frames, frame_labels)
    logits = (oof.score - center) / scale  # every image, like the confidence and class-mix references
    reference = build_reference(feats.stats, oof_probs.astype(np.float32), labels).model_copy(
        update={"anomaly_score": histogram(logits, ANOMALY_EDGES)}
    )
    op = OperatingPoint(
        threshold=threshold, review=review, target=targets.operate_for, target_value=targets.target_value
    )
    fr, esc = honest.false_reject, honest.escape
    metrics = finite_metrics(
        {
            "false_reject": fr.value,
            "false_reject_high": fr.high,
            "false_reject_n": fr.n,
            "escape": esc.value,
            "escape_high": esc.high,
            "escape_n": esc.n,
            "auroc": auroc(d[is_good], d[~is_good]),
            "threshold": threshold,
            "int8_verdict_agreement": agree,
            "int8_max_score_diff": score_diff,
            "size_ratio": chosen.report.size_ratio,
            "train_rows": len(feats.y),
            "images": len(folder),
        }
    )
    lineage_doc: dict[str, Any] = {
        "dataset": {
            "sha256": dataset_sha256(folder, feats.digests),
            "roots": [str(r) for r in folder.roots],
            "counts": counts,
            "files": len(folder),
        },
        "training": {
            "kind": chosen_kind,
            "estimator": estimator if cls_classes else None,
            "components": final.good.k,
            "folds": oof.folds,
            "seed": seed,
            "registration": reg_notes,
            "overrides": params or {},
            "augment": getattr(augment, "__qualname__", repr(augment)) if augment else None,
            "augmented_rows": feats.augmented,
            "fit": final.fit_notes,
        },
        **code_lineage(),
        **(lineage or {}),
    }
    manifest = write_signed_bundle(
        out,
        chosen.model,
        key=key,
        name=name,
        version=version,
        spec=spec,
        input_shape=pre.output_shape,
        labels=labels,
        selftest=_with_scores(vectors, chosen.model, spec),
        quant=chosen.report,
        reference=reference,
        metrics=metrics,
        lineage=lineage_doc,
        thresholds=thresholds,
        target=target,
        valid_days=valid_days,
        decision={"anomaly": anomaly, "operating_point": op, "unverified": tuple(failures)},
    )
    doc = inspection_report.build_doc(
        name=name,
        version=version,
        kind=chosen_kind,
        line=line,
        at_threshold=at_threshold,
        failures=failures,
        warnings=warnings,
        threshold=threshold,
        review=review,
        targets=targets,
        curve=curve(d[is_good], d[~is_good], unknown[is_good], unknown[~is_good]),
        auroc=metrics.get("auroc"),
        counts=counts,
        registration=reg_notes,
        quant=chosen.report.to_dict(),
        fidelity={"verdict_agreement": agree, "max_score_diff": score_diff, **chosen.gate.to_dict()},
        unknown_limit=limit,
        seconds=round(time.perf_counter() - t_start, 2),
        bundle=str(out),
    )
    rjson = inspection_report.write_json(rep_dir / "report.json", doc)
    rpng = inspection_report.write_png(
        rep_dir / "report.png",
        doc,
        folder.paths,
        img_target,
        ok,
        d,
        oof.maps,
        threshold,
        unknown,
    )
    log.info(
        "bundle %s v%d (%s) written to %s: %s",
        name,
        version,
        chosen_kind,
        out,
        "; ".join([f"false reject {fr.text()}", f"escape {esc.text()}"]),
    )
    return InspectionResult(out, manifest, chosen_kind, line, chosen.gate, chosen.report, metrics, rjson, rpng, doc)


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


def _scores(model: bytes, x: np.ndarray) -> np.ndarray:
    return run_probabilities(model, x, output="anomaly_score").reshape(-1)


def _numpy_probabilities(final: Any, cal: Calibration, x: np.ndarray, plan: ModelPlan) -> np.ndarray:
    from converters.anomaly import score_numpy

    a = cal.apply(score_numpy(final.good, x).score)
    probs = final.classifier.predict_proba(x) if final.classifier is not None else None
    return combine(probs, a)


def _with_scores(vectors: list[Any], model: bytes, spec: PreprocessSpec) -> list[Any]:
    """Self-test vectors with the shipped model's anomaly score on each stored frame."""
    from dataclasses import replace

    pre = Preprocessor(spec)
    x = np.stack([pre(v.image) for v in vectors])
    scores = _scores(model, x)
    return [replace(v, anomaly_score=float(s)) for v, s in zip(vectors, scores, strict=True)]
