"""The seventh synthetic family, sealed: the pcb. Its frames are pinned by hashes recorded when it was
added (the recipe of the other families' hash tests); the rest checks what any family must do (the
same seed gives the same bytes, every class renders as the others do, a defect changes the part
and only the part, every defect kind leaves a mark of its own, the part moves with its pose, the
bench and the dataset CLI know it), not how it looks: it is sealed. No model is built here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from converters.dataset import read_image
from converters.errors import DatasetError
from converters.synth import (
    ALL_CLASSES,
    FAMILIES,
    OOD_KINDS,
    Conditions,
    read_line_truth,
    render_batch,
    render_ood,
    render_part,
    write_line_video,
)
from converters.synth.pcb import PCB_SIZE, SCALE_JITTER, draw_pcb
from converters.synth.render import belt, camera, draw_part
from converters.synth.shape import PartShape
from converters.synth.video import _travel
from tests.converters import test_synth_families as families
from tests.converters.test_synth_casting import CASTING_HASHES
from tests.converters.test_synth_families import QUIET, _recorded, _sha, run_cli

ROOT = Path(__file__).resolve().parents[2]
OTHERS = ("plate", "flange", "bracket", "hexnut", "gasket", "casting")
DEFECTS = tuple(c for c in ALL_CLASSES if c != "ok")
STILL = Conditions(noise=0.0, blur=0.0, brightness_jitter=0.0, contrast_jitter=0.0, pcb_jitter_px=0.0,
                   pcb_rotation_deg=0.0)  # fmt: skip

#: sha256 of pcb frames (all part classes, OOD kinds), recorded when the family was added
PCB_HASHES = {
    "pcb/batch0": "c51f1c5f799bdf5bc90c5747c80a68a9551281d4987ee702c4faea2a5217f995",
    "pcb/chip": "3070470f95b3f9df49c692833c018a8230153bbccec98a43ea86c22cea1060ae",
    "pcb/crack": "72085ce61a6c52b3bdeb241d329ae0f2d04ac0125e67e792e8e8acf4fc4e6fc5",
    "pcb/dent": "b58c1f2315bec499a74f0bbb9576d5ba724da63b01f44a97c3f645063b967bb6",
    "pcb/empty": "925a51cc7cf0f5481df7263c7b0ec1c89e8b2a1bbe28f4d70bb24eece3ec27f1",
    "pcb/missing_hole": "8a691e2b4b3894b12169a3c74aa63d91f0eb6af8d16d461a6861665461535cb1",
    "pcb/ok": "24aa5e31b707cd1e792ffd2c210f066e9ac8e74c8e81a1311ab4771d8ea4076c",
    "pcb/ood/black": "6afa96ac6c310090609fd9c9287c4de1239fe83fd318e8fb89f8ff0733ff670b",
    "pcb/ood/blurred": "176d9d855bfa09dbcd6a010482df865ad95c71061e22723405b64698fbc54ea5",
    "pcb/ood/cat": "9dbaef8ed43fd57c9127ad7a3403f2e80d17122e95b32453fb27751cb79b629d",
    "pcb/ood/cup": "efbbccbed4ee0f889f47c2725ae1ae24dbe867b5f6b04ee1b644b18a6bd87dba",
    "pcb/ood/empty": "669c9ff4188992baa0898ca3d8e0d51b29d39b73cc21216353e90a3e4c783a2b",
    "pcb/ood/wrong_part": "7b50ae37a719b832ee3494aa5bc3b1a4c50df6af54475462529f4ee904d22fc0",
    "pcb/scratch": "54ab1dc5b6f504662576fe1800d2ad04a31b549c5c0f1a3bf9e64fc00e4259d2",
    "pcb/stain": "534a848ee3537c6632db90af21889d01c1f91e2de2813c199831b8a9093a2133",
}


def _shape(
    label: str = "ok", seed: int = 0, cond: Conditions | None = None, size: tuple[int, int] = (320, 240)
) -> PartShape:
    return draw_part(belt("pcb", size), "pcb", label, np.random.default_rng(seed), cond or Conditions())


def _frame(label: str, part_seed: int, cond: Conditions = QUIET, x_offset: float = 0.0) -> np.ndarray:
    return render_part(label, np.random.default_rng(1), conditions=cond, part_seed=part_seed, x_offset=x_offset,
                       family="pcb")  # fmt: skip


def _change(label: str, seed: int) -> np.ndarray:
    """Where the defect changed the frame: the same board (pose, look) rendered ok and with it."""
    return np.abs(_frame("ok", seed).astype(np.int16) - _frame(label, seed)).max(axis=2)


def test_pcb_frames_are_bit_for_bit_those_recorded_with_it() -> None:
    assert _recorded("pcb") == PCB_HASHES


def test_pcb_is_a_family_and_its_settings_leave_the_others_alone() -> None:
    assert FAMILIES[-1] == "pcb" and set(OTHERS) < set(FAMILIES)
    cond = Conditions(pcb_jitter_px=0.0, pcb_rotation_deg=0.0)
    assert _sha(render_batch(2, seed=0, conditions=cond)[0]) == families.PLATE_HASHES["batch0"]
    pinned = {**families.BEFORE_BRACKET, **families.BEFORE_HEXNUT, **families.HEXNUT_HASHES,
              **families.GASKET_HASHES, **CASTING_HASHES}  # fmt: skip
    for family in OTHERS[1:]:
        frames, _ = render_batch(2, seed=0, conditions=cond, family=family, classes=ALL_CLASSES)
        assert _sha(frames) == pinned[f"{family}/batch0"], family
        assert cond.jitter_for(family) == Conditions().jitter_for(family), family


def test_same_seed_same_bytes_other_seed_other_frames(tmp_path: Path) -> None:
    families.test_same_seed_same_bytes_other_seed_other_frames("pcb", tmp_path)


@pytest.mark.parametrize("label", [*ALL_CLASSES, "empty"])
def test_every_label_renders_on_the_pcb(label: str) -> None:
    """Every class renders, at several frame sizes, as BGR uint8 like the other families; a defect
    changes the frame against the same board, ok against itself does not."""
    for size in ((320, 240), (160, 120), (640, 480)):
        frame = render_part(label, np.random.default_rng(2), size=size, part_seed=3, family="pcb")
        other = render_part(label, np.random.default_rng(2), size=size, part_seed=3, family="plate")
        assert frame.shape == other.shape == (size[1], size[0], 3) and frame.dtype == other.dtype == np.uint8
    assert np.array_equal(_frame(label, 3), _frame(label, 3))
    assert np.array_equal(_frame(label, 3), _frame("ok", 3)) == (label == "ok")


@pytest.mark.parametrize("kind", DEFECTS)
def test_each_defect_marks_the_part_and_nothing_outside_it(kind: str) -> None:
    """The defect's mask (where ok and defective renders of one board differ) is non-empty, inside
    the part's outline and local; small kinds are small (a via never drilled: a few pixels)."""
    least = {"missing_hole": 10, "crack": 15, "chip": 40, "stain": 25, "dent": 30}.get(kind, 80)
    for seed in range(10):
        diff = _change(kind, seed)
        mark = diff > 6
        part = cv2.dilate(_shape(kind, seed, QUIET).mask, np.ones((3, 3), np.uint8)) > 0
        assert least <= int(mark.sum()) < 0.02 * diff.size, (seed, int(mark.sum()))
        assert not (diff > 0)[~part].any(), seed
        _, _, w, h = cv2.boundingRect(mark.astype(np.uint8))
        assert max(w, h) <= 0.6 * PCB_SIZE, (seed, w, h)


