"""Pick the model to ship: quantize as asked, gate it against the float model, fall back if allowed.

``quantization``:

* ``static``: static QDQ int8, or :class:`GateFailed`;
* ``dynamic``: dynamic int8, or :class:`GateFailed`;
* ``auto``: static; if it fails the gate and ``GateConfig.fallback_to_dynamic``, dynamic; else fail;
* ``float``: no quantization (the manifest says ``float``).

A model with nothing quantizable (tree ensembles) takes the float path whatever was asked, and the
report and manifest say so. Every attempt, passed or failed, is recorded in the report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from converters.errors import ConverterError, GateFailed
from converters.gate import GateConfig, GateResult, check, measure
from converters.onnx_export import run_probabilities
from converters.quantize import COMPUTE_OPS, QuantReport, eligible_ops, float_report, load_model, quantize

log = logging.getLogger(__name__)

QuantChoice = Literal["static", "dynamic", "auto", "float"]
QUANT_CHOICES: tuple[str, ...] = ("static", "dynamic", "auto", "float")


@dataclass
class Selection:
    model: bytes
    report: QuantReport
    gate: GateResult
    probs: np.ndarray  # the shipped model's probabilities on the evaluation rows


def select_model(
    float_model: bytes,
    quantization: QuantChoice | str,
    *,
    calibration: np.ndarray,
    x_eval: np.ndarray,
    y_eval: np.ndarray | None,
    p_float: np.ndarray,
    gate: GateConfig,
    op_types: tuple[str, ...] = COMPUTE_OPS,
    float_note: str = "",
    per_channel: bool = True,
    unsigned: bool = False,
) -> Selection:
    if quantization not in QUANT_CHOICES:
        raise ConverterError(f"unknown quantization {quantization!r}; choose one of {', '.join(QUANT_CHOICES)}")
    if quantization == "float" or not eligible_ops(load_model(float_model), op_types):
        note = float_note or (
            "float32 on request" if quantization == "float" else "no MatMul/Gemm/Conv with constant weights"
        )
        report = float_report(float_model, note)
        fig = measure("float", p_float, p_float, y_eval)
        return Selection(float_model, report, check(fig, gate), p_float)

    plan: list[Literal["static", "dynamic"]] = [quantization] if quantization != "auto" else ["static"]  # type: ignore[list-item]
    if quantization == "auto" and gate.fallback_to_dynamic:
        plan.append("dynamic")
    attempts: list[dict[str, object]] = []
    failures: list[str] = []
    for mode in plan:
        qmodel, report = quantize(
            float_model,
            mode,
            calibration=calibration if mode == "static" else None,
            op_types=op_types,
            per_channel=per_channel,
            unsigned=unsigned,
        )
        if report.mode == "float":  # nothing was quantized: ship float, labelled float
            fig = measure("float", p_float, p_float, y_eval)
            return Selection(float_model, replace(report, attempts=attempts), check(fig, gate), p_float)
        probs = run_probabilities(qmodel, x_eval)
        result = check(measure(report.mode, p_float, probs, y_eval), gate)
        attempts.append({"mode": report.mode, "model_bytes": report.model_bytes, **result.to_dict()})
        if result.passed:
            if attempts[:-1]:
                log.warning("static int8 failed the gate; shipping dynamic int8 (%s)", "; ".join(failures))
            return Selection(qmodel, replace(report, attempts=attempts), result, probs)
        failures += result.failures
        log.info("%s int8 failed the gate: %s", report.mode, "; ".join(result.failures))
    raise GateFailed("quality gate refused the model: " + "; ".join(failures), attempts=attempts)
