"""The isotropic registration window: a turn of the working image must be a turn of the part.

A window fitted on a part's extents across and down the frame scales the working image differently
on the two axes; turning a part back in it then shears it, by a different amount for every angle.
The build makes the window isotropic when its parts lie at large angles and the planted blemishes
say it pays (:func:`converters.registration_fit._isotropic`). Synthetic frames drawn here with
OpenCV: an asymmetric bar with holes on a plain belt, in a 4:3 frame."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from converters.inspection_build import INSPECTION_SPEC, build_inspection
from converters.line_gate import LineTargets
from converters.registration_fit import _isotropic, isotropic_window, replace_registration
from edge_agent.inference import inspect_frame
from edge_agent.model import LoadedModel
from edge_agent.preprocessing import Preprocessor
from edge_agent.registration import working_size
from edgeline.core.protocol.manifest import Registration

FRAME = (320, 240)  # width, height


def _part(rng: np.random.Generator, angle: float) -> np.ndarray:
    """A 320x240 grey frame: a bright bar with two holes and a notch (no symmetry), turned by
    ``angle`` degrees, a little off centre, with camera noise."""
    w, h = FRAME
    img = np.full((h, w), 60, np.float32)
    local = np.zeros((h, w), np.float32)
    cx, cy = w / 2 + rng.uniform(-8, 8), h / 2 + rng.uniform(-8, 8)
    cv2.rectangle(local, (int(cx - 60), int(cy - 26)), (int(cx + 60), int(cy + 26)), 1.0, -1)
    cv2.circle(local, (int(cx - 38), int(cy)), 9, 0.0, -1)
    cv2.circle(local, (int(cx + 30), int(cy - 10)), 5, 0.0, -1)
    cv2.rectangle(local, (int(cx + 44), int(cy + 12)), (int(cx + 60), int(cy + 26)), 0.0, -1)
    turn = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    local = cv2.warpAffine(local, turn, (w, h), flags=cv2.INTER_LINEAR)
    img += local * (170.0 + rng.uniform(-8, 8))
    img += rng.normal(0.0, 3.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _frames(n: int, seed: int, spread: float) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [_part(rng, float(rng.uniform(-spread, spread))) for _ in range(n)]


def test_isotropic_window_spans_as_many_frame_pixels_across_as_down() -> None:
    size = INSPECTION_SPEC.size
    for window in ((0.53, 0.82), (0.9, 0.3), (0.6, 0.6)):
        iso = isotropic_window(window, FRAME, size)
        across, down = iso[0] * FRAME[0] / size[0], iso[1] * FRAME[1] / size[1]
        assert abs(across - down) < 1e-9 or 1.0 in iso, (window, iso)
        assert iso[0] >= window[0] - 1e-12 and iso[1] >= window[1] - 1e-12  # it never cuts the part
        assert min(iso) >= 0.05 and max(iso) <= 1.0
    assert isotropic_window((0.9, 0.9), FRAME, size)[1] == 1.0  # clipped to the image
    work_w, work_h = working_size(Registration(window=isotropic_window((0.53, 0.82), FRAME, size)), size)
    assert abs(FRAME[0] / work_w - FRAME[1] / work_h) < 0.05  # the same scale on both axes


def test_a_turned_part_registers_alike_in_an_isotropic_window_not_in_a_stretched_one() -> None:
    """The same part at 0 and at 60 degrees, turned back by its axis: with the isotropic window the
    two registered images agree, with a stretched window the turn shears the part."""
    flat = _part(np.random.default_rng(5), 0.0)
    turned = _part(np.random.default_rng(5), 60.0)  # the same draws: the same part, turned
    size = INSPECTION_SPEC.size
    stretched = Registration(mode="rigid", window=(0.5, 0.9), max_angle=90.0)
    iso = stretched.model_copy(update={"window": isotropic_window(stretched.window, FRAME, size)})
    diffs = {}
    for name, reg in (("stretched", stretched), ("iso", iso)):
        pre = Preprocessor(replace_registration(INSPECTION_SPEC, reg))
        a, b = pre.prepare(flat).astype(np.float32), pre.prepare(turned).astype(np.float32)
        diffs[name] = float(np.mean(np.abs(a - b)))
    assert diffs["iso"] < 0.5 * diffs["stretched"], diffs


@pytest.fixture(scope="module")
def any_angle() -> list[np.ndarray]:
    return _frames(48, 11, spread=90.0)


def test_parts_at_any_angle_get_the_isotropic_window_when_it_finds_more_blemishes(any_angle: list[np.ndarray]) -> None:
    spec = replace_registration(INSPECTION_SPEC, Registration(mode="rigid", window=(0.5, 0.9), max_angle=90.0))
    angles = np.array([0.0, 50.0, -70.0, 85.0] * 12)
    chosen, reg, notes = _isotropic(any_angle, spec, spec.registration, angles)  # type: ignore[arg-type]
    assert notes["isotropic_window"].startswith("kept:"), notes
    assert reg.window == pytest.approx(isotropic_window((0.5, 0.9), FRAME, INSPECTION_SPEC.size))
    assert chosen.registration == reg
    found = [float(v.rstrip("%")) for v in notes["isotropic_window"].split("found ")[1].split(" -> ")]
    assert found[1] > found[0] + 2.0, notes


def test_the_choice_is_not_made_for_parts_turned_by_small_angles() -> None:
    frames = _frames(40, 12, spread=10.0)
    spec = replace_registration(INSPECTION_SPEC, Registration(mode="rigid", window=(0.5, 0.9)))
    angles = np.linspace(-10.0, 10.0, len(frames))
    chosen, reg, notes = _isotropic(frames, spec, spec.registration, angles)  # type: ignore[arg-type]
    assert notes == {} and chosen is spec and reg == spec.registration


def test_a_build_on_parts_at_any_angle_ships_the_window_and_the_device_reproduces_its_scores(
    any_angle: list[np.ndarray], tmp_path: Path, key_dir: Path
) -> None:
    """The whole build: the choice is in the report and the manifest's lineage, the manifest carries
    the window, and the device (its own preprocessing and ONNX Runtime) gives the cloud's scores."""
    (tmp_path / "line" / "ok").mkdir(parents=True)
    for i, frame in enumerate(any_angle):
        cv2.imwrite(str(tmp_path / "line" / "ok" / f"{i:03d}.png"), frame)
    res = build_inspection(
        tmp_path / "line",
        tmp_path / "b",
        key_dir=key_dir,
        targets=LineTargets(0.05, 0.2),
        force_unverified=True,
        components=24,  # no model-size choice: the window is what is tested
        folds=2,
    )
    note = res.report["registration"]["isotropic_window"]
    assert note == res.manifest.lineage["training"]["registration"]["isotropic_window"]
    reg = res.manifest.preprocessing.registration
    assert reg is not None and reg.mode == "rigid" and note.startswith("kept:"), note
    w, h = reg.window
    assert abs(w * FRAME[0] / INSPECTION_SPEC.size[0] - h * FRAME[1] / INSPECTION_SPEC.size[1]) < 1e-6
    assert res.report["registration"]["window"] == [round(w, 4), round(h, 4)]
    served = LoadedModel.load(res.manifest, res.bundle_dir / res.manifest.artifact.filename)
    assert served.self_test() <= 1e-3
    frames = _frames(6, 13, spread=90.0)
    x = np.stack([Preprocessor(res.manifest.preprocessing)(f) for f in frames])
    batch = served.run(x).anomaly_score
    assert batch is not None
    live = np.array([inspect_frame(served, f, i).verdict.anomaly_score for i, f in enumerate(frames)])
    np.testing.assert_allclose(live, batch.reshape(-1), rtol=0, atol=1e-5)
