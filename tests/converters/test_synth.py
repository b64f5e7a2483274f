"""The synthetic line: determinism, classes that differ where they should, lighting, files, video."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from converters.dataset import read_image, scan_image_folder
from converters.errors import DatasetError
from converters.synth import (
    CLASSES,
    Conditions,
    Lighting,
    apply_lighting,
    generate_dataset,
    lighting_augment,
    read_line_truth,
    render_batch,
    render_part,
    write_line_video,
)
from edge_agent.preprocessing import input_stats


def test_same_seed_same_frames_other_seed_other_frames() -> None:
    a, la = render_batch(3, seed=5)
    b, lb = render_batch(3, seed=5)
    c, _ = render_batch(3, seed=6)
    assert la == lb == list(CLASSES) * 3
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert a[0].shape == (240, 320, 3) and a[0].dtype == np.uint8


@pytest.mark.parametrize("defect", ["scratch", "dent", "missing_hole"])
def test_a_defect_changes_only_a_small_part_of_the_plate(defect: str) -> None:
    """Same part (pose), same camera draw: the defect is the only difference, and it is local."""
    quiet = Conditions(noise=0.0, blur=0.0, brightness_jitter=0.0, contrast_jitter=0.0)
    ok = render_part("ok", np.random.default_rng(1), conditions=quiet, part_seed=42)
    bad = render_part(defect, np.random.default_rng(1), conditions=quiet, part_seed=42)
    diff = np.abs(ok.astype(np.int16) - bad.astype(np.int16)).max(axis=2) > 25
    assert 15 < diff.sum() < 0.05 * diff.size
    ys, xs = np.nonzero(diff)
    assert 60 < xs.mean() < 260 and 40 < ys.mean() < 200  # on the plate, not on the belt


def test_unknown_class_and_bad_conditions_are_refused() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(DatasetError, match="unknown class"):
        render_part("burr", rng)
    with pytest.raises(DatasetError, match="noise"):
        Conditions(noise=-1.0)
    with pytest.raises(DatasetError, match="contrast"):
        Lighting(contrast=0.0)
    with pytest.raises(DatasetError, match="brightness"):
        Lighting(brightness=float("nan"))


def test_apply_lighting_shifts_and_scales_and_saturates() -> None:
    img = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
    darker = apply_lighting(img, brightness=-40)
    assert darker[0, 200] == 160 and darker[0, 10] == 0  # saturates at 0
    flat = apply_lighting(img, contrast=0.5)
    assert flat[0, 0] == 64 and flat[0, 255] == 192 and flat[0, 128] == 128
    bgr = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    vig = apply_lighting(bgr, vignette=0.5)
    assert vig.shape == bgr.shape and vig[0, 0, 0] <= bgr[0, 0, 0]
    with pytest.raises(DatasetError):
        apply_lighting(img.astype(np.float32))


def test_a_darker_line_moves_the_drift_statistics() -> None:
    frames, _ = render_batch(5, seed=3)
    dark, _ = render_batch(5, seed=3, lighting=Lighting(brightness=-50, contrast=0.75))
    b = np.mean([input_stats(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))["brightness"] for f in frames])
    d = np.mean([input_stats(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))["brightness"] for f in dark])
    assert d < b - 0.12


def test_lighting_augment_draws_within_its_ranges() -> None:
    aug = lighting_augment(brightness=(-30.0, -30.0), contrast=(1.0, 1.0))
    img = np.full((8, 8), 100, np.uint8)
    assert int(aug(img, np.random.default_rng(0))[0, 0]) == 70
    with pytest.raises(DatasetError):
        lighting_augment(brightness=(10.0, -10.0))


def test_generated_folder_matches_in_memory_frames(tmp_path: Path) -> None:
    res = generate_dataset(tmp_path / "ds", per_class=3, seed=9, classes=("ok", "dent"))
    folder = scan_image_folder(tmp_path / "ds")
    assert res.counts == {"ok": 3, "dent": 3} and folder.counts == {"dent": 3, "ok": 3}
    frames, labels = render_batch(3, seed=9, classes=("ok", "dent"))
    on_disk = read_image(tmp_path / "ds" / "dent" / "dent_00002.png")
    assert np.array_equal(on_disk, frames[labels.index("dent") + 4])  # PNG is lossless


def test_generate_dataset_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="two classes"):
        generate_dataset(tmp_path / "x", per_class=2, classes=("ok",))
    with pytest.raises(DatasetError, match="per_class"):
        generate_dataset(tmp_path / "x", per_class=0)


def test_line_video_reads_back_with_its_ground_truth(tmp_path: Path) -> None:
    video = tmp_path / "line.avi"
    truth = write_line_video(video, n_parts=4, seed=2, labels=["ok", "dent", "ok", "missing_hole"])
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == len(truth.frames) == 4 * (8 + 6 + 8 + 2)
    assert frames[0].shape == (240, 320, 3)
    back = read_line_truth(video)
    assert back.frames == truth.frames and back.parts == truth.parts
    assert [p.label for p in back.parts] == ["ok", "dent", "ok", "missing_hole"]
    # the part sits still while inspected: consecutive inspect frames differ only by noise
    p = back.parts[1]
    a, b = frames[p.inspect_first].astype(np.int16), frames[p.inspect_last].astype(np.int16)
    assert np.abs(a - b).mean() < 8
    gap = next(f for f in back.frames if f.phase == "gap")
    assert gap.part == -1 and gap.label == "empty"


def test_line_video_refuses_an_unchecked_codec_and_missing_truth(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="avi"):
        write_line_video(tmp_path / "line.mov", n_parts=1)
    with pytest.raises(DatasetError, match="no ground truth"):
        read_line_truth(tmp_path / "nothing.avi")
