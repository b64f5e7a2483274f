"""What a bundle carries besides the model: reference distributions for drift detection, and
self-test vectors that prove the device computes what the cloud computed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from converters.bundle_writer import SelfTestVector
from converters.errors import ConverterError
from converters.onnx_export import run_probabilities
from edge_agent.errors import PreprocessError
from edge_agent.preprocessing import STAT_BINS, Preprocessor, decode_png_b64, encode_png_b64, stat_edges
from edgeline.core.protocol.manifest import Histogram, PreprocessSpec, Reference

CONFIDENCE_BINS = 20
#: Self-test frames are stored at most this many pixels on their longer side (they travel in the
#: manifest; a full 320x240 noisy frame is ~56 KB of base64, a 160x120 grey one ~15 KB).
SELFTEST_MAX_SIDE = 160


def histogram(values: Sequence[float] | np.ndarray, edges: np.ndarray) -> Histogram:
    """Normalised histogram over fixed edges; values outside the range count in the end bins."""
    v = np.clip(np.asarray(values, dtype=np.float64), edges[0], edges[-1])
    counts, _ = np.histogram(v, bins=edges)
    total = counts.sum()
    freqs = counts / total if total else np.zeros(len(counts))
    return Histogram(edges=tuple(float(e) for e in edges), freqs=tuple(round(float(f), 6) for f in freqs))


def build_reference(stats: Mapping[str, Sequence[float]], probs: np.ndarray, labels: Sequence[str]) -> Reference:
    """Input-statistics histograms (edges from :func:`edge_agent.preprocessing.stat_edges`), the
    top-class confidence histogram and the predicted class mix of the shipped model."""
    input_hists = {
        name: histogram(values, stat_edges(name, STAT_BINS)) for name, values in stats.items() if len(values)
    }
    conf = histogram(probs.max(axis=1), np.linspace(0.0, 1.0, CONFIDENCE_BINS + 1))
    counts = np.bincount(probs.argmax(axis=1), minlength=len(labels))
    mix = {lab: round(float(c) / max(1, len(probs)), 6) for lab, c in zip(labels, counts, strict=True)}
    return Reference(input_stats=input_hists, confidence=conf, class_mix=mix)


def compact_frame(frame: np.ndarray, spec: PreprocessSpec, max_side: int = SELFTEST_MAX_SIDE) -> np.ndarray:
    """The frame a self-test case stores: grey when the spec is grey (the colour conversion is then
    the identity), downscaled to ``max_side``. The ROI is relative, so it selects the same region."""
    img = frame
    if spec.color == "gray" and img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1.0:
        img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return img


def selftest_vectors(
    model: bytes,
    spec: PreprocessSpec,
    frames: Sequence[np.ndarray],
    labels: Sequence[str],
    *,
    max_side: int = SELFTEST_MAX_SIDE,
) -> list[SelfTestVector]:
    """Self-test cases whose expected outputs come from ONNX Runtime running the FINAL model on the
    exact image stored (PNG round trip included), through the shared preprocessing."""
    if not frames:
        raise ConverterError("no frames for self-test vectors")
    pre = Preprocessor(spec)
    stored = [decode_png_b64(encode_png_b64(compact_frame(f, spec, max_side))) for f in frames]
    try:
        x = np.stack([pre(img) for img in stored])
    except PreprocessError as exc:
        raise ConverterError(f"self-test frame cannot be preprocessed: {exc}") from exc
    probs = run_probabilities(model, x)
    if not np.all(np.isfinite(probs)):
        raise ConverterError("the model produces NaN or infinity on the self-test frames")
    return [SelfTestVector(img, p.tolist(), lab) for img, p, lab in zip(stored, probs, labels, strict=True)]
