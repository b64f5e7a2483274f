"""Shared last steps of ``train`` and ``import``: the signing key, the output directory, JSON-safe
lineage, the signed bundle itself and its report (:func:`sign_and_report`)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converters import report as report_io
from converters.bundle_writer import SelfTestVector, build_manifest, write_bundle
from converters.errors import ConverterError, SigningKeyError
from converters.gate import GateConfig
from converters.keys import KeyPaths, SigningKey, load_signing_key
from converters.metrics import Evaluation
from converters.quantize import QuantReport
from converters.selection import Selection
from edge_agent.bundle import MANIFEST_FILE
from edge_agent.preprocessing import Preprocessor
from edgeline.core.errors import EdgelineError
from edgeline.core.protocol.manifest import Manifest, PreprocessSpec, Reference, Target, Thresholds

#: Self-test tolerance: float models reproduce ORT to ~1e-6; int8 kernels differ a little between CPU
#: families (VNNI, AVX2, NEON), so quantized models get more room. A preprocessing skew is far larger.
SELFTEST_ATOL = {"float": 1e-3, "static_qdq": 1e-2, "dynamic": 1e-2}


def load_key(key_dir: Path) -> SigningKey:
    """Load the signing key first, so a missing key fails before minutes of training."""
    paths = KeyPaths(Path(key_dir))
    if not paths.signing_key.exists():
        raise SigningKeyError(f"no signing key in {key_dir} (create one with 'edgeline keys init --keys {key_dir}')")
    try:
        return load_signing_key(Path(key_dir))
    except EdgelineError as exc:
        raise SigningKeyError(f"cannot use the signing key in {key_dir}: {exc}") from exc


def prepare_out_dir(out_dir: Path, *, force: bool) -> Path:
    out_dir = Path(out_dir)
    if (out_dir / MANIFEST_FILE).exists() and not force:
        raise ConverterError(f"{out_dir} already holds a bundle; choose another directory or overwrite it (--force)")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConverterError(f"{out_dir} exists and is not a directory")
    return out_dir


def json_safe(value: Any) -> Any:
    """Plain JSON types only (numpy scalars, tuples, paths converted; non-finite floats refused)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ConverterError("lineage and metrics must not hold NaN or infinity")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def finite_metrics(metrics: dict[str, float | int | None]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if v is None:
            continue
        f = float(v)
        if not math.isfinite(f):
            raise ConverterError(f"metric {k} is not finite")
        out[k] = round(f, 6)
    return out


def write_signed_bundle(
    out_dir: Path,
    model: bytes,
    *,
    key: SigningKey,
    name: str,
    version: int,
    spec: PreprocessSpec,
    input_shape: Sequence[int],
    labels: Sequence[str],
    selftest: Sequence[SelfTestVector],
    quant: QuantReport,
    reference: Reference,
    metrics: dict[str, float],
    lineage: dict[str, Any],
    thresholds: Thresholds | None = None,
    target: Target | None = None,
    valid_days: float = 365.0,
    selftest_atol: float | None = None,
    decision: dict[str, Any] | None = None,
) -> Manifest:
    lineage_safe = json_safe(lineage)
    json.dumps(lineage_safe, allow_nan=False)
    manifest = build_manifest(
        name=name,
        version=version,
        model_bytes=model,
        input_name="input",
        input_shape=input_shape,
        preprocessing=spec,
        labels=labels,
        selftest=selftest,
        quantization=quant.manifest_entry(),
        thresholds=thresholds,
        reference=reference,
        metrics=metrics,
        lineage=lineage_safe,
        target=target,
        valid_days=valid_days,
        selftest_atol=selftest_atol if selftest_atol is not None else SELFTEST_ATOL[quant.mode],
        decision=decision,
    )
    try:
        write_bundle(out_dir, model, manifest, key)
    except OSError as exc:
        raise ConverterError(f"cannot write the bundle to {out_dir}: {exc.strerror or exc}") from exc
    return manifest


@dataclass(frozen=True)
class SignedBuild:
    """What :func:`sign_and_report` wrote: the manifest, the report document and its files."""

    manifest: Manifest
    doc: dict[str, Any]
    report_json: Path
    report_png: Path | None


def sign_and_report(
    out: Path,
    report_dir: Path,
    choice: Selection,
    *,
    key: SigningKey,
    name: str,
    version: int,
    spec: PreprocessSpec,
    labels: Sequence[str],
    selftest: Sequence[SelfTestVector],
    reference: Reference,
    metrics: dict[str, float],
    lineage: dict[str, Any],
    thresholds: Thresholds | None,
    target: Target | None,
    valid_days: float,
    gate: GateConfig,
    evaluation: Evaluation | None,
    started: float,
    what: str,
    about: dict[str, Any],
    checks: dict[str, Any] | None = None,
) -> SignedBuild:
    """The last step ``train`` and ``import`` share: the signed bundle, then report.json (and, with an
    evaluation, report.png titled ``NAME vVERSION: WHAT, MODE``). ``about`` goes after the version in
    the report (the estimator, or the imported file), ``checks`` after the evaluation."""
    manifest = write_signed_bundle(
        out,
        choice.model,
        key=key,
        name=name,
        version=version,
        spec=spec,
        input_shape=Preprocessor(spec).output_shape,
        labels=labels,
        selftest=selftest,
        quant=choice.report,
        reference=reference,
        metrics=metrics,
        lineage=lineage,
        thresholds=thresholds,
        target=target,
        valid_days=valid_days,
    )
    doc = {
        "name": name,
        "version": version,
        **about,
        "labels": list(labels),
        "evaluation": evaluation.to_dict() if evaluation is not None else None,
        **(checks or {}),
        "gate": choice.gate.to_dict(),
        "gate_config": gate.__dict__,
        "quantization": choice.report.to_dict(),
        "metrics": metrics,
        "lineage": manifest.lineage,
        "bundle": str(out),
        "seconds": round(time.perf_counter() - started, 2),
    }
    report_json = report_io.write_json(report_dir / "report.json", doc)
    report_png = None
    if evaluation is not None:
        title = f"{name} v{version}: {what}, {choice.report.mode}"
        report_png = report_io.write_png(report_dir / "report.png", evaluation, title)
    return SignedBuild(manifest, doc, report_json, report_png)