@pytest.mark.parametrize("kind", DEFECTS)
def test_each_defect_kind_has_its_own_look(kind: str) -> None:
    """Pale mask scratch and blister, a dark crack, a low-contrast stain, the belt through a chip and
    solid gold where a hole was: averaged over boards, each kind moves its pixels its own way."""
    shifts, peaks, darkest = [], [], []
    for seed in range(8):
        ok, bad = _frame("ok", seed), _frame(kind, seed)
        diff = np.abs(ok.astype(np.int16) - bad).max(axis=2)
        mark = diff > 6
        grey_ok = cv2.cvtColor(ok, cv2.COLOR_BGR2GRAY).astype(np.float32)
        grey_bad = cv2.cvtColor(bad, cv2.COLOR_BGR2GRAY).astype(np.float32)
        shifts.append(float((grey_bad - grey_ok)[mark].mean()))
        peaks.append(int(diff.max()))
        darkest.append(float(np.percentile(grey_bad[mark], 10)))
    shift = float(np.median(shifts))
    if kind == "stain":
        assert all(8 <= p <= 60 for p in peaks) and abs(shift) < 25, (peaks, shifts)
    elif kind == "crack":
        assert shift < -15, shifts
    elif kind == "chip":  # the belt shows through the bite (white fibres line the break)
        assert max(darkest) < 50, darkest
    else:  # scratch, dent (a blister) and missing_hole (gold where the belt showed) brighten
        assert shift > 8, shifts
    if kind == "dent":
        assert max(peaks) <= 45, peaks  # a blister is soft


