"""Write a signed bundle: ``model.onnx`` + ``manifest.json`` (an Envelope signed by the signing key)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConverterError
from converters.keys import SigningKey
from edge_agent.bundle import MANIFEST_FILE, write_envelope
from edge_agent.preprocessing import encode_png_b64
from edgeline.core.errors import EdgelineError
from edgeline.core.fsutil import write_atomic
from edgeline.core.protocol.manifest import (
    DEFAULT_CHUNK_SIZE,
    InputSpec,
    Manifest,
    PreprocessSpec,
    Quantization,
    Reference,
    SelfTest,
    SelfTestCase,
    Target,
    Thresholds,
    artifact_for,
)
from edgeline.core.protocol.signing import Envelope


@dataclass(frozen=True)
class SelfTestVector:
    image: np.ndarray  # a raw frame (uint8)
    expected: Sequence[float]
    label: str
    anomaly_score: float | None = None


def build_manifest(
    *,
    name: str,
    version: int,
    model_bytes: bytes,
    input_name: str,
    input_shape: Sequence[int],
    preprocessing: PreprocessSpec,
    labels: Sequence[str],
    selftest: Sequence[SelfTestVector],
    quantization: Quantization,
    thresholds: Thresholds | None = None,
    reference: Reference | None = None,
    metrics: dict[str, float] | None = None,
    lineage: dict[str, Any] | None = None,
    target: Target | None = None,
    sequence: int = 0,
    valid_days: float = 365.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    selftest_atol: float = 1e-3,
    output_name: str = "probabilities",
    now: float | None = None,
    decision: dict[str, Any] | None = None,
) -> Manifest:
    """``decision``: the optional ``anomaly``, ``operating_point`` and ``unverified`` fields."""
    issued = time.time() if now is None else now
    try:
        return Manifest(
            name=name,
            version=version,
            sequence=sequence,
            issued_at=issued,
            expires_at=issued + valid_days * 86400.0,
            target=target or Target(),
            artifact=artifact_for(model_bytes, chunk_size=chunk_size),
            input=InputSpec(name=input_name, shape=tuple(int(d) for d in input_shape)),
            output_probabilities=output_name,
            preprocessing=preprocessing,
            labels=tuple(labels),
            thresholds=thresholds or Thresholds(),
            reference=reference or Reference(),
            selftest=SelfTest(
                cases=tuple(
                    SelfTestCase(
                        image_png_b64=encode_png_b64(v.image),
                        expected=tuple(float(x) for x in v.expected),
                        label=v.label,
                        anomaly_score=v.anomaly_score,
                    )
                    for v in selftest
                ),
                atol=selftest_atol,
            ),
            quantization=quantization,
            metrics=metrics or {},
            lineage=lineage or {},
            **(decision or {}),
        )
    except (ValueError, EdgelineError) as exc:
        raise ConverterError(f"cannot build the manifest: {exc}") from exc


def sign_manifest(manifest: Manifest, key: SigningKey) -> Envelope:
    return key.sign(manifest.to_body())


def write_bundle(out_dir: Path, model_bytes: bytes, manifest: Manifest, key: SigningKey) -> Path:
    """Write the model and the signed manifest. The model goes first: a crash leaves no manifest."""
    out_dir = Path(out_dir)
    if (out_dir / MANIFEST_FILE).exists():
        (out_dir / MANIFEST_FILE).unlink()
    write_atomic(out_dir / manifest.artifact.filename, model_bytes)
    write_envelope(out_dir, sign_manifest(manifest, key))
    return out_dir
