"""The good-part model on a colour grid, its residual spread measured on held-back parts, and the
choice of colour by planted patches."""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort

from converters.anomaly import _split_by_part, calibrate, fit_good_part_model, score_numpy, to_planes
from converters.anomaly_onnx import anomaly_only_onnx
from converters.blemish import patch, planted
from converters.inspection_build import INSPECTION_SPEC
from converters.registration_fit import fit_registration
from converters.synth import Conditions, render_part
from edgeline.core.protocol.manifest import AnomalySpec

H, W = 20, 24
ORANGE = np.array([52.0, 98.0, 170.0], np.float32)  # BGR
#: a neutral grey of the same grey level as ORANGE: a grey grid cannot tell them apart
GREY = float(cv2.cvtColor(ORANGE.reshape(1, 1, 3).astype(np.uint8), cv2.COLOR_BGR2GRAY)[0, 0])


def _parts(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Orange 'parts' with a grain of their own on a grey belt of the same grey level (uint8 BGR)."""
    ys, xs = np.mgrid[0:H, 0:W]
    disc = ((xs - W / 2) ** 2 + (ys - H / 2) ** 2) < (0.4 * H) ** 2
    out = []
    for _ in range(n):
        img = np.full((H, W, 3), GREY, np.float32)
        img[disc] = ORANGE * rng.uniform(0.95, 1.05)
        img += rng.normal(0, 3.0, (H, W, 1))  # grain: moves every channel alike
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _features(imgs: list[np.ndarray], colour: bool) -> np.ndarray:
    if colour:
        return np.stack([i.astype(np.float32).reshape(-1) / 64.0 for i in imgs])
    return np.stack([cv2.cvtColor(i, cv2.COLOR_BGR2GRAY).astype(np.float32).reshape(-1) / 64.0 for i in imgs])


def test_planes_follow_the_pixel_interleaved_layout() -> None:
    img = np.arange(H * W * 3, dtype=np.float32).reshape(H, W, 3)
    planes = to_planes(img.reshape(1, -1), (H, W), 3)
    for c in range(3):
        np.testing.assert_array_equal(planes[0, c], img[:, :, c])


def test_a_colour_grid_sees_a_patch_of_belt_colour_that_a_grey_grid_cannot() -> None:
    rng = np.random.default_rng(5)
    train, fresh = _parts(200, rng), _parts(100, rng)
    marked = [patch(p, W / 2 + 2, H / 2 - 1, 3.0, 0.8, np.array([GREY] * 3)) for p in _parts(100, rng)]
    for colour, caught in ((False, False), (True, True)):
        model = fit_good_part_model(_features(train, colour), (H, W), components=8, channels=3 if colour else 1)
        tail = np.quantile(score_numpy(model, _features(fresh, colour)).score, 0.99)
        found = float(np.mean(score_numpy(model, _features(marked, colour)).score > tail))
        assert (found >= 0.9) if caught else (found <= 0.2), (colour, found)


def test_the_colour_graph_computes_what_numpy_computes() -> None:
    rng = np.random.default_rng(6)
    mask = np.ones(H * W, np.float32)
    mask[: 2 * W] = 0.0  # two rows off the part
    model = fit_good_part_model(_features(_parts(120, rng), True), (H, W), components=8, mask=mask, channels=3)
    assert model.channels == 3 and model.coarse == (3, 5, 9)
    imgs = _parts(20, rng) + [patch(p, 9.0, 11.0, 3.0, 0.8, np.array([GREY] * 3)) for p in _parts(20, rng)]
    x = _features(imgs, True)
    features = np.concatenate([x, rng.normal(size=(len(x), 4)).astype(np.float32)], axis=1)
    cal = calibrate(score_numpy(model, x).score)
    spec = AnomalySpec(map_shape=(H, W), center=cal.center, scale=cal.scale, unknown_global=0.5)
    sess = ort.InferenceSession(
        anomaly_only_onnx(model, cal, spec, features.shape[1]), providers=["CPUExecutionProvider"]
    )
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": features}), strict=True))
    want = score_numpy(model, features)
    np.testing.assert_allclose(out[spec.score_output][:, 0], want.score, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out[spec.map_output], want.maps, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out[spec.global_output][:, 0], want.global_, atol=1e-6)


def test_a_part_and_its_copies_are_held_back_together() -> None:
    groups = np.repeat(np.arange(40), 3)
    held, fit = _split_by_part(groups, 0.25, np.random.default_rng(0))
    assert not set(groups[held]) & set(groups[fit])
    assert len(held) + len(fit) == len(groups) and len(set(groups[held])) == 10


def test_the_spread_measured_on_held_back_parts_holds_on_new_parts() -> None:
    """Every part has a texture of its own and two lit copies: held back by row, a part's copy
    teaches the PCA its texture and the spread comes out too small (z of new parts well above 1);
    held back by part it matches new parts."""
    rng = np.random.default_rng(7)
    n, p = 100, H * W
    texture = rng.normal(0, 1.0, (n, p)).astype(np.float32)
    x = np.concatenate([texture * g for g in (1.0, 1.1)])
    groups = np.concatenate([np.arange(n), np.arange(n)])
    new = rng.normal(0, 1.0, (300, p)).astype(np.float32)

    def z_spread(model_groups: np.ndarray | None) -> float:
        model = fit_good_part_model(x, (H, W), components=100, groups=model_groups, coarse=())
        d = new - model.mean
        resid = d - (d @ model.components.T) @ model.components
        return float(np.std(resid * model.inv_rsd))

    by_row, by_part = z_spread(None), z_spread(groups)
    assert by_row > 1.2, by_row
    assert 0.85 < by_part < 1.15, by_part


def test_patches_are_planted_only_when_asked() -> None:
    imgs = [render_part("ok", np.random.default_rng(s), conditions=Conditions(), family="gasket") for s in range(3)]
    assert len(planted(imgs)) == 3 * 4 and len(planted(imgs, patches=True)) == 3 * 6


def test_the_colour_grid_is_chosen_for_an_orange_gasket_on_a_grey_belt() -> None:
    frames = [render_part("ok", np.random.default_rng(s), conditions=Conditions(), family="gasket") for s in range(90)]
    spec, notes = fit_registration(frames, INSPECTION_SPEC.model_copy(update={"features": "pixels"}), "auto")
    assert spec.color == "bgr", notes
    assert notes["colour"].startswith("BGR")
