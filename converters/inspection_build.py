"""The inspection-grade build: good parts (and whatever defects there are) -> registered features ->
good-part model (+ classifier for defect kinds with enough examples) -> operating point -> line gate
-> ONNX -> int8 -> signed bundle.

    from converters.inspection_build import build_inspection
    result = build_inspection("data/line", "bundle-v1", key_dir="keys")

Kinds: ``anomaly`` (the good-part model alone: good parts only, or defect kinds too small to learn),
``hybrid`` (good-part model and a classifier for the defect kinds with at least ``min_class_images``
images, combined as a noisy OR), ``auto`` (hybrid when some defect kind is learnable, else anomaly).
Everything is judged out of fold (:mod:`converters.inspection_eval`) and gated in escape and
false-reject terms (:mod:`converters.line_gate`). The steps are in :mod:`converters.inspection_steps`,
the signed bundle and its report in :mod:`converters.inspection_bundle`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from converters import inspection_report
from converters.errors import GateFailed, TrainingError
from converters.estimators import make_estimator
from converters.features import DEFAULT_SPEC
from converters.gate import GateConfig, GateResult
from converters.inspection_bundle import sign_and_report
from converters.inspection_steps import export_model, fit_features, operating_point, plan_data
from converters.line_gate import LineGate, LineTargets, planted_check
from converters.packaging import load_key, prepare_out_dir
from converters.photometric import photometric_augment
from converters.quantize import QuantReport
from converters.registration_fit import RegisterChoice
from converters.selection import QuantChoice
from converters.synth.lighting import Augment
from edgeline.core.protocol.manifest import Manifest, PreprocessSpec, Target, Thresholds

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
    data = plan_data(dataset_dir, kind, thresholds.ok_label, min_class_images, exclude)
    if augment is None and photometric:
        augment = photometric_augment()
    rng = np.random.default_rng(seed)
    fp = fit_features(
        data,
        spec,
        register,
        augment=augment,
        augment_copies=augment_copies,
        components=components,
        estimator=estimator,
        params=params,
        seed=seed,
        rng=rng,
        hook=hook,
    )
    op = operating_point(fp, data, targets, folds, seed, hook)
    ex = export_model(
        fp,
        data,
        op,
        ok_label=thresholds.ok_label,
        quantization=quantization,
        gate=gate,
        calib_dir=calib_dir,
        calib_rows=calib_rows,
        rng=rng,
        hook=hook,
    )
    failures = list(op.line.failures)
    found = planted_found(fp.reg_notes, fp.plan.components)
    planted_failures, planted_notes = planted_check(found, targets)
    failures += planted_failures
    op.line.failures += planted_failures
    op.line.notes += planted_notes
    op.line.passed = op.line.passed and not planted_failures
    if ex.agree < gate.min_label_agreement:
        failures.append(
            f"{ex.chosen.report.mode} verdicts agree with float on {100 * ex.agree:.2f}% of parts at the operating "
            f"point, below {100 * gate.min_label_agreement:.2f}%"
        )
    if failures and not force_unverified:
        doc = inspection_report.failed_doc(name, version, data.chosen_kind, op.line, failures, data.warnings)
        path = inspection_report.write_json(rep_dir / "report.json", doc)
        raise GateFailed(
            "the line gate refused the model: " + "; ".join(failures) + f". No bundle written; figures in {path}"
        )
    if failures:
        log.warning("signing an UNVERIFIED bundle (--force-unverified): %s", "; ".join(failures))

    hook.stage("bundle")
    signed = sign_and_report(
        out,
        rep_dir,
        data,
        fp,
        op,
        ex,
        failures=failures,
        key=key,
        name=name,
        version=version,
        targets=targets,
        thresholds=thresholds,
        target=target,
        valid_days=valid_days,
        lineage=lineage,
        estimator=estimator,
        params=params,
        seed=seed,
        t_start=t_start,
    )
    return InspectionResult(
        out,
        signed.manifest,
        data.chosen_kind,
        op.line,
        ex.chosen.gate,
        ex.chosen.report,
        signed.metrics,
        signed.report_json,
        signed.report_png,
        signed.doc,
    )


def planted_found(notes: dict[str, object], components: int | None) -> float | None:
    """The share of planted blemishes found by the chosen model size (``components_found`` of the
    build's choices), or None when the size was not chosen by planted blemishes."""
    found = notes.get("components_found")
    if not isinstance(found, dict) or components is None:
        return None
    value = found.get(components, found.get(str(components)))
    return float(value) if isinstance(value, int | float) else None
