"""Bad input to the build pipeline: each case gets a clear ConverterError subclass and writes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from converters.errors import ConverterError, DatasetError, SigningKeyError, TrainingError
from converters.pipeline import build_bundle
from converters.synth import generate_dataset
from edgeline.core.protocol.manifest import Thresholds
from tests.converters.conftest import NO_GATE


@pytest.fixture(scope="module")
def tiny_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "ds"
    generate_dataset(out, per_class=6, seed=1, classes=("ok", "dent"))
    return out


def _build(ds: Path, out: Path, key_dir: Path, **kw: object) -> None:
    build_bundle(ds, out, key_dir=key_dir, gate=NO_GATE, **kw)  # type: ignore[arg-type]


def test_missing_key_fails_first_and_says_how_to_make_one(tiny_ds: Path, tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="edgeline keys init"):
        _build(tiny_ds, tmp_path / "b", tmp_path / "no-keys")
    assert not (tmp_path / "b").exists()


def test_unreadable_key_is_a_signing_key_error(tiny_ds: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "signing.key").write_text("not a key")
    with pytest.raises(SigningKeyError, match="cannot use the signing key"):
        _build(tiny_ds, tmp_path / "b", keys)


def test_unknown_estimator_and_parameter(tiny_ds: Path, key_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="unknown estimator 'svm'; choose one of mlp, logreg, forest"):
        _build(tiny_ds, tmp_path / "b", key_dir, estimator="svm")
    with pytest.raises(TrainingError, match="no parameter 'clf__n_neighbours'"):
        _build(tiny_ds, tmp_path / "b", key_dir, estimator="logreg", params={"clf__n_neighbours": 3})
    with pytest.raises(TrainingError, match="bad parameter"):
        _build(tiny_ds, tmp_path / "b", key_dir, estimator="logreg", params={"clf__C": "lots"})


def test_empty_and_single_class_datasets(key_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty dataset"):
        _build(tmp_path / "empty", tmp_path / "b", key_dir)
    generate_dataset(tmp_path / "one", per_class=3, seed=0, classes=("ok", "dent"))
    shutil.rmtree(tmp_path / "one" / "dent")
    with pytest.raises(DatasetError, match="single class"):
        _build(tmp_path / "one", tmp_path / "b", key_dir)
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_a_class_too_small_to_split(tiny_ds: Path, key_dir: Path, tmp_path: Path) -> None:
    ds = shutil.copytree(tiny_ds, tmp_path / "ds")
    for p in sorted((ds / "dent").iterdir())[1:]:
        p.unlink()
    with pytest.raises(DatasetError, match=r"at least 2 images.*'dent': 1"):
        _build(ds, tmp_path / "b", key_dir)


def test_corrupt_image_is_named_and_nothing_is_written(tiny_ds: Path, key_dir: Path, tmp_path: Path) -> None:
    ds = shutil.copytree(tiny_ds, tmp_path / "ds")
    victim = ds / "ok" / "ok_00003.png"
    victim.write_bytes(victim.read_bytes()[:500])
    with pytest.raises(DatasetError, match=r"ok_00003\.png: truncated PNG"):
        _build(ds, tmp_path / "b", key_dir)
    assert not (tmp_path / "b" / "model.onnx").exists()


def test_no_good_part_class(tiny_ds: Path, key_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no class 'good' among dent, ok"):
        _build(tiny_ds, tmp_path / "b", key_dir, thresholds=Thresholds(ok_label="good"))


def test_an_existing_bundle_is_not_overwritten_without_force(tiny_ds: Path, key_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    _build(tiny_ds, out, key_dir, estimator="logreg", quantization="float")
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(ConverterError, match="already holds a bundle"):
        _build(tiny_ds, out, key_dir, estimator="logreg")
    assert (out / "manifest.json").read_bytes() == before
    _build(tiny_ds, out, key_dir, estimator="logreg", quantization="float", force=True, version=2)
    assert (out / "manifest.json").read_bytes() != before


def test_bad_split_fraction(tiny_ds: Path, key_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="test_size"):
        _build(tiny_ds, tmp_path / "b", key_dir, test_size=0.9)
