"""The held-out synthetic families: a second part (flange), a third (bracket, used for the first
final evaluation), a fourth (hexnut, used for the second), a fifth, sealed one (gasket), extra
defect kinds, out-of-distribution frames.

The plate's frames are pinned by hashes recorded before the flange, the extra kinds and the OOD
frames existed, the flange's, the plate's extra kinds and both families' OOD frames by hashes
recorded before the bracket, and the bracket's by hashes recorded before the hex nut: models and
tests that depend on them see the same pixels. The hex nut's and the gasket's own are pinned by
hashes recorded when each was added. The gasket's tests check only what any family must do, not how
it looks: it is sealed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from converters.dataset import read_image, scan_image_folder
from converters.errors import DatasetError
from converters.synth import (
    ALL_CLASSES,
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
from converters.synth.render import belt, camera, draw_part
from converters.synth.video import _travel
from edgeline.cli.main import cli

QUIET = Conditions(noise=0.0, blur=0.0, brightness_jitter=0.0, contrast_jitter=0.0)
FAMILIES = ("plate", "flange", "bracket", "hexnut", "gasket")

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


#: sha256 of plate and flange frames (all part classes, OOD kinds), recorded before the bracket
BEFORE_BRACKET = {
    "flange/batch0": "857f8e510508ef8ae03f91a5049aef02fb85cba4f161c317cef19f9d766ace38",
    "flange/chip": "13bace4ebfcbb2e615abadd8a2cc632c8d4bdf721551ff2947df9d90694d301e",
    "flange/crack": "0aac80d140682984458e54c69e37c2ab96e5fe981ddbb9529ebe4cc866b9ae1d",
    "flange/dent": "c83756377c5dce13f3ccf2a7051432f7575100e7ba320d833f0c062840850351",
    "flange/empty": "611cf2f77cbb0b74e3503cfdde66f37ffc70d7f28bb0b2a9312216d746894a8a",
    "flange/missing_hole": "8c1e9292576dd99a8d44edb6979adc0c4d0d238f7d908e5e1bc5c5b2918ab040",
    "flange/ok": "5b8f40a4a80772216e4c9253d59a153d893d1d9bfc2fee9515b7236d2ffe34f8",
    "flange/ood/black": "6afa96ac6c310090609fd9c9287c4de1239fe83fd318e8fb89f8ff0733ff670b",
    "flange/ood/blurred": "64c525c65df61c7834bbacb4144c784b8c81746fd29dc9edd24cfc089acfc17e",
    "flange/ood/cat": "2edc32040a4983ad2d2e202d22f025eb6e802b240db62874fc8e01487bcd1de6",
    "flange/ood/cup": "341af5be85307fd166f2fe42b2f0360cb1d2554d4997fd250a60dc72b014cbb4",
    "flange/ood/empty": "a0ef11bc02786a5ada7a46b85dfacda6c9a66e2bf3977db2940d3055680ed0e7",
    "flange/ood/wrong_part": "8464cdbb00be0707f73be6b9a4b0043f80bf93b9aabaf661ce252a4252f0d4d4",
    "flange/scratch": "6daaecf8ed40dc95cd539ba60fd8591df3a29016cb3e88b9dcd51b5de9e70f69",
    "flange/stain": "2a3fabac6f6e8a92e49ddaa495b1b3856b1a5a0202e17fc52ea2dace67e221c2",
    "plate/batch0": "7ea8e8eba13bd6ec7e15a209b7e107c0e283ff964355b2287cb7ffb8400043f7",
    "plate/chip": "d74cf2c250a2fd8a080c8a3389e0a73a1bc7ce2e929a62b0af408f4ea9b20700",
    "plate/crack": "750377316d636fcb7f8ec7605c6567413a6daddc55d8316e903a6ee80ae96c1d",
    "plate/dent": "284b495dec4ea6e174c26e9429099c901a3aaa110774fae7b792302447039999",
    "plate/empty": "39d208b67816e0f36e8125b3ca07e00bee84705c96f769cea1a8604cd81b8bf2",
    "plate/missing_hole": "922c6b3f13c825d608711b73b9607176328074a905bbec5211e341203f9841a7",
    "plate/ok": "5ff985d2b8ae73bc85c182452ba14bb3f6dbc0bb08340bb05459c7000937c0e8",
    "plate/ood/black": "6afa96ac6c310090609fd9c9287c4de1239fe83fd318e8fb89f8ff0733ff670b",
    "plate/ood/blurred": "11e25b57f5354da7fd975949d4044bc762cb9d0591116f7e4a38f6b081aced22",
    "plate/ood/cat": "fe3d5f99f5f394d2cb8571ef2cd089c73356c20646c83799ddab4d8a0443d7b5",
    "plate/ood/cup": "d5c5ae1a0dba1d1b3f60923391d2e650c7e12a67dbb8db7471be758dd67e028e",
    "plate/ood/empty": "2dbe2fddae5b740f7e17906471daabb4d57c08191d0ecf1125d02ba019d11e3e",
    "plate/ood/wrong_part": "eb3cf4649469f2eb4c2aafe385c2a963b1de7789a39fb182f3518f71ef62ec8b",
    "plate/scratch": "f4145a53a56e133cc2688478ba615c3600b854307a6919b5d34f52170897a68c",
    "plate/stain": "4bb77e7c575c44abb762c63e5e1374e3f159fe57864c9c50a338b944cac48d94",
}


#: sha256 of bracket frames (all part classes, OOD kinds), recorded before the hex nut (see _recorded)
BEFORE_HEXNUT = {
    "bracket/batch0": "a784e2ea73906e3f14d09ab805ef5794d5679ea68da21ea75deef99287f770ef",
    "bracket/chip": "5c3dc5e2e298d9976a8218a08e07608c6ffe7e9ebe8f7f709518bee284382184",
    "bracket/crack": "8c2a310cdf796a478ad8d3ee08633b98a29e564b57304b9a5d8ec995e9268dee",
    "bracket/dent": "2861d8ee050d03854a435316eaf807760e7ef91736ea9305a06898dc4bc33e97",
    "bracket/empty": "0a4297f1dfaa69d9f1eafa0cf7754ac5a5ca5c41f1f13277ebd793ca7cfb5aec",
    "bracket/missing_hole": "d8bd48b7b9444514f196c03ae7d714d77f1c13e498cf42cea62910f5c781d860",
    "bracket/ok": "89fac8ae4d7cdf1db44a64b379f3c4ec907999baa9e3b1b73a0ca0c6ec30b84b",
    "bracket/ood/black": "6afa96ac6c310090609fd9c9287c4de1239fe83fd318e8fb89f8ff0733ff670b",
    "bracket/ood/blurred": "aefbe7736675034a22c944a43bdbef32359ba95774df58698f0c96c725e2d38d",
    "bracket/ood/cat": "e1aee734f41b242f651eecc133b098caa01adb8b0bdb54330e0f82b45b435a01",
    "bracket/ood/cup": "7d0e55b85bfeda7d34917b6bc84be556c351be37e74b492763ea4879a6a84d99",
    "bracket/ood/empty": "d6ae464dad70f0b5390d788987b6ef6a4e54a42fe4425ff5e2f289c98e36c16b",
    "bracket/ood/wrong_part": "caf964248180ebda6c6c9de077cf0cc24d84b6457c0074724a8a4110b3562e80",
    "bracket/scratch": "9a1456ea5d926b7ce7d04cccf3db0ae5d521bc7a0a77254e770d45b4689953c9",
    "bracket/stain": "88ebb3e5f87e672ee71750ffd8af521b12703fe0a72571ed3efb6677e0e7b002",
}

#: sha256 of hex nut frames (all part classes, OOD kinds), recorded when the family was added
HEXNUT_HASHES = {
    "hexnut/batch0": "7d0fecb9c16bfacb1b0651faf1fb734f9c83670db48fa5f7476839afec48960c",
    "hexnut/chip": "e73098ed3a3279ca5ce919b76d58b96f46360414a8179d1da162c4dfed2b731d",
    "hexnut/crack": "a897bb704ea0fde368135eafe6a0fec3f36cc5d29d53bfd8bc18ee3bd29b526a",
    "hexnut/dent": "8be6a08e9557104f92ef36883a16b9567b14b42681329882cc2645c3e7f8733c",
    "hexnut/empty": "348cd86f699b04230524d3a7bc412ebc672634d4f54e58d6a4df3fea6380b3b0",
    "hexnut/missing_hole": "cc7f4770f155d08cd72c29dc52f6d88a259320cf1c66d6e32887ff2766d0f0dd",
    "hexnut/ok": "7d6ba7579f60ed82bdbdc10640393c6dd9f8b49e48d8f9aa30d6d12fe17281ad",
    "hexnut/ood/black": "6afa96ac6c310090609fd9c9287c4de1239fe83fd318e8fb89f8ff0733ff670b",
    "hexnut/ood/blurred": "236234a59b4dea477df11f02efd8de013286d8492b2601d00b11c51abf4f4fbc",
    "hexnut/ood/cat": "2391c2126e6b88461aaccee162abca66ea8b37c38b8f797f4fe7ba8d31209d33",
    "hexnut/ood/cup": "754534e3bb1f76279619b51cb22c46fc268b8103957ea7fc7eac7694ae5445e2",
    "hexnut/ood/empty": "d0aa62794042e4e907e335a1247097510f3b000c0c78903fd58fc2b600053918",
    "hexnut/ood/wrong_part": "c16a9a53afdecb5fa4e863f9e7899db553b1c46d509a95297a9edb26bd29be7c",
    "hexnut/scratch": "8bb450149fafd6fff51f3e5900c0c995ac4b361d9e28ea8518d7691c1d560aaa",
    "hexnut/stain": "9acfa0844a35d7f31118f3fb175e89b663b1ce1f8150dfaabedede0977f7375f",
}


#: sha256 of gasket frames (all part classes, OOD kinds), recorded when the family was added
GASKET_HASHES = {
    "gasket/batch0": "4b62bc72785dfe38267492c56a4ffab10fd538d32fd732f4e77c3ac452b02326",
    "gasket/chip": "670f99edd15c62e60cb35d26a00abe4bb0aa1dc550d90baab9209a9a45c66b08",
    "gasket/crack": "41aba2a41a4749bb1cdd3eb678129ec710ef5023e9b250307f514acd10ab975c",
    "gasket/dent": "1fb7024ca7cf497fc4292a44e59fa815cdfa994daeb55933a339108127dac24d",
    "gasket/empty": "f304d9c6f02b0f6ef948b885f95b35b18dcd29752008098f83e79ed8a0e2a1b0",
    "gasket/missing_hole": "8287e51c7d2d5383e6d9c6bbba181045f0ead4dc4e96c743256b75a8fcfb29be",
    "gasket/ok": "c8f530484e56656149df35d65a2ae0996bfde4da00e88bf2003c67df3e1b91d2",
    "gasket/ood/black": "6afa96ac6c310090609fd9c9287c4de1239fe83fd318e8fb89f8ff0733ff670b",
    "gasket/ood/blurred": "ac692823eb1571ee43ef346456a3f5e177249186a130b7572fc7013b05abf0f7",
    "gasket/ood/cat": "8711e87beaa08e3d7700e1b6f7fc25744e355bdaebdf836dec735d404cdb47e3",
    "gasket/ood/cup": "f97bd45775b8f9d4b258eeaf574c0ed5bf4b40fec3dd654770b7ec0103b033e0",
    "gasket/ood/empty": "6511d900c6566ead3d80b815d7337cda03532391b2041cc96ce65cc5d6cbaeb7",
    "gasket/ood/wrong_part": "61e395bfe9201d58d106857a846eb85c91935f3db6a3b5169a69cd13428cbbb7",
    "gasket/scratch": "59bbccb6570cb11ef8cda0fa136b3662089dff255b2dd853cf9c2d927ffc0caa",
    "gasket/stain": "db90bf5bef75155a250505649e1f597c0fbb43c2cd087e8cedaea811fddd15c3",
}


def _sha(frames: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for f in frames:
        h.update(f.tobytes())
    return h.hexdigest()


def _recorded(family: str) -> dict[str, str]:
    """The hashes of the recipe BEFORE_BRACKET was recorded with (a batch of every class; every class
    and the empty belt under harsh conditions, at three sizes, moved and shifted; every OOD kind)."""
    out = {f"{family}/batch0": _sha(render_batch(2, seed=0, family=family, classes=ALL_CLASSES)[0])}
    cond = Conditions(
        lighting=Lighting(-30, 0.8, 0.3), blur=1.5, noise=6.0, jitter_px=12, rotation_deg=10, flange_jitter_px=20
    )
    for label in (*ALL_CLASSES, "empty"):
        rng = np.random.default_rng(5)
        frames = [render_part(label, rng, conditions=cond, family=family) for _ in range(3)]
        frames.append(render_part(label, np.random.default_rng(9), part_seed=4, x_offset=-40.0, belt_shift=17,
                                  size=(160, 120), family=family))  # fmt: skip
        frames.append(render_part(label, np.random.default_rng(9), part_seed=4, x_offset=-200.0, size=(640, 480),
                                  family=family))  # fmt: skip
        out[f"{family}/{label}"] = _sha(frames)
    for kind in OOD_KINDS:
        rng = np.random.default_rng(11)
        frames = [render_ood(kind, rng, family=family) for _ in range(3)]
        frames.append(render_ood(kind, rng, family=family, conditions=cond, size=(200, 150)))
        out[f"{family}/ood/{kind}"] = _sha(frames)
    return out


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


@pytest.mark.parametrize("family", ["plate", "flange"])
def test_plate_and_flange_frames_are_bit_for_bit_those_recorded_before_the_bracket(family: str) -> None:
    """Every part class (the extra kinds too), several frame sizes, offsets, and every OOD kind."""
    assert _sha(render_batch(2, seed=0, family=family, classes=ALL_CLASSES)[0]) == BEFORE_BRACKET[f"{family}/batch0"]
    cond = Conditions(
        lighting=Lighting(-30, 0.8, 0.3), blur=1.5, noise=6.0, jitter_px=12, rotation_deg=10, flange_jitter_px=20
    )
    for label in (*ALL_CLASSES, "empty"):
        rng = np.random.default_rng(5)
        frames = [render_part(label, rng, conditions=cond, family=family) for _ in range(3)]
        frames.append(render_part(label, np.random.default_rng(9), part_seed=4, x_offset=-40.0, belt_shift=17,
                                  size=(160, 120), family=family))  # fmt: skip
        frames.append(render_part(label, np.random.default_rng(9), part_seed=4, x_offset=-200.0, size=(640, 480),
                                  family=family))  # fmt: skip
        assert _sha(frames) == BEFORE_BRACKET[f"{family}/{label}"], label
    for kind in OOD_KINDS:
        rng = np.random.default_rng(11)
        frames = [render_ood(kind, rng, family=family) for _ in range(3)]
        frames.append(render_ood(kind, rng, family=family, conditions=cond, size=(200, 150)))
        assert _sha(frames) == BEFORE_BRACKET[f"{family}/ood/{kind}"], kind


def test_the_bracket_settings_leave_the_plate_and_the_flange_alone() -> None:
    cond = Conditions(bracket_jitter_px=0.0, bracket_rotation_deg=0.0)
    assert _sha(render_batch(2, seed=0, conditions=cond)[0]) == PLATE_HASHES["batch0"]
    frames, _ = render_batch(2, seed=0, conditions=cond, family="flange", classes=ALL_CLASSES)
    assert _sha(frames) == BEFORE_BRACKET["flange/batch0"]


def test_bracket_frames_are_bit_for_bit_those_recorded_before_the_hexnut() -> None:
    assert _recorded("bracket") == BEFORE_HEXNUT


def test_hexnut_frames_are_bit_for_bit_those_recorded_with_it() -> None:
    assert _recorded("hexnut") == HEXNUT_HASHES


def test_gasket_frames_are_bit_for_bit_those_recorded_with_it() -> None:
    assert _recorded("gasket") == GASKET_HASHES


def test_the_gasket_settings_leave_the_other_families_alone() -> None:
    cond = Conditions(gasket_jitter_px=0.0, gasket_rotation_deg=0.0)
    assert _sha(render_batch(2, seed=0, conditions=cond)[0]) == PLATE_HASHES["batch0"]
    for family, pinned in (("flange", BEFORE_BRACKET), ("bracket", BEFORE_HEXNUT), ("hexnut", HEXNUT_HASHES)):
        frames, _ = render_batch(2, seed=0, conditions=cond, family=family, classes=ALL_CLASSES)
        assert _sha(frames) == pinned[f"{family}/batch0"], family


def test_the_hexnut_settings_leave_the_other_families_alone() -> None:
    cond = Conditions(hexnut_jitter_px=0.0, hexnut_rotation_deg=0.0)
    assert _sha(render_batch(2, seed=0, conditions=cond)[0]) == PLATE_HASHES["batch0"]
    for family, pinned in (("flange", BEFORE_BRACKET), ("bracket", BEFORE_HEXNUT)):
        frames, _ = render_batch(2, seed=0, conditions=cond, family=family, classes=ALL_CLASSES)
        assert _sha(frames) == pinned[f"{family}/batch0"], family


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


def _silhouette(frame: np.ndarray, family: str) -> np.ndarray:
    """Where a QUIET frame differs from its family's bare belt by more than 20 levels (part and shadow)."""
    return (np.abs(frame.astype(np.int16) - belt(family, (320, 240))).max(axis=2) > 20).astype(np.uint8)


