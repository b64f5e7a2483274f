"""Small, fast, real artifacts for tests: tiny image sets and a real signed bundle built with
scikit-learn + skl2onnx (a few hundred milliseconds), so agent and delivery tests do not depend on
the full training pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.keys import SigningKey
from edge_agent.preprocessing import Preprocessor
from edgeline.core.protocol.manifest import PreprocessSpec, Quantization, Reference, Target

LABELS = ("ok", "spot")
SPEC = PreprocessSpec(size=(32, 32), pixel_pool=(16, 16), features="pixels")


def tiny_frame(label: str, rng: np.random.Generator, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A grey BGR frame; 'spot' frames carry a dark disc. Enough for a linear model to separate."""
    h, w = size
    img = np.full((h, w, 3), 150, dtype=np.uint8)
    img = np.clip(img.astype(np.int16) + rng.integers(-12, 12, img.shape), 0, 255).astype(np.uint8)
    if label == "spot":
        cy, cx = int(rng.integers(h // 4, 3 * h // 4)), int(rng.integers(w // 4, 3 * w // 4))
        yy, xx = np.ogrid[:h, :w]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < (h // 6) ** 2] = 40
    return img


def tiny_frames(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    rng = np.random.default_rng(seed)
    labels = [LABELS[i % 2] for i in range(n)]
    return [tiny_frame(lab, rng) for lab in labels], labels


@dataclass
class TinyModel:
    onnx_bytes: bytes
    frames: list[np.ndarray]
    labels: list[str]


def tiny_model(seed: int = 0, *, flip: bool = False) -> TinyModel:
    """Train a logistic regression on tiny frames and convert it with skl2onnx (ZipMap off)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    frames, labels = tiny_frames(40, seed)
    pre = Preprocessor(SPEC)
    x = pre.batch(frames)
    y = np.array([LABELS.index(lab) for lab in labels])
    if flip:
        y = 1 - y
    clf = LogisticRegression(max_iter=500).fit(x, y)
    onx = to_onnx(
        clf,
        initial_types=[("input", FloatTensorType([None, x.shape[1]]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return TinyModel(onx.SerializeToString(), frames, labels)


def write_tiny_bundle(
    out_dir: Path,
    key: SigningKey,
    *,
    name: str = "tiny",
    version: int = 1,
    seed: int = 0,
    target: Target | None = None,
    sequence: int = 0,
    valid_days: float = 30.0,
    model: TinyModel | None = None,
    corrupt_expected: bool = False,
    issued_at: float | None = None,
    reference: Reference | None = None,
) -> Path:
    """A real signed bundle whose self-test vectors come from ONNX Runtime itself."""
    from converters.bundle_writer import SelfTestVector, build_manifest, write_bundle
    from edge_agent.model import make_session

    tm = model or tiny_model(seed)
    sess = make_session(tm.onnx_bytes)
    out_name = "probabilities"
    names = [o.name for o in sess.get_outputs()]
    if out_name not in names:
        out_name = names[-1]
    pre = Preprocessor(SPEC)
    vectors = []
    for frame, lab in zip(tm.frames[:2], tm.labels[:2], strict=True):
        probs = sess.run([out_name], {"input": pre(frame)[None, :]})[0][0]
        if corrupt_expected:
            probs = 1.0 - probs
        vectors.append(SelfTestVector(frame, probs.tolist(), lab))
    manifest = build_manifest(
        name=name,
        version=version,
        model_bytes=tm.onnx_bytes,
        input_name="input",
        input_shape=pre.output_shape,
        preprocessing=SPEC,
        labels=LABELS,
        selftest=vectors,
        quantization=Quantization(mode="float", note="test model"),
        target=target,
        sequence=sequence,
        valid_days=valid_days,
        output_name=out_name,
        now=issued_at,
        reference=reference,
    )
    return write_bundle(out_dir, tm.onnx_bytes, manifest, key)
