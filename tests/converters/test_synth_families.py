"""The held-out synthetic families: a second part (flange), extra defect kinds, out-of-distribution frames.

The plate's frames are pinned by hashes recorded before the flange, the extra kinds and the OOD
frames existed: models and tests that depend on them see the same pixels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cloud_registry.cli.main import cli
from converters.dataset import read_image, scan_image_folder
from converters.errors import DatasetError
from converters.synth import (
    CLASSES,
    EXTRA_DEFECTS,
    OOD_KINDS,
    Conditions,
    Lighting,
    generate_dataset,
    generate_ood,
    read_line_truth,
    render_batch,
    render_ood,
    render_part,
    write_line_video,
)
from converters.synth.render import belt

QUIET = Conditions(noise=0.0, blur=0.0, brightness_jitter=0.0, contrast_jitter=0.0)
FAMILIES = ("plate", "flange")

#: sha256 of plate frames, recorded with the renderer as it was before the second family
PLATE_HASHES = {
    "batch0": "7653d571b6eed5259f0cf21933e816e1b6abf4a26e24807138894e76bccdcffc",
    "batch1": "b3ebc38c6665b4ae8f5a6fc837fc7230e3b333bc6d1dc7886a241ca71d2bb9c9",
    "batch7": "c68910f8c9f9806fbc75bd329e95f60c258292dd532c0945dbd12fbc1e2a970a",
    "batch123": "1bcf1af920d7201de339ad2de21004834aa73ad40ecf3c2c3f9c8e630e7b8406",
    "ok": "b67439e73bada909de264156f5c1af1ac4b8337d76c58c1ef44cdb34c88b3852",
    "scratch": "bc7ab5ea73e3ced4bab58a4951e98ca5d20562b8eb1c5eb0ac13d333d388fc80",
    "dent": "2a0a80774e0ffdc6c7b83e79e5fa1bbac5d9f1d032bfbcda7df45d9cb12dfea3",
    "missing_hole": "78ad0f2fef93a616ad63a6b0905879566ba36d589f049ddfb06fa4edf92eeda2",
    "empty": "5e9aa5e5a0d6c807cdcae630881232107c0aa1a0f94e83cd71dbee8bb36af9b7",
}


def _sha(frames: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for f in frames:
        h.update(f.tobytes())
    return h.hexdigest()


def test_plate_frames_are_bit_for_bit_those_recorded_before_the_families() -> None:
    for seed in (0, 1, 7, 123):
        frames, _ = render_batch(2, seed=seed)
        assert _sha(frames) == PLATE_HASHES[f"batch{seed}"], seed
    cond = Conditions(lighting=Lighting(-30, 0.8, 0.3), blur=1.5, noise=6.0, jitter_px=12, rotation_deg=10)
    for label in (*CLASSES, "empty"):
        rng = np.random.default_rng(5)
        frames = [render_part(label, rng, conditions=cond) for _ in range(3)]
        frames.append(
            render_part(label, np.random.default_rng(9), part_seed=4, x_offset=-40.0, belt_shift=17, size=(160, 120))
        )
        assert _sha(frames) == PLATE_HASHES[label], label


def test_the_flange_settings_leave_the_plate_alone() -> None:
    cond = Conditions(flange_jitter_px=0.0, flange_rotation_deg=0.0)
    frames, _ = render_batch(2, seed=0, conditions=cond)
    assert _sha(frames) == PLATE_HASHES["batch0"]


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_bytes_other_seed_other_frames(family: str, tmp_path: Path) -> None:
    classes = (*CLASSES, *EXTRA_DEFECTS)
    a, la = render_batch(2, seed=3, classes=classes, family=family)
    b, _ = render_batch(2, seed=3, classes=classes, family=family)
    c, _ = render_batch(2, seed=4, classes=classes, family=family)
    assert la == list(classes) * 2
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    for run in ("one", "two"):
        generate_dataset(tmp_path / run, per_class=2, seed=3, classes=("ok", "crack", "chip"), family=family)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.png"))
    assert len(files) == 6
    assert all((tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes() for f in files)
    same, labels = render_batch(2, seed=3, classes=("ok", "crack", "chip"), family=family)
    assert np.array_equal(read_image(tmp_path / "one" / "crack" / "crack_00001.png"), same[labels.index("crack") + 3])


def test_the_families_differ_in_part_and_belt() -> None:
    plate, _ = render_batch(2, seed=0)
    flange, _ = render_batch(2, seed=0, family="flange")
    assert not any(np.array_equal(x, y) for x, y in zip(plate, flange, strict=True))
    plate_belt = belt("plate", (320, 240)).reshape(-1, 3).mean(axis=0)
    flange_belt = belt("flange", (320, 240)).reshape(-1, 3).mean(axis=0)
    assert flange_belt[0] > flange_belt[2] + 20  # blue-grey plastic
    assert abs(float(plate_belt[0] - plate_belt[2])) < 10  # green-grey rubber
    # the part's footprint: a 150x108 rectangle against a 132 px disc
    for family, aspect in (("plate", (1.25, 1.5)), ("flange", (0.95, 1.05))):
        ok = render_part("ok", np.random.default_rng(1), conditions=QUIET, part_seed=2, family=family)
        empty = render_part("empty", np.random.default_rng(1), conditions=QUIET, family=family)
        part = (np.abs(ok.astype(np.int16) - empty).max(axis=2) > 20).astype(np.uint8)
        _, _, w, h = cv2.boundingRect(part)
        assert aspect[0] <= w / h <= aspect[1], (family, w, h)


def test_the_flange_pose_comes_from_its_conditions() -> None:
    fixed = Conditions(noise=0.0, blur=0.0, brightness_jitter=0.0, contrast_jitter=0.0, flange_jitter_px=0.0)
    still = Conditions(
        noise=0.0, blur=0.0, brightness_jitter=0.0, contrast_jitter=0.0, flange_jitter_px=0.0, flange_rotation_deg=0.0
    )
    a = render_part("ok", np.random.default_rng(1), conditions=still, family="flange")
    b = render_part("ok", np.random.default_rng(2), conditions=still, family="flange")
    assert np.array_equal(a, b)  # no jitter, no rotation: the same flange
    c = render_part("ok", np.random.default_rng(1), conditions=fixed, family="flange")
    d = render_part("ok", np.random.default_rng(2), conditions=fixed, family="flange")
    assert not np.array_equal(c, d)  # full rotation by default: the bolt holes move
    with pytest.raises(DatasetError, match="flange_rotation_deg"):
        Conditions(flange_rotation_deg=200.0)
    with pytest.raises(DatasetError, match="flange_jitter_px"):
        Conditions(flange_jitter_px=-1.0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["scratch", "dent", "missing_hole", *EXTRA_DEFECTS])
def test_each_defect_changes_the_part_and_nothing_outside_it(family: str, kind: str) -> None:
    """Same part (pose), same camera: ok vs defect differs on the part (counted inside the part's
    footprint, from ok vs the empty belt) and nowhere else, and only locally."""
    least = {"crack": 20, "chip": 25}.get(kind, 100)
    for part_seed in range(8):
        ok = render_part("ok", np.random.default_rng(1), conditions=QUIET, part_seed=part_seed, family=family)
        bad = render_part(kind, np.random.default_rng(1), conditions=QUIET, part_seed=part_seed, family=family)
        empty = render_part("empty", np.random.default_rng(1), conditions=QUIET, family=family)
        footprint = (np.abs(ok.astype(np.int16) - empty).max(axis=2) > 0).astype(np.uint8)
        footprint = cv2.dilate(footprint, np.ones((3, 3), np.uint8)) > 0
        diff = np.abs(ok.astype(np.int16) - bad).max(axis=2)
        inside = int(((diff > 6) & footprint).sum())
        assert least <= inside < 0.05 * diff.size, (part_seed, inside)
        assert not (diff > 0)[~footprint].any(), part_seed


def test_a_stain_is_low_contrast_and_a_crack_is_dark() -> None:
    ok = render_part("ok", np.random.default_rng(1), conditions=QUIET, part_seed=5)
    stain = render_part("stain", np.random.default_rng(1), conditions=QUIET, part_seed=5)
    crack = render_part("crack", np.random.default_rng(1), conditions=QUIET, part_seed=5)
    assert 6 < int(np.abs(ok.astype(np.int16) - stain).max()) <= 45
    changed = np.abs(ok.astype(np.int16) - crack).max(axis=2) > 40
    assert changed.any() and int(cv2.cvtColor(crack, cv2.COLOR_BGR2GRAY)[changed].min()) < 80


def test_the_extra_kinds_are_only_rendered_when_named(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "default", per_class=1, seed=0, family="flange")
    assert sorted(scan_image_folder(tmp_path / "default").counts) == sorted(CLASSES)
    _, labels = render_batch(1, seed=0)
    assert not set(labels) & set(EXTRA_DEFECTS)
    res = generate_dataset(tmp_path / "named", per_class=1, seed=0, classes=("ok", *EXTRA_DEFECTS), family="flange")
    assert res.counts == {"ok": 1, "crack": 1, "stain": 1, "chip": 1} and res.family == "flange"


def test_unknown_family_kind_and_class_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(DatasetError, match="unknown part family 'disc'; known: plate, flange"):
        render_part("ok", rng, family="disc")
    with pytest.raises(DatasetError, match="unknown part family"):
        generate_dataset(tmp_path / "x", per_class=1, family="disc")
    with pytest.raises(DatasetError, match=r"unknown class 'rust'; known: .*crack, stain, chip"):
        generate_dataset(tmp_path / "x", per_class=1, classes=("ok", "rust"))
    with pytest.raises(DatasetError, match="unknown OOD kind 'dog'"):
        render_ood("dog", rng)
    with pytest.raises(DatasetError, match="unknown OOD kind"):
        generate_ood(tmp_path / "o", per_kind=1, kinds=("black", "dog"))
    with pytest.raises(DatasetError, match="seed"):
        generate_ood(tmp_path / "o", per_kind=1, seed=-1)


def _footprint(frame: np.ndarray, family: str) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Pixels that differ from the family's bare belt (frames rendered with QUIET), and their box."""
    region = (np.abs(frame.astype(np.int16) - belt(family, (320, 240))).max(axis=2) > 20).astype(np.uint8)
    region = cv2.morphologyEx(region, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    x, y, w, h = cv2.boundingRect(region)
    return region, (x, y, w, h)


def _edge_energy(frame: np.ndarray) -> float:
    grey = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (0, 0), 2.0)
    return float(np.abs(cv2.Sobel(grey, cv2.CV_32F, 1, 0)).mean())


