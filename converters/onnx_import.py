"""Check and normalise an existing ONNX image model for ``edgeline import``.

Accepted: one image input ``[N, C, H, W]`` (C = 1 for grey, 3 for BGR/RGB), one output of class
probabilities ``[N, K]``. The graph is renamed to edgeline's convention (input ``input``, output
``probabilities``); a model that outputs logits can get a Softmax appended on request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
import onnx.version_converter
from onnx import helper

from converters.errors import ConversionError
from converters.onnx_export import INPUT_NAME, OUTPUT_NAME, dedupe_opsets
from converters.quantize import load_model
from edgeline.core.protocol.manifest import MAX_ARTIFACT_BYTES, PreprocessSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportedModel:
    model: bytes  # normalised: input "input", output "probabilities"
    source_sha256: str
    n_classes: int | None  # from the output shape when static
    producer: str
    opset: int


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    if old == new:
        return
    if any(new in (*n.input, *n.output) for n in graph.node) or any(i.name == new for i in graph.initializer):
        raise ConversionError(f"cannot rename {old!r} to {new!r}: the graph already uses that name")
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == old:
                node.input[k] = new
        for k, name in enumerate(node.output):
            if name == old:
                node.output[k] = new
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if vi.name == old:
            vi.name = new


def normalise(data: bytes, spec: PreprocessSpec, *, append_softmax: bool = False) -> ImportedModel:
    """Validate ``data`` against ``spec`` (features ``tensor``) and return the renamed model."""
    import hashlib

    if spec.features != "tensor":
        raise ConversionError("an imported image model needs a preprocessing spec with features 'tensor'")
    if len(data) > MAX_ARTIFACT_BYTES:
        raise ConversionError(f"model is {len(data)} bytes; devices accept at most {MAX_ARTIFACT_BYTES}")
    model = load_model(data, "the file")
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise ConversionError(f"the model fails the ONNX checker: {str(exc).splitlines()[0][:300]}") from exc
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    if len(inputs) != 1:
        raise ConversionError(f"the model has {len(inputs)} inputs; an image model for edgeline takes exactly one")
    if len(graph.output) != 1:
        names = ", ".join(o.name for o in graph.output)
        raise ConversionError(
            f"the model has {len(graph.output)} outputs ({names}); expected one of class probabilities"
        )
    if inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ConversionError("the model input must be float32")
    dims = _dims(inputs[0])
    channels = 1 if spec.color == "gray" else 3
    w, h = spec.size
    if len(dims) != 4:
        raise ConversionError(f"the model input has shape {dims}; expected [N, C, H, W]")
    for axis, want, what in ((1, channels, f"channels (color {spec.color!r})"), (2, h, "height"), (3, w, "width")):
        if isinstance(dims[axis], int) and dims[axis] not in (0, want):
            raise ConversionError(
                f"the model input is {dims} but the preprocessing gives {[1, channels, h, w]}: {what} differ"
            )
    out_dims = _dims(graph.output[0])
    if len(out_dims) != 2:
        raise ConversionError(f"the model output has shape {out_dims}; expected [N, classes]")
    n_classes = out_dims[1] if isinstance(out_dims[1], int) and out_dims[1] > 0 else None

    _rename(graph, inputs[0].name, INPUT_NAME)
    if append_softmax:
        logits = graph.output[0].name + "_logits"
        _rename(graph, graph.output[0].name, logits)
        graph.node.append(helper.make_node("Softmax", [logits], [OUTPUT_NAME], axis=1, name="edgeline_softmax"))
        graph.output[0].name = OUTPUT_NAME
    else:
        _rename(graph, graph.output[0].name, OUTPUT_NAME)
    dedupe_opsets(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:  # per-channel QDQ needs opset 13
        try:
            model = onnx.version_converter.convert_version(model, 13)
        except Exception as exc:  # the converter raises RuntimeError and friends
            raise ConversionError(f"the model uses opset {opset} and cannot be upgraded to 13: {exc}") from exc
        log.info("upgraded the model from opset %d to 13", opset)
        opset = 13
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"renaming broke the model: {exc}") from exc
    return ImportedModel(
        model.SerializeToString(), hashlib.sha256(data).hexdigest(), n_classes, model.producer_name or "", opset
    )


def check_probabilities(probs: np.ndarray, n_labels: int) -> None:
    """The output must be (N, n_labels) rows of probabilities."""
    if probs.ndim != 2 or probs.shape[1] != n_labels:
        raise ConversionError(f"the model outputs shape {tuple(probs.shape)}, but {n_labels} labels were given")
    if not np.all(np.isfinite(probs)):
        raise ConversionError("the model outputs NaN or infinity on the calibration images")
    sums = probs.sum(axis=1)
    if np.any(probs < -1e-4) or np.max(np.abs(sums - 1.0)) > 1e-3:
        raise ConversionError(
            "the model output is not class probabilities (rows do not sum to 1): it looks like logits; "
            "re-export it with a Softmax, or import with --softmax"
        )
