"""The good-part model as ONNX, alone or joined to a classifier in one graph.

Outputs (names from :class:`~edgeline.core.protocol.manifest.AnomalySpec`): ``anomaly_score`` (N, 1),
``anomaly_map`` (N, h, w), ``anomaly_global`` (N, 1) and ``probabilities``:

* alone: ``[1 - a, a]`` over the labels ``(ok, anomaly)``;
* with a classifier: ``[p_1 (1 - a), ..., p_C (1 - a), a]`` over the classifier's labels plus
  ``anomaly`` — a noisy OR: the part is good only when the classifier says good AND the good-part
  model does not object, so ``1 - p(ok)`` is the one defect score the operating point thresholds;

where ``a = sigmoid((score - center) / scale)``. Built with ``onnx.helper`` at the pinned opsets of
:mod:`converters.onnx_export`; the two MatMuls of the branch quantize to int8 like a classifier's.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from converters.anomaly import HOT_CELL_Z, Calibration, GoodPartModel
from converters.errors import ConversionError
from converters.onnx_export import INPUT_NAME, OUTPUT_NAME, TARGET_OPSET, dedupe_opsets
from edgeline.core.protocol.manifest import AnomalySpec

CLASS_PROBS = "class_probabilities"
_P = "anomaly_"  # prefix of every node and tensor the branch adds


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name=_P + name)


def _branch(
    model: GoodPartModel, cal: Calibration, spec: AnomalySpec, n_features: int | None = None
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The branch's nodes; it reads the first ``model.pixels`` features (all of them, without a
    Slice, when ``n_features`` says there are no others: a node less on every frame)."""
    h, w = model.grid
    whole = n_features == model.pixels
    inits = [
        *(
            ()
            if whole
            else (_const("starts", np.array([0], np.int64)), _const("ends", np.array([model.pixels], np.int64)))
        ),
        _const("axes", np.array([1], np.int64)),
        _const("mean", model.mean.astype(np.float32)),
        _const("proj", np.ascontiguousarray(model.components.T, dtype=np.float32)),  # (P, k)
        _const("back", np.ascontiguousarray(model.components, dtype=np.float32)),  # (k, P)
        _const("inv_rsd", model.inv_rsd.astype(np.float32)),
        _const("grid3", np.array([-1, h, w], np.int64)),
        _const("center", np.array(cal.center, np.float32)),
        _const("inv_scale", np.array(1.0 / cal.scale, np.float32)),
        _const("cell_z", np.array(HOT_CELL_Z, np.float32)),
        _const("hot_scale", np.array(model.hot_scale, np.float32)),
    ]
    n = _P
    whole = n_features == model.pixels
    nodes = (
        []
        if whole
        else [
            helper.make_node(
                "Slice", [INPUT_NAME, n + "starts", n + "ends", n + "axes"], [n + "pixels"], name=n + "slice"
            )
        ]
    )
    nodes += [
        helper.make_node(
            "Sub", [INPUT_NAME if whole else n + "pixels", n + "mean"], [n + "centred"], name=n + "centre"
        ),
        helper.make_node("MatMul", [n + "centred", n + "proj"], [n + "coords"], name=n + "project"),
        helper.make_node("MatMul", [n + "coords", n + "back"], [n + "recon"], name=n + "reconstruct"),
        helper.make_node("Sub", [n + "centred", n + "recon"], [n + "resid"], name=n + "residual"),
        helper.make_node("Mul", [n + "resid", n + "inv_rsd"], [n + "z"], name=n + "zscore"),
    ]
    c = model.channels
    if c == 1:
        inits.append(_const("grid4", np.array([-1, 1, h, w], np.int64)))
        nodes.append(helper.make_node("Reshape", [n + "z", n + "grid4"], [n + "z4"], name=n + "to_grid"))
    else:  # pixel-interleaved colour -> (N, c, h, w) planes; every map is per channel, then the largest
        inits.append(_const("grid_hwc", np.array([-1, h, w, c], np.int64)))
        nodes += [
            helper.make_node("Reshape", [n + "z", n + "grid_hwc"], [n + "z_hwc"], name=n + "to_grid"),
            helper.make_node("Transpose", [n + "z_hwc"], [n + "z4"], name=n + "to_planes", perm=[0, 3, 1, 2]),
        ]
    nodes += [
        helper.make_node("Abs", [n + "z4"], [n + "abs4"], name=n + "abs"),
        _pool(n + "abs4", n + ("pooled" if c == 1 else "pooled_c"), 3, n + "smooth"),
    ]
    if c > 1:
        nodes.append(_channel_max(n + "pooled_c", n + "pooled", n + "smooth_max"))
    combined = n + "pooled"
    if model.coarse_weight is not None:
        for k, weight in zip(model.coarse, model.coarse_weight, strict=True):
            inits.append(_const(f"weight{k}", weight.reshape(1, c, h, w).astype(np.float32)))
            nodes += [
                _pool(n + "z4", n + f"mean{k}", k, n + f"coarse{k}"),
                helper.make_node("Abs", [n + f"mean{k}"], [n + f"abs{k}"], name=n + f"abs{k}"),
                helper.make_node(
                    "Mul",
                    [n + f"abs{k}", n + f"weight{k}"],
                    [n + f"map{k}" + ("" if c == 1 else "_c")],
                    name=n + f"weigh{k}",
                ),
            ]
            if c > 1:
                nodes.append(_channel_max(n + f"map{k}_c", n + f"map{k}", n + f"map{k}_max"))
            nodes.append(helper.make_node("Max", [combined, n + f"map{k}"], [n + f"upto{k}"], name=n + f"upto{k}"))
            combined = n + f"upto{k}"
    nodes += [
        helper.make_node("Reshape", [combined, n + "grid3"], [spec.map_output], name=n + "map"),
        helper.make_node("ReduceMax", [combined], [n + "max4"], name=n + "peak", axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", [n + "max4", n + "axes"], [spec.score_output], name=n + "score"),
        helper.make_node("Greater", [n + "pooled", n + "cell_z"], [n + "hot"], name=n + "hot"),
        helper.make_node("Cast", [n + "hot"], [n + "hot_f"], name=n + "hot_float", to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", [n + "hot_f"], [n + "share_grid"], name=n + "share", axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", [n + "share_grid", n + "hot_scale"], [n + "share_part"], name=n + "share_of_part"),
        helper.make_node("Unsqueeze", [n + "share_part", n + "axes"], [spec.global_output], name=n + "global"),
        helper.make_node("Sub", [spec.score_output, n + "center"], [n + "shifted"], name=n + "shift"),
        helper.make_node("Mul", [n + "shifted", n + "inv_scale"], [n + "logit"], name=n + "logit"),
        helper.make_node("Sigmoid", [n + "logit"], [n + "prob"], name=n + "prob"),
    ]
    return nodes, inits


def _channel_max(src: str, dst: str, name: str) -> onnx.NodeProto:
    """(N, c, h, w) -> (N, 1, h, w): the largest over the colour channels."""
    return helper.make_node("ReduceMax", [src], [dst], name=name, axes=[1], keepdims=1)


def _pool(src: str, dst: str, k: int, name: str) -> onnx.NodeProto:
    """k x k mean, padding left out of the count (the numpy :func:`converters.anomaly._avg_pool`)."""
    r = k // 2
    return helper.make_node(
        "AveragePool",
        [src],
        [dst],
        name=name,
        kernel_shape=[k, k],
        pads=[r, r, r, r],
        strides=[1, 1],
        count_include_pad=0,
    )


def _outputs(spec: AnomalySpec, h: int, w: int, n_probs: int) -> list[onnx.ValueInfoProto]:
    return [
        helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, n_probs]),
        helper.make_tensor_value_info(spec.score_output, TensorProto.FLOAT, [None, 1]),
        helper.make_tensor_value_info(spec.map_output, TensorProto.FLOAT, [None, h, w]),
        helper.make_tensor_value_info(spec.global_output, TensorProto.FLOAT, [None, 1]),
    ]


