"""The image-folder convention and its bad inputs: each gets a DatasetError that names the problem."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from converters.dataset import dataset_sha256, read_image, scan_image_folder, scan_images
from converters.errors import DatasetError


def _png(path: Path, value: int = 120, shape: tuple[int, int] = (24, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*shape, 3), value, np.uint8))
    return path


def _jpg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8))
    return path


def test_classes_are_subfolders_and_roots_merge(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "ok" / "1.png")
    _jpg(tmp_path / "a" / "dent" / "1.JPG")
    (tmp_path / "a" / "dent" / "notes.txt").write_text("not an image")
    _png(tmp_path / "b" / "ok" / "2.png")
    _png(tmp_path / "b" / "scratch" / "1.png")
    folder = scan_image_folder([tmp_path / "a", tmp_path / "b"])
    assert folder.classes == ("dent", "ok", "scratch")
    assert folder.counts == {"dent": 1, "ok": 2, "scratch": 1}
    assert read_image(folder.paths[0]).shape == (24, 32, 3)


def test_missing_empty_and_single_class_datasets(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        scan_image_folder(tmp_path / "nope")
    (tmp_path / "empty" / "ok").mkdir(parents=True)
    with pytest.raises(DatasetError, match="empty dataset"):
        scan_image_folder(tmp_path / "empty")
    _png(tmp_path / "one" / "ok" / "1.png")
    with pytest.raises(DatasetError, match=r"single class \(ok\)"):
        scan_image_folder(tmp_path / "one")
    _png(tmp_path / "loose" / "1.png")
    with pytest.raises(DatasetError, match="one subfolder per class"):
        scan_image_folder(tmp_path / "loose")


@pytest.mark.parametrize(
    ("name", "mutate", "message"),
    [
        ("garbage.png", lambda b: b"\x00garbage" * 100, "not a PNG"),
        ("truncated.png", lambda b: b[: len(b) // 2], "truncated PNG"),
        ("empty.png", lambda b: b"", "empty file"),
        ("corrupt.png", lambda b: b[:40] + bytes(200) + b[-12:], r"corrupt|not a decodable"),
        ("truncated.jpg", lambda b: b[: len(b) // 2], "truncated JPEG"),
        ("renamed.jpg", lambda b: b"\x89PNG\r\n\x1a\n" + b[8:], "not a JPEG"),
    ],
)
def test_bad_image_files_are_named(tmp_path: Path, name: str, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    src = _jpg(tmp_path / "src.jpg") if name.endswith(".jpg") else _png(tmp_path / "src.png", shape=(64, 64))
    bad = tmp_path / name
    bad.write_bytes(mutate(src.read_bytes()))
    with pytest.raises(DatasetError, match=message) as info:
        read_image(bad)
    assert name in str(info.value)


def test_dataset_hash_is_stable_and_sees_one_changed_byte(tmp_path: Path) -> None:
    _png(tmp_path / "ok" / "1.png", 100)
    p = _png(tmp_path / "dent" / "1.png", 50)
    h1 = dataset_sha256(scan_image_folder(tmp_path))
    assert h1 == dataset_sha256(scan_image_folder(tmp_path))
    data = bytearray(p.read_bytes())
    data[-20] ^= 1
    p.write_bytes(bytes(data))
    assert dataset_sha256(scan_image_folder(tmp_path)) != h1


def test_scan_images_takes_flat_or_nested_folders(tmp_path: Path) -> None:
    _png(tmp_path / "flat" / "1.png")
    _png(tmp_path / "flat" / "x" / "2.png")
    assert [p.name for p in scan_images(tmp_path / "flat")] == ["1.png", "2.png"]
    (tmp_path / "none").mkdir()
    with pytest.raises(DatasetError, match="no PNG/JPEG"):
        scan_images(tmp_path / "none")


def test_png_claiming_gigantic_dimensions_is_refused(tmp_path: Path) -> None:
    """A malicious header (100000 x 100000 px) must not make the loader allocate 30 GB."""
    import struct
    import zlib

    src = _png(tmp_path / "small.png", shape=(4, 4)).read_bytes()
    ihdr = src[16:29]  # width, height, depth, colour type, ...
    evil_ihdr = struct.pack(">II", 100_000, 100_000) + ihdr[8:]
    chunk = b"IHDR" + evil_ihdr
    evil = src[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + src[33:]
    bad = tmp_path / "evil.png"
    bad.write_bytes(evil)
    with pytest.raises(DatasetError, match=r"evil\.png"):
        read_image(bad)