def test_the_bracket_differs_from_the_plate_and_the_flange() -> None:
    """Another belt (warm, light wood against grey rubber and blue plastic), another outline (an L,
    not a convex plate or disc), a part darker than its belt (the others are brighter), other pixels."""
    bracket, _ = render_batch(2, seed=0, family="bracket", classes=ALL_CLASSES)
    for other in ("plate", "flange"):
        frames, _ = render_batch(2, seed=0, family=other, classes=ALL_CLASSES)
        assert not any(np.array_equal(x, y) for x, y in zip(bracket, frames, strict=True))
    wood = belt("bracket", (320, 240)).reshape(-1, 3).mean(axis=0)
    assert wood[2] > wood[0] + 40 and wood.mean() > 120  # warm and light
    for family in ("plate", "flange", "bracket"):
        for part_seed in range(4):
            ok = render_part("ok", np.random.default_rng(1), conditions=QUIET, part_seed=part_seed, family=family)
            region = _silhouette(ok, family)
            x, y, w, h = cv2.boundingRect(region)
            fill = float(region[y : y + h, x : x + w].mean())
            grey = cv2.cvtColor(ok, cv2.COLOR_BGR2GRAY).astype(np.float32)
            inner = cv2.erode(region, np.ones((9, 9), np.uint8)) > 0
            part_vs_belt = float(np.median(grey[inner])) - float(np.median(grey[region == 0]))
            if family == "bracket":
                assert fill < 0.7 and part_vs_belt < -40, (part_seed, fill, part_vs_belt)
            else:
                assert fill > 0.75 and part_vs_belt > 40, (family, part_seed, fill, part_vs_belt)