def anomaly_only_onnx(model: GoodPartModel, cal: Calibration, spec: AnomalySpec, n_features: int) -> bytes:
    """A graph with the good-part branch alone; probabilities over ``(ok, anomaly)``."""
    nodes, inits = _branch(model, cal, spec, n_features)
    inits.append(_const("one", np.array(1.0, np.float32)))
    nodes += [
        helper.make_node("Sub", [_P + "one", _P + "prob"], [_P + "good"], name=_P + "good"),
        helper.make_node("Concat", [_P + "good", _P + "prob"], [OUTPUT_NAME], name=_P + "probs", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "edgeline_good_part_model",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, n_features])],
        _outputs(spec, *model.grid, 2),
        initializer=inits,
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TARGET_OPSET[""])], producer_name="edgeline")
    return _checked(onx)


def join_with_classifier(classifier: bytes, model: GoodPartModel, cal: Calibration, spec: AnomalySpec) -> bytes:
    """The classifier graph plus the good-part branch, probabilities combined as a noisy OR."""
    onx = onnx.load_from_string(classifier)
    graph = onx.graph
    outs = [o for o in graph.output if o.name == OUTPUT_NAME]
    if not outs or len(graph.input) != 1 or graph.input[0].name != INPUT_NAME:
        raise ConversionError("the classifier graph must have one input 'input' and a 'probabilities' output")
    dims = outs[0].type.tensor_type.shape.dim
    n_classes = dims[1].dim_value if len(dims) == 2 and dims[1].dim_value > 0 else 0
    for node in graph.node:
        node.output[:] = [CLASS_PROBS if o == OUTPUT_NAME else o for o in node.output]
        node.input[:] = [CLASS_PROBS if i == OUTPUT_NAME else i for i in node.input]
    del graph.output[:]
    nodes, inits = _branch(model, cal, spec)
    inits.append(_const("one", np.array(1.0, np.float32)))
    nodes += [
        helper.make_node("Sub", [_P + "one", _P + "prob"], [_P + "good"], name=_P + "good"),
        helper.make_node("Mul", [CLASS_PROBS, _P + "good"], [_P + "scaled"], name=_P + "noisy_or"),
        helper.make_node("Concat", [_P + "scaled", _P + "prob"], [OUTPUT_NAME], name=_P + "probs", axis=1),
    ]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    graph.output.extend(_outputs(spec, *model.grid, n_classes + 1 if n_classes else 0))
    if not n_classes:
        graph.output[0].type.tensor_type.shape.dim[1].dim_param = "labels"
    dedupe_opsets(onx)
    return _checked(onx)


def _checked(onx: onnx.ModelProto) -> bytes:
    try:
        onnx.checker.check_model(onx)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"the good-part model graph fails the ONNX checker: {exc}") from exc
    return onx.SerializeToString()