@pytest.mark.parametrize("family", FAMILIES)
def test_ood_frames_look_as_named(family: str) -> None:
    part_edges = _edge_energy(render_part("ok", np.random.default_rng(0), family=family))
    for seed in range(6):
        rng = np.random.default_rng(seed)
        frames = {kind: render_ood(kind, rng, family=family) for kind in OOD_KINDS}
        assert all(f.shape == (240, 320, 3) and f.dtype == np.uint8 for f in frames.values())
        black = frames["black"]
        assert black.mean() < 10 and np.percentile(black, 99) < 20 and black.std() > 0.3  # dark, but a sensor
        blurred = frames["blurred"]
        assert _edge_energy(blurred) < 0.3 * part_edges
        assert cv2.GaussianBlur(cv2.cvtColor(blurred, cv2.COLOR_BGR2GRAY), (0, 0), 2.0).std() < 20

        quiet = np.random.default_rng(seed)
        q = {kind: render_ood(kind, quiet, family=family, conditions=QUIET) for kind in OOD_KINDS}
        empty, _ = _footprint(q["empty"], family)
        assert not empty.any()  # the belt alone
        cup, (_, _, _, ch) = _footprint(q["cup"], family)
        assert ch >= 0.5 * 240 and 0.1 < cup.mean() < 0.4  # a tall object
        cat, (_, _, cw, cat_h) = _footprint(q["cat"], family)
        assert cw >= 0.55 * 320 and cw > cat_h and 0.1 < cat.mean() < 0.4  # a long, lying animal
        _, (_, _, ww, wh) = _footprint(q["wrong_part"], family)
        if family == "plate":  # a flange on the plate line: round, 132 px + shadow
            assert abs(ww - wh) <= 6 and 125 <= ww <= 150, (ww, wh)
        else:  # a plate on the flange line: a 150x108 rectangle
            assert ww / wh > 1.25, (ww, wh)