def test_missing_hole_leaves_one_hole_undrilled() -> None:
    """The drills: three mounting holes, ten header holes and the vias; missing_hole drops one of them,
    keeps the outline, and where its drill was there is copper, not the dark belt."""
    kinds = set()
    for seed in range(12):
        ok, missing = _shape("ok", seed), _shape("missing_hole", seed)
        assert len(missing.holes) == len(ok.holes) - 1 and set(missing.holes) < set(ok.holes)
        assert np.array_equal(ok.mask, missing.mask) and missing.material().sum() > ok.material().sum()
        (gone,) = set(ok.holes) - set(missing.holes)
        kinds.add(round(gone.r, 1))
        a, b = (cv2.cvtColor(_frame(label, seed), cv2.COLOR_BGR2GRAY) for label in ("ok", "missing_hole"))
        ys, xs = np.mgrid[0:240, 0:320]
        core = np.hypot(xs - gone.x, ys - gone.y) < max(1.0, 0.6 * gone.r)
        assert b[core].mean() > a[core].mean() + 40, (seed, a[core].mean(), b[core].mean())
    assert len(kinds) >= 2  # not always the same kind of hole


def test_the_look_differs_from_board_to_board() -> None:
    """Two good boards at the same pose and scale: the same silhouette, other pixels over much of the
    face (shade, weave, gloss, legend, serial)."""
    img_a, img_b = belt("pcb", (320, 240)), belt("pcb", (320, 240))
    sa = draw_pcb(img_a, "ok", np.random.default_rng(1), jitter_px=0.0, rotation_deg=0.0, scale_jitter=0.0)
    sb = draw_pcb(img_b, "ok", np.random.default_rng(2), jitter_px=0.0, rotation_deg=0.0, scale_jitter=0.0)
    assert np.array_equal(sa.mask, sb.mask) and sa.angle == sb.angle == 0.0 and sa.size == sb.size == PCB_SIZE
    face = cv2.erode(sa.material(), np.ones((5, 5), np.uint8)) > 0
    diff = np.abs(img_a.astype(np.int16) - img_b).max(axis=2)
    assert (diff[face] > 3).mean() > 0.5


def test_the_part_moves_turns_and_scales_with_its_pose() -> None:
    """Its own jitter (12 px) and rotation (25 degrees) by default, a scale within 3%, all used;
    ``x_offset`` moves the board along the belt; the mask turns with the angle."""
    assert Conditions().jitter_for("pcb") == (12.0, 25.0)
    angles, shifts, scales = [], [], []
    for seed in range(40):
        shape = _shape("ok", seed)
        angles.append(shape.angle)
        shifts.append(max(abs(shape.centre[0] - 160), abs(shape.centre[1] - 120)))
        scales.append(shape.size / PCB_SIZE)
    assert 20 < max(abs(a) for a in angles) <= 25 and 9 < max(shifts) <= 12
    assert 1 - SCALE_JITTER <= min(scales) < 0.985 and 1.015 < max(scales) <= 1 + SCALE_JITTER
    here, there = _frame("ok", 5, STILL), _frame("ok", 5, STILL, x_offset=20.0)
    still = _shape("ok", 5, STILL)
    moved = draw_part(belt("pcb", (320, 240)), "pcb", "ok", np.random.default_rng(5), STILL, x_offset=20.0)
    assert np.array_equal(np.roll(still.mask, 20, axis=1), moved.mask)
    solid = np.roll(cv2.erode(still.material(), np.ones((5, 5), np.uint8)) > 0, 20, axis=1)
    moved_px = np.abs(np.roll(here, 20, axis=1).astype(np.int16) - there)[solid]
    assert moved_px.max() <= 1 and (moved_px > 0).mean() < 0.001  # the warp's fixed-point rounding
    for turn in (10.0, 25.0, 90.0):
        img = belt("pcb", (320, 240))
        flat = draw_pcb(img, "ok", np.random.default_rng(0), jitter_px=0.0, rotation_deg=0.0, scale_jitter=0.0)
        rng = np.random.default_rng(0)
        while (shape := draw_pcb(belt("pcb", (320, 240)), "ok", rng, jitter_px=0.0, rotation_deg=turn,
                                 scale_jitter=0.0)).angle < 0.9 * turn:  # fmt: skip
            pass
        expected = cv2.warpAffine(flat.mask, cv2.getRotationMatrix2D((160.0, 120.0), -shape.angle, 1.0), (320, 240))
        assert (np.abs(expected.astype(np.int16) - shape.mask) > 128).mean() < 0.01, turn
    for bad in (dict(pcb_rotation_deg=181.0), dict(pcb_jitter_px=41.0), dict(pcb_jitter_px=float("nan"))):
        with pytest.raises(DatasetError, match=next(iter(bad))):
            Conditions(**bad)


