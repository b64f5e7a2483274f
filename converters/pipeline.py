"""The build pipeline as one call: image folder -> trained model -> ONNX -> int8 -> gate -> signed bundle.

    from converters.pipeline import build_bundle, GateConfig
    result = build_bundle("data/line", "bundles/line-v3", estimator="mlp", name="line", version=3,
                          key_dir="keys", augment=lighting_augment())

Stages: scan the folder; stratified split; features through the shared preprocessing (training images
optionally augmented); fit; float ONNX with a parity check against scikit-learn; quantization chosen
under the quality gate; reference histograms and self-test vectors from the FINAL model; signed
bundle; report (JSON + PNG). The signing key is loaded first so a missing key fails before training.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters import report as report_io
from converters.dataset import dataset_sha256, scan_image_folder, scan_images, stratified_split
from converters.errors import DatasetError, GateFailed, TrainingError
from converters.estimators import fit, make_estimator
from converters.features import DEFAULT_SPEC, extract
from converters.gate import GateConfig, GateResult, check_conversion
from converters.lineage import code_lineage
from converters.metrics import Agreement, Evaluation, evaluate
from converters.onnx_export import conversion_parity, run_probabilities, sklearn_to_onnx
from converters.packaging import finite_metrics, load_key, prepare_out_dir, sign_and_report
from converters.quantize import QuantReport
from converters.reference import build_reference, selftest_vectors
from converters.selection import QuantChoice, select_model
from converters.synth.lighting import Augment
from edgeline.core.protocol.manifest import Manifest, PreprocessSpec, Target, Thresholds

log = logging.getLogger(__name__)

__all__ = ["BuildArtifacts", "BuildResult", "GateConfig", "ProgressHook", "build_bundle"]


class ProgressHook:
    """Receives progress; the CLI draws rich bars with it. The default does nothing."""

    def stage(self, name: str, total: int | None = None) -> None:
        """A new stage starts; ``total`` steps when known."""

    def advance(self, n: int = 1) -> None:
        """``n`` steps of the current stage are done."""


@dataclass
class BuildArtifacts:
    """In-memory products of a build, kept on request (benchmarks, notebooks)."""

    estimator: Any  # the fitted scikit-learn pipeline
    float_model: bytes
    model: bytes  # the shipped model
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass
class BuildResult:
    bundle_dir: Path
    model_path: Path
    manifest_path: Path
    report_json: Path
    report_png: Path
    manifest: Manifest
    metrics: dict[str, float]
    evaluation: Evaluation  # of the shipped model on the held-out rows
    gate: GateResult
    quantization: QuantReport
    conversion: Agreement  # scikit-learn vs float ONNX on the held-out rows
    report: dict[str, Any] = field(default_factory=dict)
    artifacts: BuildArtifacts | None = None


def build_bundle(
    dataset_dir: Path | str | Sequence[Path | str],
    out_dir: Path | str,
    *,
    estimator: str = "mlp",
    name: str = "inspection",
    version: int = 1,
    key_dir: Path | str = Path("keys"),
    quantization: QuantChoice | str = "auto",
    gate: GateConfig | None = None,
    augment: Augment | None = None,
    augment_copies: int = 1,
    spec: PreprocessSpec = DEFAULT_SPEC,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    test_size: float = 0.25,
    calib_rows: int = 500,
    calib_dir: Path | str | None = None,
    selftest_per_class: int = 1,
    thresholds: Thresholds | None = None,
    target: Target | None = None,
    valid_days: float = 365.0,
    lineage: dict[str, Any] | None = None,
    report_dir: Path | str | None = None,
    force: bool = False,
    keep_artifacts: bool = False,
    progress: ProgressHook | None = None,
) -> BuildResult:
    """Build and sign a bundle from an image folder (or several, merged). See the module doc.

    ``augment(frame, rng) -> frame`` is applied to ``augment_copies`` extra copies of every TRAINING
    image (never to held-out images): e.g. :func:`converters.synth.lighting_augment`. Static int8 is
    calibrated on up to ``calib_rows`` training rows, or on the images in ``calib_dir`` (flat or in
    subfolders) when given, e.g. recent frames of the line the model is for. ``lineage`` is
    merged into the manifest's lineage (e.g. the parent version and the drift evidence). Raises a
    :class:`~converters.errors.ConverterError` subclass on any failure; no bundle is written then."""
    t_start = time.perf_counter()
    hook = progress or ProgressHook()
    gate = gate or GateConfig()
    thresholds = thresholds or Thresholds()
    out = prepare_out_dir(Path(out_dir), force=force)
    rep_dir = Path(report_dir) if report_dir is not None else out / "report"
    key = load_key(Path(key_dir))
    make_estimator(estimator, seed=seed, params=params)  # unknown estimator/params fail before any work
    if not 0.05 <= test_size <= 0.5:
        raise TrainingError("test_size must be between 0.05 and 0.5")

    folder = scan_image_folder(dataset_dir if not isinstance(dataset_dir, str) else Path(dataset_dir))
    labels = folder.classes
    if thresholds.ok_label not in labels:
        raise DatasetError(
            f"no class {thresholds.ok_label!r} among {', '.join(labels)}; name the good-part class (ok_label)"
        )
    tr, te = stratified_split(folder, test_size, seed)
    rng = np.random.default_rng(seed)

    hook.stage("features (training images)", len(tr))
    train = extract(
        [folder.paths[i] for i in tr],
        [folder.targets[i] for i in tr],
        spec,
        augment=augment,
        augment_copies=augment_copies,
        rng=rng,
        progress=hook.advance,
    )
    hook.stage("features (held-out images)", len(te))
    test = extract(
        [folder.paths[i] for i in te],
        [folder.targets[i] for i in te],
        spec,
        keep_samples=selftest_per_class,
        progress=hook.advance,
    )

    hook.stage(f"training {estimator}")
    pipe = make_estimator(estimator, seed=seed, params=params)
    fit_notes = fit(pipe, train.x, train.y)
    p_sklearn = pipe.predict_proba(test.x)

    hook.stage("ONNX conversion")
    float_model = sklearn_to_onnx(pipe, train.x.shape[1])
    parity = conversion_parity(float_model, pipe, test.x)
    check_conversion(parity.max_prob_diff, parity.label_agreement, gate)
    p_float = run_probabilities(float_model, test.x)

    hook.stage(f"quantization ({quantization}) and gate")
    if calib_dir is not None:
        calib_paths = scan_images(calib_dir)[:calib_rows]
        calib = extract(calib_paths, [0] * len(calib_paths), spec).x
    else:
        calib = train.x[rng.permutation(len(train.x))[:calib_rows]]
    is_forest = estimator == "forest"
    try:
        chosen = select_model(
            float_model,
            "float" if is_forest else quantization,
            calibration=calib,
            x_eval=test.x,
            y_eval=test.y,
            p_float=p_float,
            gate=gate,
            float_note=(
                "tree ensemble: ONNX Runtime never quantizes ai.onnx.ml TreeEnsemble operators; shipped as float32"
                if is_forest
                else ""
            ),
        )
    except GateFailed as exc:
        failed = {"name": name, "version": version, "estimator": estimator, "gate_failed": str(exc)}
        failed |= {"attempts": exc.attempts, "gate_config": gate.__dict__}
        path = report_io.write_json(rep_dir / "report.json", failed)
        raise GateFailed(f"{exc}. No bundle written; figures in {path}", attempts=exc.attempts) from exc

    hook.stage("bundle")
    evaluation = evaluate(test.y, chosen.probs.argmax(axis=1), labels)
    frames = [f for c in sorted(test.samples) for f in test.samples[c]]
    frame_labels = [labels[c] for c in sorted(test.samples) for _ in test.samples[c]]
    vectors = selftest_vectors(chosen.model, spec, frames, frame_labels)
    stats = {k: v + test.stats[k] for k, v in train.stats.items()}
    reference = build_reference(stats, chosen.probs, labels)
    fig = chosen.gate.figures
    metrics = finite_metrics(
        {
            "accuracy": evaluation.accuracy,
            "accuracy_float": fig.float_accuracy,
            "accuracy_sklearn": float(np.mean(p_sklearn.argmax(axis=1) == test.y)),
            "accuracy_drop_pp": fig.accuracy_drop_pp,
            "label_agreement": fig.label_agreement,
            "max_prob_diff": fig.max_prob_diff,
            "conversion_max_diff": parity.max_prob_diff,
            "size_ratio": chosen.report.size_ratio,
            "train_rows": len(train.y),
            "test_rows": len(test.y),
            **{f"precision.{c}": v for c, v in evaluation.precision.items()},
            **{f"recall.{c}": v for c, v in evaluation.recall.items()},
        }
    )
    lineage_doc: dict[str, Any] = {
        "dataset": {
            "sha256": dataset_sha256(folder, {**train.digests, **test.digests}),
            "roots": [str(r) for r in folder.roots],
            "counts": folder.counts,
            "files": len(folder),
        },
        "training": {
            "estimator": estimator,
            "params": {k: v for k, v in pipe.get_params(deep=True).items() if "__" in k and _scalar(v)},
            "overrides": params or {},
            "seed": seed,
            "test_size": test_size,
            "augment": getattr(augment, "__qualname__", repr(augment)) if augment else None,
            "augmented_rows": train.augmented,
            "calibration": str(calib_dir) if calib_dir is not None else f"{len(calib)} training rows",
            "fit": fit_notes,
        },
        **code_lineage(),
        **(lineage or {}),
    }
    signed = sign_and_report(
        out,
        rep_dir,
        chosen,
        key=key,
        name=name,
        version=version,
        spec=spec,
        labels=labels,
        selftest=vectors,
        reference=reference,
        metrics=metrics,
        lineage=lineage_doc,
        thresholds=thresholds,
        target=target,
        valid_days=valid_days,
        gate=gate,
        evaluation=evaluation,
        started=t_start,
        what=estimator,
        about={"estimator": estimator},
        checks={"conversion": {"label_agreement": parity.label_agreement, "max_prob_diff": parity.max_prob_diff}},
    )
    manifest, doc, rjson, rpng = signed.manifest, signed.doc, signed.report_json, signed.report_png
    assert rpng is not None  # a training run always has an evaluation
    log.info(
        "bundle %s v%d written to %s (%s, accuracy %.4f)", name, version, out, chosen.report.mode, evaluation.accuracy
    )
    return BuildResult(
        bundle_dir=out,
        model_path=out / manifest.artifact.filename,
        manifest_path=out / "manifest.json",
        report_json=rjson,
        report_png=rpng,
        manifest=manifest,
        metrics=metrics,
        evaluation=evaluation,
        gate=chosen.gate,
        quantization=chosen.report,
        conversion=parity,
        report=doc,
        artifacts=BuildArtifacts(pipe, float_model, chosen.model, test.x, test.y) if keep_artifacts else None,
    )


def _scalar(v: object) -> bool:
    return v is None or isinstance(v, bool | int | float | str | tuple)