def test_the_empty_ood_frame_is_the_empty_belt() -> None:
    for family in FAMILIES:
        a = render_ood("empty", np.random.default_rng(3), family=family)
        b = render_part("empty", np.random.default_rng(3), family=family)
        assert np.array_equal(a, b)


def test_generate_ood_writes_one_folder_per_kind_reproducibly(tmp_path: Path) -> None:
    for run in ("one", "two"):
        res = generate_ood(tmp_path / run, per_kind=2, seed=5, family="flange", image_format="png")
        assert res.counts == dict.fromkeys(OOD_KINDS, 2)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.png"))
    assert len(files) == 2 * len(OOD_KINDS)
    assert all((tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes() for f in files)
    assert scan_image_folder(tmp_path / "one").counts == dict.fromkeys(sorted(OOD_KINDS), 2)


def test_a_flange_line_video_reads_back_with_its_family(tmp_path: Path) -> None:
    video = tmp_path / "line.avi"
    truth = write_line_video(video, n_parts=2, seed=1, labels=["ok", "chip"], family="flange", enter_frames=2,
                             dwell_frames=1, gap_frames=1)  # fmt: skip
    back = read_line_truth(video)
    assert back.family == truth.family == "flange" and [p.label for p in back.parts] == ["ok", "chip"]


def run_cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return res.exit_code, res.output


def test_cli_help_names_families_kinds_and_ood() -> None:
    code, out = run_cli("dataset", "synth", "--help")
    assert code == 0
    for word in ("--family", "flange", "crack", "stain", "chip", "--ood", "--ood-kinds", "wrong_part"):
        assert word in out, word


def test_cli_writes_a_held_out_flange_set_and_ood_frames(tmp_path: Path) -> None:
    out, ood = tmp_path / "held", tmp_path / "ood"
    code, text = run_cli(
        "dataset", "synth", str(out), "--family", "flange", "--classes", "ok,crack,stain", "--per-class", "2",
        "--seed", "1000", "--brightness", "-30", "--contrast", "0.85", "--ood", str(ood), "--ood-kinds",
        "black,cat,wrong_part", "--ood-per-kind", "1", "--json",
    )  # fmt: skip
    assert code == 0, text
    doc = json.loads(text)
    assert doc["family"] == "flange" and doc["rotation_deg"] == 180.0 and doc["jitter_px"] == 10.0
    assert doc["counts"] == {"ok": 2, "crack": 2, "stain": 2}
    assert doc["ood_counts"] == {"black": 1, "cat": 1, "wrong_part": 1}
    cond = Conditions(lighting=Lighting(-30, 0.85))
    frames, labels = render_batch(2, seed=1000, conditions=cond, classes=("ok", "crack", "stain"), family="flange")
    assert np.array_equal(read_image(out / "stain" / "stain_00001.png"), frames[labels.index("stain") + 3])
    assert len(list(ood.rglob("*.png"))) == 3


def test_cli_refuses_unknown_family_class_and_kind(tmp_path: Path) -> None:
    code, out = run_cli("dataset", "synth", str(tmp_path / "x"), "--family", "disc")
    assert code == 2 and "'disc' is not one of 'plate', 'flange'" in out
    code, out = run_cli("dataset", "synth", str(tmp_path / "x"), "--classes", "ok,rust", "--per-class", "1")
    assert code == 1 and "unknown class 'rust'" in out
    code, out = run_cli("dataset", "synth", str(tmp_path / "x"), "--no-images", "--ood", str(tmp_path / "o"),
                        "--ood-kinds", "dog")  # fmt: skip
    assert code == 1 and "unknown OOD kind 'dog'" in out
    code, out = run_cli("dataset", "synth", str(tmp_path / "x"), "--family", "flange", "--rotation", "200")
    assert code == 1 and "flange_rotation_deg" in out