def test_the_pcb_lies_inside_the_frame_and_leaves_it_at_the_end_of_its_travel() -> None:
    wide = Conditions(noise=0.0, blur=0.0, brightness_jitter=0.0, contrast_jitter=0.0, pcb_jitter_px=15.0)
    for size in ((320, 240), (160, 120), (640, 480)):
        w, h = size
        k = w / 320
        for seed in range(30):
            shape = _shape("ok", seed, wide, size)
            lo, hi = shape.outline.min(axis=0), shape.outline.max(axis=0)
            assert lo[0] >= 4 * k and lo[1] >= 4 * k and hi[0] <= w - 4 * k and hi[1] <= h - 4 * k, (size, seed)
        for seed in range(4):
            frame = render_part("ok", np.random.default_rng(0), conditions=wide, size=size, part_seed=seed,
                                family="pcb")  # fmt: skip
            empty = render_part("empty", np.random.default_rng(0), conditions=wide, size=size, family="pcb")
            changed = np.abs(frame.astype(np.int16) - empty).max(axis=2) > 0
            border = np.concatenate([changed[:2].ravel(), changed[-2:].ravel(), changed[:, :2].ravel(),
                                     changed[:, -2:].ravel()])  # fmt: skip
            assert changed.any() and not border.any(), (size, seed)
    travel = _travel(320, "pcb")
    empty = render_part("empty", np.random.default_rng(0), conditions=QUIET, family="pcb")
    turned = Conditions(noise=0.0, blur=0.0, brightness_jitter=0.0, contrast_jitter=0.0, pcb_rotation_deg=180.0)
    for seed in range(6):
        for x in (-travel, travel):
            assert np.array_equal(_frame("ok", seed, turned, x_offset=x), empty), (seed, x)


