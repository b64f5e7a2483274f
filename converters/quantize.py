"""int8 quantization with ``onnxruntime.quantization``, and an honest count of what was quantized.

* ``static``: QDQ format, activations calibrated (MinMax) on training rows pushed through the same
  preprocessing, per-channel int8 weights. Only compute ops with constant weights are quantized
  (``op_types_to_quantize``), so the output probabilities stay float (field notes).
* ``dynamic``: int8 weights, activations quantized per call (MatMul and Conv; ORT rewrites a Gemm
  with constant weights into MatMul + Add first, so Gemm layers are covered too).

The report counts, in the final graph, the compute ops whose weights really are int8, next to the
ones that could have been. A model in which nothing was quantized is reported, and labelled in the
manifest, as ``float`` - never as int8.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

from converters.errors import ConversionError
from edgeline.core.protocol.manifest import Quantization

log = logging.getLogger(__name__)

Mode = Literal["static_qdq", "dynamic", "float"]
COMPUTE_OPS = ("MatMul", "Gemm", "Conv")
#: integer ops that ORT's quantizers emit, and the float op each replaces
_INTEGER_OPS = {
    "MatMulInteger": "MatMul",
    "DynamicQuantizeMatMul": "MatMul",
    "QLinearMatMul": "MatMul",
    "ConvInteger": "Conv",
    "QLinearConv": "Conv",
    "QGemm": "Gemm",
}
_INT8 = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)


@dataclass(frozen=True)
class QuantReport:
    mode: Mode
    quantized: dict[str, int]  # op type -> ops whose weights are int8 in the final model
    eligible: dict[str, int]  # op type -> compute ops with constant weights in the float model
    float_bytes: int
    model_bytes: int
    int8_weight_bytes: int = 0
    note: str = ""
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def size_ratio(self) -> float:
        return self.model_bytes / self.float_bytes if self.float_bytes else 1.0

    def manifest_entry(self) -> Quantization:
        ops = tuple(f"{op}:{n}" for op, n in sorted(self.quantized.items()))
        return Quantization(mode=self.mode, quantized_ops=ops, note=self.note)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "quantized_ops": self.quantized,
            "eligible_ops": self.eligible,
            "float_bytes": self.float_bytes,
            "model_bytes": self.model_bytes,
            "size_ratio": round(self.size_ratio, 4),
            "int8_weight_bytes": self.int8_weight_bytes,
            "note": self.note,
            "attempts": self.attempts,
        }


def load_model(data: bytes, what: str = "model") -> onnx.ModelProto:
    try:
        return onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ConversionError(f"{what} is not a readable ONNX model: {str(exc).splitlines()[0][:200]}") from exc


def eligible_ops(model: onnx.ModelProto, op_types: tuple[str, ...] = COMPUTE_OPS) -> dict[str, int]:
    """Float compute ops whose weight input is a constant initializer."""
    inits = {i.name for i in model.graph.initializer}
    return dict(
        Counter(n.op_type for n in model.graph.node if n.op_type in op_types and n.input[1:2] and n.input[1] in inits)
    )


def count_quantized(model: onnx.ModelProto) -> tuple[dict[str, int], int]:
    """(quantized compute ops by float op type, bytes of int8 weights) in a (possibly) quantized graph."""
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    found: Counter[str] = Counter()
    for node in model.graph.node:
        if node.op_type in _INTEGER_OPS:
            found[_INTEGER_OPS[node.op_type]] += 1
        elif node.op_type in COMPUTE_OPS and len(node.input) > 1:
            dq = producers.get(node.input[1])
            weight = inits.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if weight is not None and weight.data_type in _INT8:
                found[node.op_type] += 1
    int8_bytes = sum(len(i.raw_data) for i in inits.values() if i.data_type in _INT8)
    return dict(found), int8_bytes


def left_float(model: onnx.ModelProto) -> dict[str, int]:
    """Compute ops of a quantized graph that still multiply by a float32 constant weight."""
    inits = {i.name: i for i in model.graph.initializer}
    return dict(
        Counter(
            n.op_type
            for n in model.graph.node
            if n.op_type in COMPUTE_OPS
            and len(n.input) > 1
            and n.input[1] in inits
            and inits[n.input[1]].data_type == onnx.TensorProto.FLOAT
        )
    )


class _Rows(CalibrationDataReader):
    def __init__(self, input_name: str, x: np.ndarray, batch: int) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(
            [{input_name: x[i : i + batch].astype(np.float32, copy=False)} for i in range(0, len(x), batch)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


class _HushPreprocessAdvice(logging.Filter):
    """onnxruntime.quantization logs 'Please consider pre-processing' on the root logger on every call;
    we deliberately skip ``quant_pre_process`` (field notes: it silently turns static QDQ into
    weight-only with a Scaler in front)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    root = logging.getLogger()
    f = _HushPreprocessAdvice()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def quantize(
    model_bytes: bytes,
    mode: Literal["static", "dynamic"],
    *,
    calibration: np.ndarray | None = None,
    op_types: tuple[str, ...] = COMPUTE_OPS,
    per_channel: bool = True,
    calib_batch: int = 64,
    unsigned: bool = False,
) -> tuple[bytes, QuantReport]:
    """Quantize; returns the new model bytes and the report. If nothing could be quantized the
    report's mode is ``float`` (and the caller should ship the float model).

    ``unsigned``: static activations AND weights uint8 instead of int8. ONNX Runtime then fuses
    every MatMul into QLinearMatMul; with int8 activations the good-part model's projection kept a
    float MatMul whose weights were dequantized at every run (measured 125 vs 72 us a frame).
    Weights uint8 too, not int8: the U8S8 kernels of x86 CPUs without VNNI can saturate."""
    fmodel = load_model(model_bytes)
    eligible = eligible_ops(fmodel, op_types)
    if not eligible:
        note = f"no {'/'.join(op_types)} op with constant weights: nothing to quantize"
        return model_bytes, QuantReport("float", {}, {}, len(model_bytes), len(model_bytes), note=note)
    input_name = fmodel.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="edgeline-quant-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(model_bytes)
        try:
            with _quiet():
                if mode == "static":
                    if calibration is None or len(calibration) == 0:
                        raise ConversionError("static quantization needs calibration rows")
                    quantize_static(
                        src,
                        dst,
                        _Rows(input_name, calibration, calib_batch),
                        quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(eligible),
                        per_channel=per_channel,
                        activation_type=QuantType.QUInt8 if unsigned else QuantType.QInt8,
                        weight_type=QuantType.QUInt8 if unsigned else QuantType.QInt8,
                        extra_options={"MatMulConstBOnly": True},
                    )
                else:
                    quantize_dynamic(
                        src,
                        dst,
                        op_types_to_quantize=[op for op in ("MatMul", "Conv") if op in eligible or op == "MatMul"],
                        per_channel=per_channel,
                        weight_type=QuantType.QInt8,
                        extra_options={"MatMulConstBOnly": True},
                    )
        except ConversionError:
            raise
        except Exception as exc:  # onnxruntime.quantization raises many unrelated types
            raise ConversionError(f"{mode} quantization failed: {str(exc).splitlines()[0][:300]}") from exc
        qbytes = dst.read_bytes()
    qmodel = load_model(qbytes, "quantized model")
    quantized, int8_bytes = count_quantized(qmodel)
    total = sum(quantized.values())
    if total == 0:
        note = f"{mode} quantization changed no op; shipped as float32"
        log.warning(note)
        return model_bytes, QuantReport("float", {}, eligible, len(model_bytes), len(model_bytes), note=note)
    qmode: Mode = "static_qdq" if mode == "static" else "dynamic"
    missed = left_float(qmodel)
    note = f"int8 weights on {total} of {sum(eligible.values())} compute ops"
    if missed:
        note += "; left float: " + ", ".join(f"{op}:{n}" for op, n in sorted(missed.items()))
    return qbytes, QuantReport(qmode, quantized, eligible, len(model_bytes), len(qbytes), int8_bytes, note)


def float_report(model_bytes: bytes, note: str) -> QuantReport:
    """The report for a model shipped unquantized (tree ensembles, or ``quantization="float"``)."""
    eligible = eligible_ops(load_model(model_bytes))
    return QuantReport("float", {}, eligible, len(model_bytes), len(model_bytes), note=note)
