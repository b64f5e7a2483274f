"""Shared last steps of ``train`` and ``import``: the signing key, the output directory, JSON-safe
lineage, and the signed bundle itself."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from converters.bundle_writer import SelfTestVector, build_manifest, write_bundle
from converters.errors import ConverterError, SigningKeyError
from converters.keys import KeyPaths, SigningKey, load_signing_key
from converters.quantize import QuantReport
from edge_agent.bundle import MANIFEST_FILE
from edge_agent.errors import EdgelineError
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