def test_the_pcb_differs_from_the_other_families() -> None:
    """Another belt (by its mean colour), another outline (by its elongation or how much of its
    bounding rectangle it fills), other pixels."""
    sealed, _ = render_batch(2, seed=0, family="pcb", classes=ALL_CLASSES)
    mine = belt("pcb", (320, 240)).reshape(-1, 3).astype(np.float32).mean(axis=0)

    def outline(mask: np.ndarray) -> tuple[float, float]:
        found, _ = cv2.findContours((mask > 127).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        contour = max(found, key=cv2.contourArea)
        _, (w, h), _ = cv2.minAreaRect(contour)
        return max(w, h) / min(w, h), cv2.contourArea(contour) / (w * h)

    for other in OTHERS:
        frames, _ = render_batch(2, seed=0, family=other, classes=ALL_CLASSES)
        assert not any(np.array_equal(x, y) for x, y in zip(sealed, frames, strict=True)), other
        assert np.abs(belt(other, (320, 240)).reshape(-1, 3).mean(axis=0) - mine).max() > 25, other
    for seed in range(3):
        (long, fill), again = outline(_shape("ok", seed).mask), outline(_shape("ok", seed + 7).mask)
        assert 1.7 < long < 1.9 and abs(again[0] - long) < 0.05 and abs(again[1] - fill) < 0.02
        for other in OTHERS:
            theirs = outline(draw_part(belt(other, (320, 240)), other, "ok", np.random.default_rng(seed),
                                       Conditions()).mask)  # fmt: skip
            assert abs(theirs[0] - long) > 0.2 or abs(theirs[1] - fill) > 0.1, (other, seed, theirs)


def test_ood_frames_on_the_pcb_line() -> None:
    for seed in range(3):
        frames = {kind: render_ood(kind, np.random.default_rng(seed), family="pcb") for kind in OOD_KINDS}
        assert all(f.shape == (240, 320, 3) and f.dtype == np.uint8 for f in frames.values())
        assert frames["black"].mean() < 10
        assert np.array_equal(frames["empty"], render_part("empty", np.random.default_rng(seed), family="pcb"))
    seen = set()
    for seed in range(30):
        frame = render_ood("wrong_part", np.random.default_rng(seed), family="pcb", conditions=QUIET)
        matches = []
        for other in OTHERS:
            rng = np.random.default_rng(seed)
            rng.integers(0, 6)  # the pick
            img = belt("pcb", (320, 240))
            draw_part(img, other, "ok", rng, QUIET)
            if np.array_equal(camera(img, rng, QUIET, QUIET.lighting), frame):
                matches.append(other)
        assert len(matches) == 1, (seed, matches)
        seen.add(matches[0])
    assert seen == set(OTHERS)


def test_a_pcb_line_video_reads_back_with_its_family(tmp_path: Path) -> None:
    video = tmp_path / "sealed.avi"
    truth = write_line_video(video, n_parts=2, seed=1, labels=["chip", "ok"], family="pcb", enter_frames=2,
                             dwell_frames=1, gap_frames=1)  # fmt: skip
    back = read_line_truth(video)
    assert back.family == truth.family == "pcb" and [p.label for p in back.parts] == ["chip", "ok"]


def test_cli_writes_the_sealed_pcb_set(tmp_path: Path) -> None:
    code, text = run_cli("dataset", "synth", "--help")
    assert code == 0 and "'pcb' (the sealed family" in " ".join(text.split())
    out, ood = tmp_path / "sealed", tmp_path / "sealed_ood"
    code, text = run_cli(
        "dataset", "synth", str(out), "--family", "pcb", "--classes", "ok,missing_hole,stain", "--per-class", "2",
        "--seed", "99000", "--ood", str(ood), "--ood-kinds", "wrong_part,black", "--ood-per-kind", "1", "--json",
    )  # fmt: skip
    assert code == 0, text
    doc = json.loads(text)
    assert doc["family"] == "pcb" and (doc["jitter_px"], doc["rotation_deg"]) == Conditions().jitter_for("pcb")
    assert doc["counts"] == {"ok": 2, "missing_hole": 2, "stain": 2} and len(list(ood.rglob("*.png"))) == 2
    frames, labels = render_batch(2, seed=99000, classes=("ok", "missing_hole", "stain"), family="pcb")
    assert np.array_equal(read_image(out / "stain" / "stain_00001.png"), frames[labels.index("stain") + 3])
    code, text = run_cli("dataset", "synth", str(tmp_path / "turned"), "--family", "pcb", "--classes", "ok,dent",
                         "--per-class", "1", "--rotation", "90", "--jitter", "4", "--json")  # fmt: skip
    assert code == 0, text
    assert (json.loads(text)["rotation_deg"], json.loads(text)["jitter_px"]) == (90.0, 4.0)
    code, text = run_cli("dataset", "synth", str(tmp_path / "x"), "--family", "pcb", "--rotation", "200")
    assert code == 1 and "pcb_rotation_deg" in text


def test_the_bench_lists_the_pcb_and_refuses_unknown_families_before_building() -> None:
    """``--families`` names every family (the pcb among them) and an unknown name stops the bench at
    its arguments, before any key, dataset or model is made."""
    bench = [sys.executable, str(ROOT / "bench" / "bench_inspection.py"), "--families", "pcb,disc"]
    refused = subprocess.run(bench, capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 2 and "unknown part families ['disc']" in refused.stderr and not refused.stdout
    assert "known: plate, flange, bracket, hexnut, gasket, casting, pcb" in refused.stderr