def test_the_bracket_shape_has_two_slots_two_holes_and_one_goes_missing() -> None:
    img = belt("bracket", (320, 240))
    ok = draw_part(img, "bracket", "ok", np.random.default_rng(3), Conditions())
    assert len(ok.holes) == 4 and sum(h.half_length > 0 for h in ok.holes) == 2
    assert ok.size == 150.0
    for seed in range(6):
        missing = draw_part(belt("bracket", (320, 240)), "bracket", "missing_hole", np.random.default_rng(seed),
                            Conditions())  # fmt: skip
        assert len(missing.holes) == 3
    # a slot is a slot: its through-hole is long, and cut out of the material
    slot = next(h for h in ok.holes if h.half_length > 0)
    solid = ok.material()
    along = (slot.x + 0.8 * slot.half_length * np.cos(np.radians(slot.angle)),
             slot.y + 0.8 * slot.half_length * np.sin(np.radians(slot.angle)))  # fmt: skip
    assert solid[round(along[1]), round(along[0])] == 0 and ok.mask[round(along[1]), round(along[0])] == 255
    assert ok.hole_clearance(*along) < 0


def test_the_bracket_pose_comes_from_its_conditions() -> None:
    """Its own jitter and rotation (12 px, 20 degrees by default), not the plate's or the flange's."""
    angles, shifts = [], []
    for seed in range(40):
        shape = draw_part(belt("bracket", (320, 240)), "bracket", "ok", np.random.default_rng(seed), Conditions())
        angles.append(shape.angle)
        shifts.append(max(abs(shape.centre[0] - 160), abs(shape.centre[1] - 120)))
    assert max(abs(a) for a in angles) <= 20 and max(abs(a) for a in angles) > 15
    assert max(shifts) <= 12 and max(shifts) > 9
    still = Conditions(bracket_jitter_px=0.0, bracket_rotation_deg=0.0)
    a, b = belt("bracket", (320, 240)), belt("bracket", (320, 240))
    sa = draw_part(a, "bracket", "ok", np.random.default_rng(1), still)
    sb = draw_part(b, "bracket", "ok", np.random.default_rng(2), still)
    assert np.array_equal(sa.mask, sb.mask) and sa.angle == sb.angle == 0.0  # the same pose...
    assert not np.array_equal(a, b)  # ...but each part has its own steel
    sc = draw_part(belt("bracket", (320, 240)), "bracket", "ok", np.random.default_rng(1), Conditions())
    assert not np.array_equal(sa.mask, sc.mask)
    with pytest.raises(DatasetError, match="bracket_rotation_deg"):
        Conditions(bracket_rotation_deg=181.0)
    with pytest.raises(DatasetError, match="bracket_jitter_px"):
        Conditions(bracket_jitter_px=41.0)
    with pytest.raises(DatasetError, match="bracket_jitter_px"):
        Conditions(bracket_jitter_px=float("nan"))


