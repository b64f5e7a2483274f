"""``edgeline import``: an existing ONNX image model + calibration images -> int8 -> gate -> bundle.

The model is gated against its own float output (and against labels too, when the calibration images
sit in class subfolders). One image in four is held out of calibration for the gate, so the int8
model is judged on images it was not calibrated on (with fewer than 8 images, all serve both).
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
from converters.dataset import ImageFolder, dataset_sha256, scan_image_folder, scan_images
from converters.errors import ConversionError, DatasetError, GateFailed
from converters.features import extract
from converters.gate import GateConfig, GateResult
from converters.lineage import code_lineage
from converters.metrics import Evaluation, evaluate
from converters.onnx_export import run_probabilities
from converters.onnx_import import check_probabilities, normalise
from converters.packaging import finite_metrics, load_key, prepare_out_dir, sign_and_report
from converters.pipeline import ProgressHook
from converters.quantize import QuantReport
from converters.reference import build_reference, selftest_vectors
from converters.selection import QuantChoice, select_model
from edgeline.core.protocol.manifest import Manifest, PreprocessSpec, Target, Thresholds

log = logging.getLogger(__name__)


@dataclass
class ImportResult:
    bundle_dir: Path
    model_path: Path
    report_json: Path
    report_png: Path | None
    manifest: Manifest
    metrics: dict[str, float]
    gate: GateResult
    quantization: QuantReport
    evaluation: Evaluation | None
    report: dict[str, Any] = field(default_factory=dict)


def _calibration_set(calib_dir: Path, labels: Sequence[str]) -> tuple[ImageFolder, list[int] | None]:
    """Class subfolders named like the labels give targets; a flat folder of images gives none."""
    if any(p.is_dir() for p in Path(calib_dir).iterdir() if not p.name.startswith(".")):
        folder = scan_image_folder(calib_dir, min_classes=1)
        unknown = [c for c in folder.classes if c not in labels]
        if unknown:
            raise DatasetError(f"calibration class folders {unknown} are not among the labels {list(labels)}")
        return folder, [list(labels).index(folder.classes[t]) for t in folder.targets]
    flat = scan_images(calib_dir)
    return ImageFolder((Path(calib_dir),), ("unlabelled",), tuple(flat), tuple([0] * len(flat))), None


def import_model(
    model_path: Path | str,
    calib_dir: Path | str,
    out_dir: Path | str,
    *,
    labels: Sequence[str],
    spec: PreprocessSpec,
    name: str = "imported",
    version: int = 1,
    key_dir: Path | str = Path("keys"),
    quantization: QuantChoice | str = "auto",
    gate: GateConfig | None = None,
    append_softmax: bool = False,
    thresholds: Thresholds | None = None,
    target: Target | None = None,
    valid_days: float = 365.0,
    lineage: dict[str, Any] | None = None,
    report_dir: Path | str | None = None,
    force: bool = False,
    progress: ProgressHook | None = None,
) -> ImportResult:
    t0 = time.perf_counter()
    hook = progress or ProgressHook()
    gate = gate or GateConfig()
    thresholds = thresholds or Thresholds()
    labels = tuple(labels)
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ConversionError(f"give at least two distinct labels, in the model's output order (got {list(labels)})")
    if thresholds.ok_label not in labels:
        raise ConversionError(f"no label {thresholds.ok_label!r} among {list(labels)}; name the good-part class")
    out = prepare_out_dir(Path(out_dir), force=force)
    rep_dir = Path(report_dir) if report_dir is not None else out / "report"
    key = load_key(Path(key_dir))
    try:
        raw = Path(model_path).read_bytes()
    except OSError as exc:
        raise ConversionError(f"cannot read {model_path}: {exc.strerror}") from exc
    imported = normalise(raw, spec, append_softmax=append_softmax)
    if imported.n_classes is not None and imported.n_classes != len(labels):
        raise ConversionError(f"the model outputs {imported.n_classes} classes but {len(labels)} labels were given")

    folder, targets = _calibration_set(Path(calib_dir), labels)
    idx = np.arange(len(folder))
    held = idx[3::4] if len(folder) >= 8 else idx
    calib_idx = np.setdiff1d(idx, held) if len(folder) >= 8 else idx
    tg = targets if targets is not None else [0] * len(folder)
    hook.stage("preprocessing calibration images", len(folder))
    cal = extract([folder.paths[i] for i in calib_idx], [tg[i] for i in calib_idx], spec, progress=hook.advance)
    ev = extract([folder.paths[i] for i in held], [tg[i] for i in held], spec, keep_samples=4, progress=hook.advance)
    y_eval = ev.y if targets is not None else None

    hook.stage("float model")
    p_float = run_probabilities(imported.model, ev.x)
    check_probabilities(p_float, len(labels))
    hook.stage(f"quantization ({quantization}) and gate")
    try:
        chosen = select_model(
            imported.model, quantization, calibration=cal.x, x_eval=ev.x, y_eval=y_eval, p_float=p_float, gate=gate
        )
    except GateFailed as exc:
        path = report_io.write_json(rep_dir / "report.json", {"gate_failed": str(exc), "attempts": exc.attempts})
        raise GateFailed(f"{exc}. No bundle written; figures in {path}", attempts=exc.attempts) from exc

    hook.stage("bundle")
    evaluation = evaluate(ev.y, chosen.probs.argmax(axis=1), labels) if y_eval is not None else None
    frames = [f for c in sorted(ev.samples) for f in ev.samples[c]][:4]
    if targets is not None:
        frame_labels = [labels[c] for c in sorted(ev.samples) for _ in ev.samples[c]][:4]
    else:
        frame_labels = ["unlabelled"] * len(frames)
    vectors = selftest_vectors(chosen.model, spec, frames, frame_labels)
    stats = {k: v + ev.stats[k] for k, v in cal.stats.items()}
    fig = chosen.gate.figures
    metrics = finite_metrics(
        {
            "accuracy": evaluation.accuracy if evaluation else None,
            "accuracy_float": fig.float_accuracy,
            "accuracy_drop_pp": fig.accuracy_drop_pp,
            "label_agreement": fig.label_agreement,
            "max_prob_diff": fig.max_prob_diff,
            "size_ratio": chosen.report.size_ratio,
            "calibration_rows": len(cal.y),
            "gate_rows": len(ev.y),
        }
    )
    lineage_doc = {
        "source_model": {
            "file": Path(model_path).name,
            "sha256": imported.source_sha256,
            "producer": imported.producer,
            "opset": imported.opset,
        },
        "calibration": {
            "sha256": dataset_sha256(folder, {**cal.digests, **ev.digests}),
            "files": len(folder),
            "labelled": targets is not None,
            "gate_rows_also_calibrated": len(folder) < 8,
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
        reference=build_reference(stats, chosen.probs, labels),
        metrics=metrics,
        lineage=lineage_doc,
        thresholds=thresholds,
        target=target,
        valid_days=valid_days,
        gate=gate,
        evaluation=evaluation,
        started=t0,
        what="imported",
        about={"source": str(model_path)},
    )
    manifest, doc, rjson, rpng = signed.manifest, signed.doc, signed.report_json, signed.report_png
    return ImportResult(
        out,
        out / manifest.artifact.filename,
        rjson,
        rpng,
        manifest,
        metrics,
        chosen.gate,
        chosen.report,
        evaluation,
        doc,
    )
