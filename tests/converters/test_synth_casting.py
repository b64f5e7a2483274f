"""The sixth synthetic family, sealed: the casting. Its frames are pinned by hashes recorded when it
was added (the recipe of the other families' hash tests); the rest checks what any family must do
(every class renders, a defect changes the part and only the part, the part moves with its pose and
its texture with the part, the dataset CLI writes it), not how it looks: it is sealed.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from converters.dataset import read_image
from converters.errors import DatasetError
from converters.synth import (
    ALL_CLASSES,
    EXTRA_DEFECTS,
    FAMILIES,
    OOD_KINDS,
    Conditions,
    read_line_truth,
    render_batch,
    render_ood,
    render_part,
    write_line_video,
)
from converters.synth.render import belt, camera, draw_part
from converters.synth.shape import PartShape
from converters.synth.video import _travel
from tests.converters import test_synth_families as families
from tests.converters.test_synth_families import QUIET, _recorded, _sha, run_cli

OTHERS = ("plate", "flange", "bracket", "hexnut", "gasket")

#: sha256 of casting frames (all part classes, OOD kinds), recorded when the family was added
CASTING_HASHES = {
    "casting/batch0": "b8c8260a148ed577390855b4114a824a0263e84d10bf9cb94bf93ada4fdeea31",
    "casting/chip": "2f8a077fd4dfcfa2c6ee6c6895a6b620c9a250aef23b14595341e680102d8514",
    "casting/crack": "ef370e4fda99ad45921586c39e82a361f746a65a137f5b0add5432cae3659205",
    "casting/dent": "d739bd0f1fd04c0764df294c5b3ef727a927edd9727313b54f06bcc89676299c",
    "casting/empty": "4ca3b5c56ca4bfa6de769f8a91380da28b015018caf41b2c71a8f8f0d51c1bce",
    "casting/missing_hole": "08c90c60ef0a4bec947b18d5a298c1ace2710d99a6b880680233cb421beb0954",
    "casting/ok": "72ff0f067893103fb31c2f24932b8ed3014fa494f81bb0151bb1bf5b86935377",
    "casting/ood/black": "6afa96ac6c310090609fd9c9287c4de1239fe83fd318e8fb89f8ff0733ff670b",
    "casting/ood/blurred": "051749a8503c4fae2ea839f616b4b45fe391f913f051b2c52fe12733733f7cd0",
    "casting/ood/cat": "03d40f6916410cc85c6b6fb20d9cd7d70872a870131bd7b0965df8e889e90632",
    "casting/ood/cup": "f3dc47d61f019e39bd5d35e8f9f78468a7e68c776d7de97539b7546b6e446356",
    "casting/ood/empty": "be51e41eab538beea3105a255552a0ca7dcd798eae67f07df8f2452a973204fe",
    "casting/ood/wrong_part": "56ab82f743adb5c424a12394c6f4af1fa178cd8f5f73c96a20e33749c2af2492",
    "casting/scratch": "270334700fbee47efdd46bc65d66a665353bff633e0a45fd1aad1cfc48604a0a",
    "casting/stain": "6c4028541f3a86384df385359a6eb61d4ee0473e1cc6c54fe25b5aa9bbf04b0a",
}


def _shape(
    label: str = "ok", seed: int = 0, cond: Conditions | None = None, size: tuple[int, int] = (320, 240)
) -> PartShape:
    return draw_part(belt("casting", size), "casting", label, np.random.default_rng(seed), cond or Conditions())


def _frame(label: str, part_seed: int, cond: Conditions = QUIET, x_offset: float = 0.0) -> np.ndarray:
    return render_part(label, np.random.default_rng(1), conditions=cond, part_seed=part_seed, x_offset=x_offset,
                       family="casting")  # fmt: skip


def test_casting_frames_are_bit_for_bit_those_recorded_with_it() -> None:
    assert _recorded("casting") == CASTING_HASHES


def test_casting_is_a_family_and_its_settings_leave_the_others_alone() -> None:
    assert "casting" in FAMILIES and set(OTHERS) < set(FAMILIES)
    cond = Conditions(casting_jitter_px=0.0, casting_rotation_deg=0.0)
    assert _sha(render_batch(2, seed=0, conditions=cond)[0]) == families.PLATE_HASHES["batch0"]
    pinned = {**families.BEFORE_BRACKET, **families.BEFORE_HEXNUT, **families.HEXNUT_HASHES,
              **families.GASKET_HASHES}  # fmt: skip
    for family in OTHERS[1:]:
        frames, _ = render_batch(2, seed=0, conditions=cond, family=family, classes=ALL_CLASSES)
        assert _sha(frames) == pinned[f"{family}/batch0"], family
        assert cond.jitter_for(family) == Conditions().jitter_for(family), family


def test_same_seed_same_bytes_other_seed_other_frames(tmp_path: Path) -> None:
    families.test_same_seed_same_bytes_other_seed_other_frames("casting", tmp_path)


@pytest.mark.parametrize("label", [*ALL_CLASSES, "empty"])
def test_every_label_renders_on_the_casting(label: str) -> None:
    """Every class renders, at several frame sizes, as BGR uint8; a defect changes the frame against
    the same part, ok against itself does not."""
    for size in ((320, 240), (160, 120), (640, 480)):
        frame = render_part(label, np.random.default_rng(2), size=size, part_seed=3, family="casting")
        assert frame.shape == (size[1], size[0], 3) and frame.dtype == np.uint8
    assert np.array_equal(_frame(label, 3), _frame(label, 3))
    assert np.array_equal(_frame(label, 3), _frame("ok", 3)) == (label == "ok")


@pytest.mark.parametrize("kind", ["scratch", "dent", "missing_hole", *EXTRA_DEFECTS])
def test_each_defect_changes_the_part_and_nothing_outside_it(kind: str) -> None:
    families.test_each_defect_changes_the_part_and_nothing_outside_it("casting", kind)


@pytest.mark.parametrize("kind", ["scratch", "dent", "missing_hole", *EXTRA_DEFECTS])
def test_a_defect_shows_but_is_not_the_brightest_thing_on_the_part(kind: str) -> None:
    """Where a defect changes the part, the change is plain (tens of grey levels somewhere; a stain is
    faint by design), yet the changed pixels are no brighter than the brightest of the good part
    (within a few grey levels: the lit wall of a dent may match a lit rib)."""
    for seed in range(8):
        ok, bad = _frame("ok", seed), _frame(kind, seed)
        diff = np.abs(ok.astype(np.int16) - bad).max(axis=2)
        changed = diff > 6
        grey_ok = cv2.cvtColor(ok, cv2.COLOR_BGR2GRAY)
        grey_bad = cv2.cvtColor(bad, cv2.COLOR_BGR2GRAY)
        part = _shape("ok", seed, QUIET).material() > 0
        assert int(diff.max()) >= (8 if kind == "stain" else 25), (seed, int(diff.max()))
        assert np.percentile(grey_bad[changed], 99) <= np.percentile(grey_ok[part], 99.5) + 8, seed


def test_the_texture_differs_from_part_to_part() -> None:
    """Two good parts at the same pose: the same silhouette, but another skin over most of the face
    (grain, porosity, tone), and a grain that is there at all (not a flat fill)."""
    still = Conditions(noise=0.0, blur=0.0, brightness_jitter=0.0, contrast_jitter=0.0, casting_jitter_px=0.0,
                       casting_rotation_deg=0.0)  # fmt: skip
    a, b = _frame("ok", 1, still), _frame("ok", 2, still)
    sa, sb = _shape("ok", 1, still), _shape("ok", 2, still)
    assert np.array_equal(sa.mask, sb.mask) and sa.angle == sb.angle == 0.0
    face = sa.face() > 0
    diff = np.abs(a.astype(np.int16) - b).max(axis=2)
    assert (diff[face] > 3).mean() > 0.5
    grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY).astype(np.float32) for f in (a, b)]
    grain = [g - cv2.GaussianBlur(g, (0, 0), 3.0) for g in grey]
    assert all(float(g[face].std()) > 3.0 for g in grain)
    assert float((grain[0] - grain[1])[face].std()) > 0.4 * float(grain[0][face].std())  # not the same grain


def test_the_part_and_its_texture_move_with_its_pose() -> None:
    """Its own jitter and rotation (10 px, any angle by default), within their bounds and using them;
    ``x_offset`` moves the part (mask and pixels) along the belt; the mask turns with the angle."""
    assert Conditions().jitter_for("casting") == (10.0, 180.0)
    angles, shifts = [], []
    for seed in range(40):
        shape = _shape("ok", seed)
        angles.append(shape.angle)
        shifts.append(max(abs(shape.centre[0] - 160), abs(shape.centre[1] - 120)))
    assert 150 < max(abs(a) for a in angles) <= 180 and 7 < max(shifts) <= 10
    still = Conditions(noise=0.0, blur=0.0, brightness_jitter=0.0, contrast_jitter=0.0, casting_jitter_px=0.0,
                       casting_rotation_deg=0.0)  # fmt: skip
    here, there = _frame("ok", 5, still), _frame("ok", 5, still, x_offset=20.0)
    still_shape = _shape("ok", 5, still)
    mask = still_shape.mask
    assert np.array_equal(np.roll(mask, 20, axis=1), draw_part(belt("casting", (320, 240)), "casting", "ok",
                          np.random.default_rng(5), still, x_offset=20.0).mask)  # fmt: skip
    solid = np.roll(cv2.erode(still_shape.material(), np.ones((5, 5), np.uint8)) > 0, 20, axis=1)
    assert np.array_equal(np.roll(here, 20, axis=1)[solid], there[solid])
    for turn in (30.0, 90.0, 135.0):
        cond = Conditions(casting_jitter_px=0.0, casting_rotation_deg=turn)
        rng = np.random.default_rng(0)
        while (shape := draw_part(belt("casting", (320, 240)), "casting", "ok", rng, cond)).angle < 0.9 * turn:
            pass
        expected = cv2.warpAffine(mask, cv2.getRotationMatrix2D((160.0, 120.0), -shape.angle, 1.0), (320, 240))
        assert (np.abs(expected.astype(np.int16) - shape.mask) > 128).mean() < 0.01, turn
    with pytest.raises(DatasetError, match="casting_rotation_deg"):
        Conditions(casting_rotation_deg=181.0)
    with pytest.raises(DatasetError, match="casting_jitter_px"):
        Conditions(casting_jitter_px=41.0)
    with pytest.raises(DatasetError, match="casting_jitter_px"):
        Conditions(casting_jitter_px=float("nan"))


def test_the_casting_lies_inside_the_frame_and_leaves_it_at_the_end_of_its_travel() -> None:
    wide = Conditions(noise=0.0, blur=0.0, brightness_jitter=0.0, contrast_jitter=0.0, casting_jitter_px=15.0)
    for size in ((320, 240), (160, 120), (640, 480)):
        w, h = size
        k = w / 320
        for seed in range(30):
            shape = _shape("ok", seed, wide, size)
            lo, hi = shape.outline.min(axis=0), shape.outline.max(axis=0)
            assert lo[0] >= 4 * k and lo[1] >= 4 * k and hi[0] <= w - 4 * k and hi[1] <= h - 4 * k, (size, seed)
            assert shape.mask.sum() > 0.1 * 255 * w * h, (size, seed)
        for seed in range(8):
            frame = render_part("ok", np.random.default_rng(0), conditions=wide, size=size, part_seed=seed,
                                family="casting")  # fmt: skip
            empty = render_part("empty", np.random.default_rng(0), conditions=wide, size=size, family="casting")
            changed = np.abs(frame.astype(np.int16) - empty).max(axis=2) > 0
            border = np.concatenate([changed[:2].ravel(), changed[-2:].ravel(), changed[:, :2].ravel(),
                                     changed[:, -2:].ravel()])  # fmt: skip
            assert changed.any() and not border.any(), (size, seed)
    travel = _travel(320, "casting")
    empty = render_part("empty", np.random.default_rng(0), conditions=QUIET, family="casting")
    for seed in range(6):
        for x in (-travel, travel):
            assert np.array_equal(_frame("ok", seed, x_offset=x), empty), (seed, x)


def test_missing_hole_leaves_one_boss_undrilled() -> None:
    """Five through-holes (a bore and four bosses); missing_hole drops one boss's hole and keeps the
    outline; where its hole was, there is metal, not the dim belt."""
    for seed in range(6):
        ok, missing = _shape("ok", seed), _shape("missing_hole", seed)
        assert len(ok.holes) == 5 and len(missing.holes) == 4 and set(missing.holes) < set(ok.holes)
        assert np.array_equal(ok.mask, missing.mask) and missing.material().sum() > ok.material().sum()
        (gone,) = set(ok.holes) - set(missing.holes)
        a, b = (cv2.cvtColor(_frame(label, seed), cv2.COLOR_BGR2GRAY) for label in ("ok", "missing_hole"))
        ys, xs = np.mgrid[0:240, 0:320]
        core = np.hypot(xs - gone.x, ys - gone.y) < 0.6 * gone.r
        assert b[core].mean() > a[core].mean() + 40, (seed, a[core].mean(), b[core].mean())


def test_the_casting_differs_from_the_other_families() -> None:
    """Another belt, another outline (by its shape moments), other pixels than each of the five others."""
    sealed, _ = render_batch(2, seed=0, family="casting", classes=ALL_CLASSES)
    mine = belt("casting", (320, 240)).reshape(-1, 3).astype(np.float32).mean(axis=0)

    def contour(mask: np.ndarray) -> np.ndarray:
        found, _ = cv2.findContours((mask > 127).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        return max(found, key=cv2.contourArea)

    for other in OTHERS:
        frames, _ = render_batch(2, seed=0, family=other, classes=ALL_CLASSES)
        assert not any(np.array_equal(x, y) for x, y in zip(sealed, frames, strict=True)), other
        assert np.abs(belt(other, (320, 240)).reshape(-1, 3).mean(axis=0) - mine).max() > 25, other
    for seed in range(3):
        ours = contour(_shape("ok", seed).mask)
        assert cv2.matchShapes(ours, contour(_shape("ok", seed + 7).mask), cv2.CONTOURS_MATCH_I1, 0) < 0.02
        for other in OTHERS:
            theirs = contour(draw_part(belt(other, (320, 240)), other, "ok", np.random.default_rng(seed),
                                       Conditions()).mask)  # fmt: skip
            assert cv2.matchShapes(ours, theirs, cv2.CONTOURS_MATCH_I1, 0) > 0.05, (other, seed)


def test_ood_frames_on_the_casting_line() -> None:
    for seed in range(4):
        frames = {kind: render_ood(kind, np.random.default_rng(seed), family="casting") for kind in OOD_KINDS}
        assert all(f.shape == (240, 320, 3) and f.dtype == np.uint8 for f in frames.values())
        assert frames["black"].mean() < 10
        assert np.array_equal(frames["empty"], render_part("empty", np.random.default_rng(seed), family="casting"))
    seen = set()
    for seed in range(30):
        frame = render_ood("wrong_part", np.random.default_rng(seed), family="casting", conditions=QUIET)
        matches = []
        for other in OTHERS:
            rng = np.random.default_rng(seed)
            rng.integers(0, 5)  # the pick
            img = belt("casting", (320, 240))
            draw_part(img, other, "ok", rng, QUIET)
            if np.array_equal(camera(img, rng, QUIET, QUIET.lighting), frame):
                matches.append(other)
        assert len(matches) == 1, (seed, matches)
        seen.add(matches[0])
    assert seen == set(OTHERS)


def test_a_casting_line_video_reads_back_with_its_family(tmp_path: Path) -> None:
    video = tmp_path / "sealed.avi"
    truth = write_line_video(video, n_parts=2, seed=1, labels=["crack", "ok"], family="casting",
                             enter_frames=2, dwell_frames=1, gap_frames=1)  # fmt: skip
    back = read_line_truth(video)
    assert back.family == truth.family == "casting" and [p.label for p in back.parts] == ["crack", "ok"]


def test_cli_writes_the_sealed_casting_set(tmp_path: Path) -> None:
    out, ood = tmp_path / "sealed", tmp_path / "sealed_ood"
    code, text = run_cli(
        "dataset", "synth", str(out), "--family", "casting", "--classes", "ok,missing_hole,crack", "--per-class",
        "2", "--seed", "99000", "--ood", str(ood), "--ood-kinds", "wrong_part,black", "--ood-per-kind", "1",
        "--json",
    )  # fmt: skip
    assert code == 0, text
    doc = json.loads(text)
    jitter, rotation = Conditions().jitter_for("casting")
    assert doc["family"] == "casting" and doc["rotation_deg"] == rotation and doc["jitter_px"] == jitter
    assert doc["counts"] == {"ok": 2, "missing_hole": 2, "crack": 2}
    assert doc["ood_counts"] == {"wrong_part": 1, "black": 1}
    frames, labels = render_batch(2, seed=99000, classes=("ok", "missing_hole", "crack"), family="casting")
    assert np.array_equal(read_image(out / "crack" / "crack_00001.png"), frames[labels.index("crack") + 3])
    assert len(list(ood.rglob("*.png"))) == 2
    # --jitter and --rotation set the casting's pose, not the plate's
    code, text = run_cli("dataset", "synth", str(tmp_path / "turned"), "--family", "casting", "--classes",
                         "ok,dent", "--per-class", "1", "--rotation", "20", "--jitter", "4", "--json")  # fmt: skip
    assert code == 0, text
    doc = json.loads(text)
    assert doc["rotation_deg"] == 20.0 and doc["jitter_px"] == 4.0
    cond = Conditions(casting_rotation_deg=20.0, casting_jitter_px=4.0)
    frames, _ = render_batch(1, seed=0, conditions=cond, classes=("ok", "dent"), family="casting")
    assert np.array_equal(read_image(tmp_path / "turned" / "dent" / "dent_00000.png"), frames[1])
    code, out_text = run_cli("dataset", "synth", str(tmp_path / "x"), "--family", "casting", "--rotation", "200")
    assert code == 1 and "casting_rotation_deg" in out_text