@pytest.mark.parametrize("family", ["bracket", "hexnut", "gasket"])
def test_the_part_leaves_the_frame_at_the_end_of_its_travel(family: str) -> None:
    """On the line video, the bracket, the hex nut and the gasket enter from and leave to beyond the
    frame, at any pose."""
    travel = _travel(320, family)
    empty = render_part("empty", np.random.default_rng(0), conditions=QUIET, family=family)
    for seed in range(6):
        for x in (-travel, travel):
            frame = render_part("ok", np.random.default_rng(0), conditions=QUIET, x_offset=x, part_seed=seed,
                                family=family)  # fmt: skip
            assert np.array_equal(frame, empty), (seed, x)


def test_wrong_part_on_the_bracket_line_is_a_plate_or_a_flange() -> None:
    shapes = set()
    for seed in range(12):
        frame = render_ood("wrong_part", np.random.default_rng(seed), family="bracket", conditions=QUIET)
        _, (_, _, ww, wh) = _footprint(frame, "bracket")
        shapes.add("plate" if ww / wh > 1.25 else "flange")
    assert shapes == {"plate", "flange"}


def _outline_kind(mask: np.ndarray) -> tuple[float, int]:
    """A part mask's area over that of its smallest enclosing circle, and its polygon's vertex count."""
    contours, _ = cv2.findContours((mask > 127).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    _, radius = cv2.minEnclosingCircle(contour)
    vertices = len(cv2.approxPolyDP(contour, 0.02 * cv2.arcLength(contour, True), True))
    return float(cv2.contourArea(contour) / (np.pi * radius**2)), vertices


def test_the_hexnut_differs_from_the_other_families() -> None:
    """Another background (a saturated green mat with a grid, not grey rubber, blue plastic or wood),
    another outline (a hexagon: six straight sides, 0.83 of its enclosing circle, where the plate's
    rectangle fills 0.65, the flange's disc all of it and the bracket's L 0.36), other pixels."""
    nut, _ = render_batch(2, seed=0, family="hexnut", classes=ALL_CLASSES)
    for other in ("plate", "flange", "bracket"):
        frames, _ = render_batch(2, seed=0, family=other, classes=ALL_CLASSES)
        assert not any(np.array_equal(x, y) for x, y in zip(nut, frames, strict=True)), other
    mat = belt("hexnut", (320, 240)).astype(np.float32)
    b, g, r = mat.reshape(-1, 3).mean(axis=0)
    assert g > r + 30 and g > b + 20 and g < 130, (b, g, r)  # dark and green
    for other in ("plate", "flange", "bracket"):
        assert np.abs(belt(other, (320, 240)).reshape(-1, 3).mean(axis=0) - (b, g, r)).max() > 25, other
    columns = mat.mean(axis=(0, 2))  # the grid: bright lines every 16 px, a bold one every 80
    assert columns.max() - np.median(columns) > 25 and 0.04 < (columns > np.median(columns) + 10).mean() < 0.15
    assert np.argmax(np.abs(np.fft.rfft(columns - columns.mean()))[1:]) + 1 in (len(columns) // 80, len(columns) // 16)
    for seed in range(4):
        fill, vertices = _outline_kind(draw_part(belt("hexnut", (320, 240)), "hexnut", "ok",
                                                 np.random.default_rng(seed), Conditions()).mask)  # fmt: skip
        assert 0.8 < fill < 0.86 and vertices == 6, (seed, fill, vertices)
        for other in ("plate", "flange", "bracket"):
            mask = draw_part(belt(other, (320, 240)), other, "ok", np.random.default_rng(seed), Conditions()).mask
            fill_o, vertices_o = _outline_kind(mask)
            assert not (0.8 < fill_o < 0.86 and vertices_o == 6), (other, fill_o, vertices_o)
        # a zinc part on a dark mat: much brighter than its background
        ok = render_part("ok", np.random.default_rng(1), conditions=QUIET, part_seed=seed, family="hexnut")
        region = _silhouette(ok, "hexnut")
        grey = cv2.cvtColor(ok, cv2.COLOR_BGR2GRAY).astype(np.float32)
        inner = cv2.erode(region, np.ones((9, 9), np.uint8)) > 0
        assert float(np.median(grey[inner])) - float(np.median(grey[region == 0])) > 60


def test_the_hexnut_tone_varies_from_part_to_part() -> None:
    """Zinc plating of its own tone on each part: brightness and a passivation tint from bluish clear
    zinc towards yellow."""
    tones = []
    for seed in range(24):
        shape = draw_part(belt("hexnut", (320, 240)), "hexnut", "ok", np.random.default_rng(seed), QUIET)
        ok = render_part("ok", np.random.default_rng(1), conditions=QUIET, part_seed=seed, family="hexnut")
        face = shape.face() > 0
        b, g, r = ok[face].astype(np.float32).mean(axis=0)
        tones.append((float(g), float(r - b)))
    brightness, warmth = np.array(tones).T
    assert np.ptp(brightness) > 15 and np.ptp(warmth) > 20, (np.ptp(brightness), np.ptp(warmth))
    assert warmth.min() < 0 < warmth.max()  # some bluish, some yellowish


def test_the_hexnut_has_a_threaded_bore_and_missing_hole_leaves_it_unpierced() -> None:
    """ok: one through-hole (the mat shows, dark, through the thread's core) inside rings of thread;
    missing_hole: the bore never pierced: metal where the core was, no thread, no through-hole."""
    for seed in range(6):
        ok = draw_part(belt("hexnut", (320, 240)), "hexnut", "ok", np.random.default_rng(seed), Conditions())
        missing = draw_part(belt("hexnut", (320, 240)), "hexnut", "missing_hole", np.random.default_rng(seed),
                            Conditions())  # fmt: skip
        assert len(ok.holes) == 1 and ok.holes[0].half_length == 0 and missing.holes == ()
        assert ok.size == pytest.approx(2 * 118 / np.sqrt(3)) and ok.holes[0].r == 19.0
        assert np.array_equal(ok.mask, missing.mask) and missing.material().sum() > ok.material().sum()
        a = render_part("ok", np.random.default_rng(1), conditions=QUIET, part_seed=seed, family="hexnut")
        b = render_part("missing_hole", np.random.default_rng(1), conditions=QUIET, part_seed=seed, family="hexnut")
        ga, gb = (cv2.cvtColor(f, cv2.COLOR_BGR2GRAY).astype(np.float32) for f in (a, b))
        ys, xs = np.mgrid[0:240, 0:320]
        radius = np.hypot(xs - ok.centre[0], ys - ok.centre[1])
        core, thread = radius < 15, (radius > 20) & (radius < 25)
        assert ga[core].mean() < 40 and gb[core].mean() > 80, (ga[core].mean(), gb[core].mean())
        assert ga[thread].std() > 15 and gb[thread].std() < 10  # crests and roots, or a plain floor
        assert np.array_equal(a[radius > 31], b[radius > 31])  # the rest of the nut is the same


def test_the_hexnut_pose_comes_from_its_conditions() -> None:
    """Its own jitter and rotation (10 px, 30 degrees by default), not another family's."""
    angles, shifts = [], []
    for seed in range(40):
        shape = draw_part(belt("hexnut", (320, 240)), "hexnut", "ok", np.random.default_rng(seed), Conditions())
        angles.append(shape.angle)
        shifts.append(max(abs(shape.centre[0] - 160), abs(shape.centre[1] - 120)))
    assert 25 < max(abs(a) for a in angles) <= 30
    assert 7 < max(shifts) <= 10
    still = Conditions(hexnut_jitter_px=0.0, hexnut_rotation_deg=0.0)
    a, b = belt("hexnut", (320, 240)), belt("hexnut", (320, 240))
    sa = draw_part(a, "hexnut", "ok", np.random.default_rng(1), still)
    sb = draw_part(b, "hexnut", "ok", np.random.default_rng(2), still)
    assert np.array_equal(sa.mask, sb.mask) and sa.angle == sb.angle == 0.0  # the same pose...
    assert not np.array_equal(a, b)  # ...but each part has its own plating
    assert Conditions().jitter_for("hexnut") == (10.0, 30.0)
    assert Conditions(hexnut_rotation_deg=180.0).jitter_for("hexnut") == (10.0, 180.0)
    with pytest.raises(DatasetError, match="hexnut_rotation_deg"):
        Conditions(hexnut_rotation_deg=181.0)
    with pytest.raises(DatasetError, match="hexnut_jitter_px"):
        Conditions(hexnut_jitter_px=41.0)
    with pytest.raises(DatasetError, match="hexnut_jitter_px"):
        Conditions(hexnut_jitter_px=-1.0)


def test_wrong_part_on_the_hexnut_line_is_a_plate_a_flange_or_a_bracket() -> None:
    shapes = set()
    for seed in range(15):
        frame = render_ood("wrong_part", np.random.default_rng(seed), family="hexnut", conditions=QUIET)
        region, (x, y, ww, wh) = _footprint(frame, "hexnut")
        fill = float(region[y : y + wh, x : x + ww].mean())
        shapes.add("bracket" if fill < 0.7 else "plate" if ww / wh > 1.25 else "flange")
    assert shapes == {"plate", "flange", "bracket"}


@pytest.mark.parametrize("label", [*ALL_CLASSES, "empty"])
def test_every_label_renders_on_the_gasket(label: str) -> None:
    """Every class renders, at several frame sizes; a defect changes the frame against the same part."""
    for size in ((320, 240), (160, 120), (640, 480)):
        frame = render_part(label, np.random.default_rng(2), size=size, part_seed=3, family="gasket")
        assert frame.shape == (size[1], size[0], 3) and frame.dtype == np.uint8
    ok = render_part("ok", np.random.default_rng(2), conditions=QUIET, part_seed=3, family="gasket")
    frame = render_part(label, np.random.default_rng(2), conditions=QUIET, part_seed=3, family="gasket")
    assert np.array_equal(frame, ok) == (label == "ok")


def test_the_gasket_lies_inside_the_frame() -> None:
    """At any pose its conditions allow (the largest jitter too) and at any frame size, the whole part
    and what it changes of the frame stay inside the frame at the inspection position."""
    wide = Conditions(noise=0.0, blur=0.0, brightness_jitter=0.0, contrast_jitter=0.0,
                      gasket_jitter_px=Conditions().gasket_jitter_px * 1.5)  # fmt: skip
    for size in ((320, 240), (160, 120), (640, 480)):
        w, h = size
        k = w / 320
        for seed in range(30):
            for cond in (Conditions(), wide):
                shape = draw_part(belt("gasket", size), "gasket", "ok", np.random.default_rng(seed), cond)
                lo, hi = shape.outline.min(axis=0), shape.outline.max(axis=0)
                assert lo[0] >= 4 * k and lo[1] >= 4 * k and hi[0] <= w - 4 * k and hi[1] <= h - 4 * k, (size, seed)
                edge = np.concatenate([shape.mask[0], shape.mask[-1], shape.mask[:, 0], shape.mask[:, -1]])
                assert not edge.any() and shape.mask.sum() > 0.1 * 255 * w * h, (size, seed)
        for seed in range(8):
            frame = render_part("ok", np.random.default_rng(0), conditions=wide, size=size, part_seed=seed,
                                family="gasket")  # fmt: skip
            empty = render_part("empty", np.random.default_rng(0), conditions=wide, size=size, family="gasket")
            changed = np.abs(frame.astype(np.int16) - empty).max(axis=2) > 0
            border = np.concatenate([changed[:2].ravel(), changed[-2:].ravel(), changed[:, :2].ravel(),
                                     changed[:, -2:].ravel()])  # fmt: skip
            assert changed.any() and not border.any(), (size, seed)


def test_the_gasket_differs_from_the_other_families() -> None:
    """Another belt, another outline, other pixels than each of the four others."""
    sealed, _ = render_batch(2, seed=0, family="gasket", classes=ALL_CLASSES)
    mine = belt("gasket", (320, 240)).reshape(-1, 3).astype(np.float32).mean(axis=0)
    for other in ("plate", "flange", "bracket", "hexnut"):
        frames, _ = render_batch(2, seed=0, family=other, classes=ALL_CLASSES)
        assert not any(np.array_equal(x, y) for x, y in zip(sealed, frames, strict=True)), other
        assert np.abs(belt(other, (320, 240)).reshape(-1, 3).mean(axis=0) - mine).max() > 25, other
    for seed in range(4):
        fill, _ = _outline_kind(draw_part(belt("gasket", (320, 240)), "gasket", "ok", np.random.default_rng(seed),
                                          Conditions()).mask)  # fmt: skip
        for other in ("plate", "flange", "bracket", "hexnut"):
            mask = draw_part(belt(other, (320, 240)), other, "ok", np.random.default_rng(seed), Conditions()).mask
            assert abs(_outline_kind(mask)[0] - fill) > 0.05, (other, seed)


def test_the_gasket_missing_hole_drops_one_hole_and_keeps_the_outline() -> None:
    for seed in range(6):
        ok = draw_part(belt("gasket", (320, 240)), "gasket", "ok", np.random.default_rng(seed), Conditions())
        missing = draw_part(belt("gasket", (320, 240)), "gasket", "missing_hole", np.random.default_rng(seed),
                            Conditions())  # fmt: skip
        assert len(missing.holes) == len(ok.holes) - 1 and set(missing.holes) < set(ok.holes)
        assert np.array_equal(ok.mask, missing.mask) and missing.material().sum() > ok.material().sum()


def test_the_gasket_pose_comes_from_its_conditions() -> None:
    """Its own jitter and rotation, within their bounds and using them, not another family's."""
    jitter, rotation = Conditions().jitter_for("gasket")
    assert jitter > 0 and rotation > 0
    angles, shifts = [], []
    for seed in range(40):
        shape = draw_part(belt("gasket", (320, 240)), "gasket", "ok", np.random.default_rng(seed), Conditions())
        angles.append(shape.angle)
        shifts.append(max(abs(shape.centre[0] - 160), abs(shape.centre[1] - 120)))
    assert 0.75 * rotation < max(abs(a) for a in angles) <= rotation
    assert 0.7 * jitter < max(shifts) <= jitter
    still = Conditions(gasket_jitter_px=0.0, gasket_rotation_deg=0.0)
    a, b = belt("gasket", (320, 240)), belt("gasket", (320, 240))
    sa = draw_part(a, "gasket", "ok", np.random.default_rng(1), still)
    sb = draw_part(b, "gasket", "ok", np.random.default_rng(2), still)
    assert np.array_equal(sa.mask, sb.mask) and sa.angle == sb.angle == 0.0  # the same pose...
    assert not np.array_equal(a, b)  # ...but each part is its own
    for family in ("plate", "flange", "bracket", "hexnut"):
        assert still.jitter_for(family) == Conditions().jitter_for(family), family
    assert Conditions(gasket_rotation_deg=180.0).jitter_for("gasket") == (jitter, 180.0)
    with pytest.raises(DatasetError, match="gasket_rotation_deg"):
        Conditions(gasket_rotation_deg=181.0)
    with pytest.raises(DatasetError, match="gasket_jitter_px"):
        Conditions(gasket_jitter_px=41.0)
    with pytest.raises(DatasetError, match="gasket_jitter_px"):
        Conditions(gasket_jitter_px=float("nan"))


def test_wrong_part_on_the_gasket_line_is_any_of_the_four_others() -> None:
    seen = set()
    for seed in range(16):
        frame = render_ood("wrong_part", np.random.default_rng(seed), family="gasket", conditions=QUIET)
        matches = []
        for other in ("plate", "flange", "bracket", "hexnut"):
            rng = np.random.default_rng(seed)
            rng.integers(0, 4)  # the pick
            img = belt("gasket", (320, 240))
            draw_part(img, other, "ok", rng, QUIET)
            if np.array_equal(camera(img, rng, QUIET, QUIET.lighting), frame):
                matches.append(other)
        assert len(matches) == 1, (seed, matches)
        seen.add(matches[0])
    assert seen == {"plate", "flange", "bracket", "hexnut"}


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
    with pytest.raises(DatasetError, match="unknown part family 'disc'; known: plate, flange, bracket, hexnut, gasket"):
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
        elif family == "flange":  # a plate on the flange line: a 150x108 rectangle
            assert ww / wh > 1.25, (ww, wh)
        elif family == "bracket":  # a plate or a flange on the bracket line
            assert ww / wh > 1.25 or (abs(ww - wh) <= 6 and 125 <= ww <= 150), (ww, wh)
        elif family == "gasket":  # one of the four others: a part-sized object
            assert 100 <= max(ww, wh) <= 200, (ww, wh)
        else:  # a plate, a flange or a bracket (an L: it fills little of its box) on the hex nut line
            region, (x, y, _, _) = _footprint(q["wrong_part"], family)
            fill = float(region[y : y + wh, x : x + ww].mean())
            assert ww / wh > 1.25 or (abs(ww - wh) <= 6 and 125 <= ww <= 150) or fill < 0.7, (ww, wh, fill)


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


def test_a_bracket_line_video_reads_back_with_its_family(tmp_path: Path) -> None:
    video = tmp_path / "sealed.avi"
    truth = write_line_video(video, n_parts=2, seed=1, labels=["missing_hole", "ok"], family="bracket",
                             enter_frames=2, dwell_frames=1, gap_frames=1)  # fmt: skip
    back = read_line_truth(video)
    assert back.family == truth.family == "bracket" and [p.label for p in back.parts] == ["missing_hole", "ok"]


def test_a_hexnut_line_video_reads_back_with_its_family(tmp_path: Path) -> None:
    video = tmp_path / "sealed.avi"
    truth = write_line_video(video, n_parts=2, seed=1, labels=["ok", "missing_hole"], family="hexnut",
                             enter_frames=2, dwell_frames=1, gap_frames=1)  # fmt: skip
    back = read_line_truth(video)
    assert back.family == truth.family == "hexnut" and [p.label for p in back.parts] == ["ok", "missing_hole"]


def test_a_gasket_line_video_reads_back_with_its_family(tmp_path: Path) -> None:
    video = tmp_path / "sealed.avi"
    truth = write_line_video(video, n_parts=2, seed=1, labels=["chip", "ok"], family="gasket",
                             enter_frames=2, dwell_frames=1, gap_frames=1)  # fmt: skip
    back = read_line_truth(video)
    assert back.family == truth.family == "gasket" and [p.label for p in back.parts] == ["chip", "ok"]


def run_cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return res.exit_code, res.output


def test_cli_help_names_families_kinds_and_ood() -> None:
    code, out = run_cli("dataset", "synth", "--help")
    assert code == 0
    words = ("--family", "flange", "bracket", "hexnut", "gasket", "sealed", "crack", "stain", "chip", "--ood",
             "--ood-kinds", "wrong_part", "30 for the hexnut")  # fmt: skip
    for word in words:
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


def test_cli_writes_the_sealed_bracket_set(tmp_path: Path) -> None:
    out, ood = tmp_path / "sealed", tmp_path / "sealed_ood"
    code, text = run_cli(
        "dataset", "synth", str(out), "--family", "bracket", "--classes", "ok,missing_hole,chip", "--per-class",
        "2", "--seed", "9000", "--ood", str(ood), "--ood-kinds", "wrong_part,cup", "--ood-per-kind", "1", "--json",
    )  # fmt: skip
    assert code == 0, text
    doc = json.loads(text)
    assert doc["family"] == "bracket" and doc["rotation_deg"] == 20.0 and doc["jitter_px"] == 12.0
    assert doc["counts"] == {"ok": 2, "missing_hole": 2, "chip": 2}
    assert doc["ood_counts"] == {"wrong_part": 1, "cup": 1}
    frames, labels = render_batch(2, seed=9000, classes=("ok", "missing_hole", "chip"), family="bracket")
    assert np.array_equal(read_image(out / "chip" / "chip_00001.png"), frames[labels.index("chip") + 3])
    assert len(list(ood.rglob("*.png"))) == 2
    # --jitter and --rotation set the bracket's pose, not the plate's
    code, text = run_cli("dataset", "synth", str(tmp_path / "turned"), "--family", "bracket", "--classes",
                         "ok,dent", "--per-class", "1", "--rotation", "45", "--jitter", "3", "--json")  # fmt: skip
    assert code == 0, text
    doc = json.loads(text)
    assert doc["rotation_deg"] == 45.0 and doc["jitter_px"] == 3.0
    cond = Conditions(bracket_rotation_deg=45.0, bracket_jitter_px=3.0)
    frames, _ = render_batch(1, seed=0, conditions=cond, classes=("ok", "dent"), family="bracket")
    assert np.array_equal(read_image(tmp_path / "turned" / "ok" / "ok_00000.png"), frames[0])
    code, out_text = run_cli("dataset", "synth", str(tmp_path / "x"), "--family", "bracket", "--rotation", "200")
    assert code == 1 and "bracket_rotation_deg" in out_text


def test_cli_writes_the_sealed_hexnut_set(tmp_path: Path) -> None:
    out, ood = tmp_path / "sealed", tmp_path / "sealed_ood"
    code, text = run_cli(
        "dataset", "synth", str(out), "--family", "hexnut", "--classes", "ok,missing_hole,crack", "--per-class",
        "2", "--seed", "95000", "--ood", str(ood), "--ood-kinds", "wrong_part,black", "--ood-per-kind", "1",
        "--json",
    )  # fmt: skip
    assert code == 0, text
    doc = json.loads(text)
    assert doc["family"] == "hexnut" and doc["rotation_deg"] == 30.0 and doc["jitter_px"] == 10.0
    assert doc["counts"] == {"ok": 2, "missing_hole": 2, "crack": 2}
    assert doc["ood_counts"] == {"wrong_part": 1, "black": 1}
    frames, labels = render_batch(2, seed=95000, classes=("ok", "missing_hole", "crack"), family="hexnut")
    assert np.array_equal(read_image(out / "missing_hole" / "missing_hole_00001.png"),
                          frames[labels.index("missing_hole") + 3])  # fmt: skip
    assert len(list(ood.rglob("*.png"))) == 2
    # --jitter and --rotation set the hex nut's pose, not the plate's
    code, text = run_cli("dataset", "synth", str(tmp_path / "turned"), "--family", "hexnut", "--classes",
                         "ok,stain", "--per-class", "1", "--rotation", "60", "--jitter", "4", "--json")  # fmt: skip
    assert code == 0, text
    doc = json.loads(text)
    assert doc["rotation_deg"] == 60.0 and doc["jitter_px"] == 4.0
    cond = Conditions(hexnut_rotation_deg=60.0, hexnut_jitter_px=4.0)
    frames, _ = render_batch(1, seed=0, conditions=cond, classes=("ok", "stain"), family="hexnut")
    assert np.array_equal(read_image(tmp_path / "turned" / "stain" / "stain_00000.png"), frames[1])
    code, out_text = run_cli("dataset", "synth", str(tmp_path / "x"), "--family", "hexnut", "--rotation", "200")
    assert code == 1 and "hexnut_rotation_deg" in out_text


def test_cli_writes_the_sealed_gasket_set(tmp_path: Path) -> None:
    out, ood = tmp_path / "sealed", tmp_path / "sealed_ood"
    code, text = run_cli(
        "dataset", "synth", str(out), "--family", "gasket", "--classes", "ok,missing_hole,chip", "--per-class",
        "2", "--seed", "97000", "--ood", str(ood), "--ood-kinds", "wrong_part,cat", "--ood-per-kind", "1",
        "--json",
    )  # fmt: skip
    assert code == 0, text
    doc = json.loads(text)
    jitter, rotation = Conditions().jitter_for("gasket")
    assert doc["family"] == "gasket" and doc["rotation_deg"] == rotation and doc["jitter_px"] == jitter
    assert doc["counts"] == {"ok": 2, "missing_hole": 2, "chip": 2}
    assert doc["ood_counts"] == {"wrong_part": 1, "cat": 1}
    frames, labels = render_batch(2, seed=97000, classes=("ok", "missing_hole", "chip"), family="gasket")
    assert np.array_equal(read_image(out / "chip" / "chip_00001.png"), frames[labels.index("chip") + 3])
    assert len(list(ood.rglob("*.png"))) == 2
    # --jitter and --rotation set the gasket's pose, not the plate's
    code, text = run_cli("dataset", "synth", str(tmp_path / "turned"), "--family", "gasket", "--classes",
                         "ok,scratch", "--per-class", "1", "--rotation", "150", "--jitter", "5", "--json")  # fmt: skip
    assert code == 0, text
    doc = json.loads(text)
    assert doc["rotation_deg"] == 150.0 and doc["jitter_px"] == 5.0
    cond = Conditions(gasket_rotation_deg=150.0, gasket_jitter_px=5.0)
    frames, _ = render_batch(1, seed=0, conditions=cond, classes=("ok", "scratch"), family="gasket")
    assert np.array_equal(read_image(tmp_path / "turned" / "scratch" / "scratch_00000.png"), frames[1])
    code, out_text = run_cli("dataset", "synth", str(tmp_path / "x"), "--family", "gasket", "--rotation", "200")
    assert code == 1 and "gasket_rotation_deg" in out_text


def test_cli_refuses_unknown_family_class_and_kind(tmp_path: Path) -> None:
    code, out = run_cli("dataset", "synth", str(tmp_path / "x"), "--family", "disc")
    assert code == 2 and "'disc' is not one of 'plate', 'flange', 'bracket', 'hexnut', 'gasket'" in out
    code, out = run_cli("dataset", "synth", str(tmp_path / "x"), "--classes", "ok,rust", "--per-class", "1")
    assert code == 1 and "unknown class 'rust'" in out
    code, out = run_cli("dataset", "synth", str(tmp_path / "x"), "--no-images", "--ood", str(tmp_path / "o"),
                        "--ood-kinds", "dog")  # fmt: skip
    assert code == 1 and "unknown OOD kind 'dog'" in out
    code, out = run_cli("dataset", "synth", str(tmp_path / "x"), "--family", "flange", "--rotation", "200")
    assert code == 1 and "flange_rotation_deg" in out
