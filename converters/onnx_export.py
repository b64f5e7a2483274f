"""scikit-learn pipeline -> ONNX, the way the device wants it.

* input ``input`` (float32, ``[N, F]``), one output ``probabilities`` (ZipMap off; skl2onnx's string
  ``label`` output and the nodes only it used are pruned);
* pinned opsets (:data:`TARGET_OPSET`), deduplicated ``opset_import`` (a graph of ``ai.onnx.ml`` ops
  can list the default domain twice, which the quantizer rejects: onnxruntime issue 15563);
* ``black_op={"Scaler", "LinearClassifier"}``: the scaler and linear layers become Sub/Div/MatMul/Add,
  which ONNX Runtime can quantize, instead of ``ai.onnx.ml`` operators, which it never quantizes;
* the PCA centring is folded into the scaler's Sub (``(x - m)/s - p = (x - (m + s p))/s``), and the
  Sub by zeros left behind is removed: one float vector of the feature width fewer in the file, and
  the MatMul still sees standardised inputs (which int8 needs: folding the scale into the PCA matrix
  instead wrecks per-tensor weight quantization).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from converters.errors import ConversionError
from converters.metrics import Agreement, agreement
from edge_agent.model import make_session
from edgeline.core.errors import EdgelineError

log = logging.getLogger(__name__)

TARGET_OPSET: dict[str, int] = {"": 17, "ai.onnx.ml": 3}
INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"


def fold_pca_centring(pipe: Pipeline) -> Pipeline:
    """A copy of ``pipe`` where a PCA right after a StandardScaler has zero mean and the scaler
    subtracts the combined offset. Same function, one vector fewer (whitening scales after the
    projection, so it is unaffected). Other pipelines come back as is."""
    steps = pipe.steps
    for i in range(len(steps) - 1):
        scaler, pca = steps[i][1], steps[i + 1][1]
        if (
            isinstance(scaler, StandardScaler)
            and isinstance(pca, PCA)
            and scaler.with_mean
            and scaler.with_std
            and scaler.mean_ is not None
            and scaler.scale_ is not None
        ):
            s2, p2 = copy.deepcopy(scaler), copy.deepcopy(pca)
            s2.mean_ = scaler.mean_ + scaler.scale_ * pca.mean_
            p2.mean_ = np.zeros_like(pca.mean_)
            new_steps = list(steps)
            new_steps[i] = (steps[i][0], s2)
            new_steps[i + 1] = (steps[i + 1][0], p2)
            return Pipeline(new_steps)
    return pipe


def dedupe_opsets(model: onnx.ModelProto) -> None:
    """Keep one ``opset_import`` entry per domain (the highest version); '' and 'ai.onnx' are one."""
    best: dict[str, int] = {}
    for op in model.opset_import:
        dom = "" if op.domain in ("", "ai.onnx") else op.domain
        best[dom] = max(best.get(dom, 0), op.version)
    del model.opset_import[:]
    for dom, ver in sorted(best.items()):
        model.opset_import.append(onnx.helper.make_opsetid(dom, ver))


def drop_zero_subs(model: onnx.ModelProto) -> int:
    """Remove ``Sub(x, 0)`` nodes (constant all-zero second input); returns how many were removed."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    removed = 0
    for node in list(graph.node):
        if node.op_type != "Sub" or len(node.input) != 2 or node.input[1] not in inits:
            continue
        if node.output[0] in outputs or np.any(numpy_helper.to_array(inits[node.input[1]])):
            continue
        src, dst = node.input[0], node.output[0]
        for other in graph.node:
            for k, name in enumerate(other.input):
                if name == dst:
                    other.input[k] = src
        graph.node.remove(node)
        removed += 1
    used = {name for n in graph.node for name in n.input}
    for init in list(graph.initializer):
        if init.name not in used:
            graph.initializer.remove(init)
    return removed


def keep_only_output(model: onnx.ModelProto, name: str) -> None:
    """Drop every graph output but ``name`` (skl2onnx adds a string ``label``; the device reads only
    probabilities), then the nodes, initializers and opset domains nothing uses any more."""
    graph = model.graph
    for out in [o for o in graph.output if o.name != name]:
        graph.output.remove(out)
    needed = {name}
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    for init in [i for i in graph.initializer if i.name not in needed]:
        graph.initializer.remove(init)
    used_domains = {n.domain or "" for n in graph.node}
    for op in [o for o in model.opset_import if o.domain not in ("", "ai.onnx") and o.domain not in used_domains]:
        model.opset_import.remove(op)


def sklearn_to_onnx(pipe: Pipeline, n_features: int) -> bytes:
    """Convert a fitted pipeline; returns the serialized, checked ONNX model."""
    exported = fold_pca_centring(pipe)
    clf = exported.steps[-1][1]
    try:
        onx = to_onnx(
            exported,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            options={id(clf): {"zipmap": False}},
            target_opset=TARGET_OPSET,
            black_op={"Scaler", "LinearClassifier"},
        )
    except Exception as exc:  # skl2onnx raises many unrelated types
        raise ConversionError(
            f"skl2onnx cannot convert {type(clf).__name__}: {str(exc).splitlines()[0][:300]}"
        ) from exc
    dedupe_opsets(onx)
    drop_zero_subs(onx)
    names = [o.name for o in onx.graph.output]
    if OUTPUT_NAME not in names:
        raise ConversionError(f"converted model has no {OUTPUT_NAME!r} output (outputs: {names})")
    keep_only_output(onx, OUTPUT_NAME)
    try:
        onnx.checker.check_model(onx)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"converted model fails the ONNX checker: {exc}") from exc
    return onx.SerializeToString()


def run_probabilities(model: bytes, x: np.ndarray, *, batch: int = 1, output: str = OUTPUT_NAME) -> np.ndarray:
    """Probabilities (or the named ``output``) from an ONNX model for a feature matrix or an NCHW
    tensor batch.

    Batch 1 by default, because that is how the device runs: a dynamically quantized model picks its
    activation scale per call from the whole batch, so a batch of 512 would not give the device's
    numbers (measured: 0.015 off on a self-test frame)."""
    try:
        sess = make_session(model)
    except EdgelineError as exc:
        raise ConversionError(str(exc)) from exc
    inp = sess.get_inputs()[0].name
    if sess.get_inputs()[0].shape[:1] == [1]:  # a model exported with a fixed batch of one
        batch = 1
    outs = [o.name for o in sess.get_outputs()]
    out = output if output in outs else outs[-1]
    parts = []
    try:
        for i in range(0, len(x), batch):
            parts.append(np.asarray(sess.run([out], {inp: x[i : i + batch].astype(np.float32, copy=False)})[0]))
    except Exception as exc:
        raise ConversionError(f"ONNX Runtime failed to run the model: {str(exc).splitlines()[0][:300]}") from exc
    return np.concatenate(parts).astype(np.float32, copy=False)


def conversion_parity(model: bytes, pipe: Any, x: np.ndarray) -> Agreement:
    """Label agreement and largest probability difference between scikit-learn and the ONNX model."""
    return agreement(pipe.predict_proba(x), run_probabilities(model, x))
