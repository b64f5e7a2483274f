"""Batch inference over an image folder, a single image or a video file, through the same path as the
live loop (:func:`edge_agent.inference.inspect_frame`), so ``edgeline predict`` gives the agent's
verdicts. Images (a folder's, or a single file) go through the agent's guarded decoder
(:mod:`edge_agent.image_decode`), as in the local API: declared size checked before decoding, EXIF
orientation applied, truncated files refused. Only videos are read through FFmpeg."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np

from edge_agent.errors import EdgelineError, SourceError
from edge_agent.image_decode import ImageError, read_header, read_image_file
from edge_agent.inference import inspect_frame, verdict_record
from edge_agent.model import LoadedModel
from edge_agent.sources import IMAGE_EXTENSIONS, list_images
from firmware_configs.schema import DEFAULT_MAX_IMAGE_PIXELS

CSV_FIELDS = ("ref", "verdict", "label", "confidence", "uncertain", "model", "model_version", "error")


@dataclass(frozen=True)
class Item:
    ref: str
    image: np.ndarray | None
    error: str = ""


def is_image_file(path: Path) -> bool:
    """A single image rather than a video: an image extension, or the header of a format the agent's
    decoder reads (a damaged image with an image extension is still an image, and gets its error)."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as fh:
            read_header(fh.read(4096))
    except (OSError, ImageError):
        return False
    return True


def _image_item(path: Path, ref: str, max_pixels: int) -> Item:
    try:
        return Item(ref, read_image_file(path, max_pixels))
    except ImageError as exc:
        return Item(ref, None, str(exc))


def count_items(path: Path) -> int | None:
    """How many images or frames ``path`` holds (None when a video does not say)."""
    if path.is_dir():
        return len(list_images(path))
    if is_image_file(path):
        return 1
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()
    return n if n > 0 else None


def iter_items(path: Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Iterator[Item]:
    """Images of a folder in name order (ref = file name), one image file (ref = its name), or the
    frames of a video (ref = frame index). Images larger than ``max_pixels`` get an error item."""
    path = Path(path)
    if path.is_dir():
        for f in list_images(path):
            yield _image_item(f, f.name, max_pixels)
        return
    if not path.is_file():
        raise SourceError(f"{path} is neither an image folder, an image nor a video file")
    if is_image_file(path):
        yield _image_item(path, path.name, max_pixels)
        return
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"{path} is not a video OpenCV can read")
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width * height > max_pixels:
        cap.release()
        raise SourceError(f"{path} declares {width}x{height} frames, above the limit of {max_pixels:,} pixels")
    try:
        i = 0
        while True:
            ok, img = cap.read()
            if not ok or img is None:
                break
            yield Item(str(i), img)
            i += 1
        if i == 0:
            raise SourceError(f"{path} holds no readable frame")
    finally:
        cap.release()


def predict_items(model: LoadedModel, items: Iterator[Item], device_id: str = "batch") -> Iterator[dict[str, Any]]:
    """One record per item: the verdict record of the live loop, or ``{"ref", "error"}``."""
    for frame_id, item in enumerate(items):
        if item.image is None:
            yield {"type": "verdict", "ref": item.ref, "error": item.error}
            continue
        try:
            result = inspect_frame(model, item.image, frame_id)
        except EdgelineError as exc:
            yield {"type": "verdict", "ref": item.ref, "error": str(exc)}
            continue
        rec = verdict_record(result, device_id, item.ref)
        rec["probabilities"] = {
            lab: float(p) for lab, p in zip(model.manifest.labels, result.probabilities, strict=True)
        }
        yield rec


class RecordWriter:
    """Writes records as CSV (fixed columns + one probability column per label) or JSON lines."""

    def __init__(self, out: TextIO, fmt: str, labels: tuple[str, ...]) -> None:
        self.out = out
        self.fmt = fmt
        self.labels = labels
        self._csv: Any = None
        if fmt == "csv":
            fields = [*CSV_FIELDS, *(f"p_{lab}" for lab in labels)]
            self._csv = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
            self._csv.writeheader()

    def write(self, rec: dict[str, Any]) -> None:
        if self._csv is None:
            self.out.write(json.dumps(rec, sort_keys=True) + "\n")
            return
        row = dict(rec)
        for lab, p in (rec.get("probabilities") or {}).items():
            row[f"p_{lab}"] = f"{p:.6f}"
        if "confidence" in row:
            row["confidence"] = f"{row['confidence']:.6f}"
        self._csv.writerow(row)


def to_csv_text(records: list[dict[str, Any]], labels: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = RecordWriter(buf, "csv", labels)
    for r in records:
        w.write(r)
    return buf.getvalue()
