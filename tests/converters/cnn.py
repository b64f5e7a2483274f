"""A small CNN-like ONNX image model made with ``onnx.helper`` (torch is not installed): two random
3x3 convolutions with ReLU, global average pooling, a normalisation of the pooled features (what a
trained network's batch-norm would do), and a Gemm + Softmax head fitted by logistic regression, so
the model really classifies the synthetic parts."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_agent.preprocessing import Preprocessor
from edgeline.core.protocol.manifest import PreprocessSpec

CNN_SPEC = PreprocessSpec(
    color="gray", roi=(0.2, 0.15, 0.6, 0.7), size=(32, 28), features="tensor", mean=(0.5,), std=(0.25,)
)
C1, C2 = 12, 24


def _graph(
    weights: dict[str, np.ndarray], n_classes: int, *, softmax: bool, opset: int, batch: int | str = "N"
) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    nodes = [
        helper.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["feat"]),
        helper.make_node("Sub", ["feat", "norm.mean"], ["centred"]),
        helper.make_node("Div", ["centred", "norm.std"], ["normed"]),
        helper.make_node("Gemm", ["normed", "fc.weight", "fc.bias"], ["logits"], transB=1),
    ]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["scores"], axis=1))
        out = "scores"
    w, h = CNN_SPEC.size
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 1, h, w])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, n_classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="handmade")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _pooled(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Pooled conv features of the trunk (run by ONNX Runtime)."""
    import onnxruntime as ort

    trunk = onnx.ModelProto()
    trunk.CopyFrom(model)
    del trunk.graph.output[:]
    trunk.graph.output.append(helper.make_tensor_value_info("feat", TensorProto.FLOAT, ["N", C2]))
    sess = ort.InferenceSession(trunk.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(["feat"], {"image": x})[0])


def make_cnn(
    frames: list[np.ndarray],
    labels: list[str],
    classes: tuple[str, ...],
    *,
    seed: int = 0,
    softmax: bool = True,
    opset: int = 17,
    batch: int | str = "N",
) -> bytes:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    k = len(classes)
    weights = {
        "conv1.weight": rng.normal(0, 0.5, (C1, 1, 3, 3)),
        "conv1.bias": np.zeros(C1),
        "conv2.weight": rng.normal(0, 0.2, (C2, C1, 3, 3)),
        "conv2.bias": np.zeros(C2),
        "norm.mean": np.zeros(C2),
        "norm.std": np.ones(C2),
        "fc.weight": np.zeros((k, C2)),
        "fc.bias": np.zeros(k),
    }
    feats = _pooled(_graph(weights, k, softmax=softmax, opset=17), Preprocessor(CNN_SPEC).batch(frames))
    weights["norm.mean"] = feats.mean(axis=0)
    weights["norm.std"] = feats.std(axis=0) + 1e-6
    y = np.array([classes.index(lab) for lab in labels])
    clf = LogisticRegression(C=1.0, max_iter=5000).fit((feats - weights["norm.mean"]) / weights["norm.std"], y)
    coef, bias = clf.coef_, clf.intercept_
    if coef.shape[0] == 1:  # binary: scikit-learn keeps one row; the softmax head needs one per class
        coef, bias = np.vstack([-coef / 2, coef / 2]), np.concatenate([-bias / 2, bias / 2])
    weights["fc.weight"], weights["fc.bias"] = coef, bias
    return _graph(weights, k, softmax=softmax, opset=opset, batch=batch).SerializeToString()
