"""The image-folder convention: ``ROOT/<class>/<image>.png|.jpg|.jpeg``, one subfolder per class.

Several roots may be combined (their class folders merge), which is how a retraining run adds fresh
images from a line to the original dataset. Images are read one at a time as 8-bit BGR frames, the way
a camera delivers them; a file that is not a complete PNG/JPEG raises :class:`DatasetError` naming it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from converters.errors import DatasetError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"


@dataclass(frozen=True)
class ImageFolder:
    """A scanned dataset: every image with its class index, classes sorted by name."""

    roots: tuple[Path, ...]
    classes: tuple[str, ...]
    paths: tuple[Path, ...]
    targets: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(self.classes, 0)
        for t in self.targets:
            out[self.classes[t]] += 1
        return out

    def relative(self, path: Path) -> str:
        """``<class>/<file name>`` of an image: stable across machines, used for hashing."""
        return f"{path.parent.name}/{path.name}"


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def scan_image_folder(roots: Path | str | Sequence[Path | str], *, min_classes: int = 2) -> ImageFolder:
    """Find the classes and images under one or more roots. Raises :class:`DatasetError` for a
    missing root, an empty dataset, or fewer than ``min_classes`` classes with images."""
    root_list = [Path(roots)] if isinstance(roots, str | Path) else [Path(r) for r in roots]
    if not root_list:
        raise DatasetError("no dataset directory given")
    by_class: dict[str, list[Path]] = {}
    loose = 0
    for root in root_list:
        if not root.exists():
            raise DatasetError(f"dataset directory {root} does not exist")
        if not root.is_dir():
            raise DatasetError(f"dataset {root} is not a directory")
        try:
            entries = sorted(root.iterdir())
        except OSError as exc:
            raise DatasetError(f"cannot list {root}: {exc.strerror}") from exc
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                images = sorted(p for p in entry.iterdir() if _is_image(p))
                if images:
                    by_class.setdefault(entry.name, []).extend(images)
                else:
                    log.warning("class folder %s holds no PNG/JPEG images; ignored", entry)
            elif _is_image(entry):
                loose += 1
    if not by_class:
        hint = f" ({loose} images lie directly in the root: put them in one subfolder per class)" if loose else ""
        where = ", ".join(str(r) for r in root_list)
        raise DatasetError(f"empty dataset: no PNG/JPEG images in class subfolders of {where}{hint}")
    if len(by_class) < min_classes:
        only = ", ".join(sorted(by_class))
        raise DatasetError(f"the dataset has a single class ({only}); a classifier needs at least {min_classes}")
    classes = tuple(sorted(by_class))
    paths: list[Path] = []
    targets: list[int] = []
    for i, name in enumerate(classes):
        paths += by_class[name]
        targets += [i] * len(by_class[name])
    return ImageFolder(tuple(root_list), classes, tuple(paths), tuple(targets))


def stratified_split(folder: ImageFolder, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices), both sorted: the split :func:`converters.pipeline.build_bundle`
    makes (scikit-learn ``train_test_split``, stratified by class, ``random_state=seed``)."""
    from sklearn.model_selection import train_test_split

    counts = folder.counts
    small = {c: n for c, n in counts.items() if n < 2}
    if small:
        raise DatasetError(f"every class needs at least 2 images for a held-out split; too few: {small}")
    idx = np.arange(len(folder))
    try:
        tr, te = train_test_split(idx, test_size=test_size, stratify=np.asarray(folder.targets), random_state=seed)
    except ValueError as exc:
        raise DatasetError(f"cannot make a stratified split of {len(folder)} images ({counts}): {exc}") from exc
    return np.sort(tr), np.sort(te)


def scan_images(root: Path | str) -> list[Path]:
    """Every PNG/JPEG under ``root``: in class subfolders, or directly in it (calibration sets)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image directory {root} does not exist")
    found = sorted(p for p in root.iterdir() if _is_image(p))
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found += sorted(p for p in sub.iterdir() if _is_image(p))
    if not found:
        raise DatasetError(f"no PNG/JPEG images in {root} or its subfolders")
    return found


def _looks_complete(path: Path, data: bytes) -> None:
    """libjpeg decodes a truncated JPEG into a grey-filled image with only a warning; catch that
    (and a truncated PNG) from the file structure before decoding."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        if not data.startswith(_PNG_MAGIC):
            raise DatasetError(f"{path}: not a PNG file (bad signature)")
        if not data.rstrip(b"\x00").endswith(_PNG_IEND):
            raise DatasetError(f"{path}: truncated PNG (no IEND chunk)")
    else:
        if not data.startswith(b"\xff\xd8"):
            raise DatasetError(f"{path}: not a JPEG file (bad signature)")
        if b"\xff\xd9" not in data[-64:]:
            raise DatasetError(f"{path}: truncated JPEG (no end-of-image marker)")


def read_image(path: Path) -> np.ndarray:
    """Read one PNG/JPEG as an 8-bit BGR frame. Every failure is a :class:`DatasetError` naming the file."""
    return read_image_and_digest(path)[0]


def read_image_and_digest(path: Path) -> tuple[np.ndarray, str]:
    """:func:`read_image` plus the sha256 of the file's bytes (read once)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise DatasetError(f"{path}: {size} bytes is larger than the {MAX_IMAGE_BYTES}-byte limit")
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror})") from exc
    if not data:
        raise DatasetError(f"{path}: empty file")
    _looks_complete(path, data)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # oversized dimensions and a few corruptions raise instead of returning None
        raise DatasetError(f"{path}: not a decodable image ({str(exc).strip().splitlines()[-1][:120]})") from exc
    if img is None or img.size == 0:
        raise DatasetError(f"{path}: corrupt or unsupported image data")
    if img.shape[0] * img.shape[1] > MAX_IMAGE_PIXELS:
        raise DatasetError(f"{path}: {img.shape[1]}x{img.shape[0]} pixels is larger than the limit")
    return img, hashlib.sha256(data).hexdigest()


def dataset_sha256(folder: ImageFolder, digests: Mapping[Path, str] | None = None) -> str:
    """sha256 over the sorted lines ``<class>/<file>\\t<sha256 of the file>``. Pass ``digests``
    (path -> file sha256) when the files were already read, to avoid reading them again."""
    entries = []
    for p in folder.paths:
        digest = (digests or {}).get(p)
        if digest is None:
            try:
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError as exc:
                raise DatasetError(f"{p}: cannot read ({exc.strerror})") from exc
        entries.append(f"{folder.relative(p)}\t{digest}\n")
    h = hashlib.sha256()
    for line in sorted(entries):
        h.update(line.encode("utf-8"))
    return h.hexdigest()
