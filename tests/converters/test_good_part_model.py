"""The good-part model on its own: the coarse maps of the signed residual, ONNX = numpy, and the
choice of its size by planted blemishes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from converters.anomaly import _avg_pool, calibrate, fit_good_part_model, score_numpy
from converters.anomaly_onnx import anomaly_only_onnx
from converters.blemish import COMPONENT_CHOICES, choose_components, detectability, pick_components
from converters.inspection_build import INSPECTION_SPEC
from converters.registration_fit import fit_registration
from converters.synth import Conditions, render_part
from edge_agent.preprocessing import Preprocessor
from edgeline.core.protocol.manifest import AnomalySpec

GRID = (20, 24)  # (h, w)


def _good(n: int, rng: np.random.Generator) -> np.ndarray:
    """Good 'parts': a fixed pattern, a random brightness ramp (what the PCA learns), pixel noise."""
    h, w = GRID
    ys, xs = np.mgrid[0:h, 0:w]
    base = np.sin(xs / 3.0) + np.cos(ys / 4.0)
    out = []
    for _ in range(n):
        ramp = rng.normal() * xs / w + rng.normal() * ys / h
        out.append((base + ramp + rng.normal(0, 0.3, (h, w))).reshape(-1))
    return np.asarray(out, np.float32)


def _stain(x: np.ndarray, depth: float) -> np.ndarray:
    """A broad, faint shift: 7x7 cells darker by ``depth`` (in units of the pixel noise 0.3)."""
    h, w = GRID
    img = x.reshape(h, w).copy()
    img[6:13, 8:15] -= depth * 0.3
    return img.reshape(-1)


def test_average_pool_leaves_the_padding_out_of_the_count() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 1, 9, 11)).astype(np.float32)
    for k in (3, 5, 9):
        got = _avg_pool(z, k)
        r = k // 2
        want = np.zeros_like(z)
        for y in range(9):
            for x in range(11):
                want[:, :, y, x] = z[:, :, max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1].mean(axis=(2, 3))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_faint_broad_stain_is_found_by_the_coarse_maps_not_by_the_fine_one() -> None:
    rng = np.random.default_rng(2)
    train, fresh = _good(300, rng), _good(200, rng)
    stained = np.stack([_stain(x, 1.2) for x in _good(100, rng)])
    fine_only = fit_good_part_model(train, GRID, components=8, coarse=())
    multi = fit_good_part_model(train, GRID, components=8)
    assert multi.coarse == (3, 5, 9) and multi.coarse_weight is not None
    for model, caught in ((fine_only, False), (multi, True)):
        good_tail = np.quantile(score_numpy(model, fresh).score, 0.99)
        found = float(np.mean(score_numpy(model, stained).score > good_tail))
        assert (found >= 0.9) if caught else (found <= 0.5), (model.coarse, found)


def test_coarse_maps_keep_the_fine_maps_units_on_good_parts() -> None:
    """Each coarse map is weighted to the fine map's tail: the combined score of good parts is within
    a small factor of the fine one, so the region cut and the hot-cell limit keep their meaning."""
    rng = np.random.default_rng(3)
    train, fresh = _good(300, rng), _good(200, rng)
    fine = score_numpy(fit_good_part_model(train, GRID, components=8, coarse=()), fresh).score
    multi = score_numpy(fit_good_part_model(train, GRID, components=8), fresh).score
    assert 1.0 <= np.median(multi) / np.median(fine) <= 1.6


def test_the_onnx_graph_computes_what_numpy_computes() -> None:
    rng = np.random.default_rng(4)
    train = _good(200, rng)
    model = fit_good_part_model(train, GRID, components=8)
    x = np.concatenate([_good(20, rng), np.stack([_stain(v, 2.0) for v in _good(20, rng)])])
    features = np.concatenate([x, rng.normal(size=(len(x), 5)).astype(np.float32)], axis=1)  # + other features
    cal = calibrate(score_numpy(model, train).score)
    spec = AnomalySpec(map_shape=GRID, center=cal.center, scale=cal.scale, unknown_global=0.5)
    sess = ort.InferenceSession(
        anomaly_only_onnx(model, cal, spec, features.shape[1]), providers=["CPUExecutionProvider"]
    )
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": features}), strict=True))
    want = score_numpy(model, features)
    np.testing.assert_allclose(out[spec.score_output][:, 0], want.score, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out[spec.map_output], want.maps, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out[spec.global_output][:, 0], want.global_, atol=1e-6)


def test_the_smallest_model_within_the_tie_of_the_best_is_picked() -> None:
    assert pick_components({24: 0.93, 48: 0.929, 96: 0.937}) == 24
    assert pick_components({24: 0.22, 48: 0.32, 96: 0.47}) == 96
    assert pick_components({24: 0.94, 48: 0.978, 96: 0.996}) == 48
    assert pick_components({24: 0.80, 48: 0.95, 96: 0.96}) == 48


def test_planted_blemishes_are_found_more_by_a_model_that_fits_the_parts() -> None:
    """On good plates, a model of 48 components finds more planted blemishes than one of 1."""
    frames = [render_part("ok", np.random.default_rng(s), conditions=Conditions(), family="plate") for s in range(90)]
    spec, _ = fit_registration(frames, INSPECTION_SPEC, "translate")
    pre = Preprocessor(spec)
    prepared = [pre.prepare(f) for f in frames]
    one = detectability(pre, prepared[:60], prepared[60:], components=1)
    many = detectability(pre, prepared[:60], prepared[60:], components=24)
    # the 3x3 signed map already lifts a one-component model (0.87 found); 24 components still find more
    assert many > one + 0.05, (one, many)
    k, found = choose_components(pre, prepared)
    assert str(k) in found and k in COMPONENT_CHOICES
