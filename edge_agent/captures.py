"""Frame sources through OpenCV: USB index, RTSP/HTTP URL, video file, image folder, and frames held in
memory. OpenCV's failures (``isOpened()`` false, ``read()`` false) become :class:`SourceError` or a lost
frame here; nothing else touches ``cv2.VideoCapture`` on the live path."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge_agent.errors import SourceError
from firmware_configs.schema import SourceSection

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
#: OPENCV_FFMPEG_CAPTURE_OPTIONS is read by OpenCV at open time: set it under a lock.
_FFMPEG_ENV_LOCK = threading.Lock()


class Capture(Protocol):
    live: bool

    def open(self) -> None:
        """Open the device, stream or file; raise :class:`SourceError` when that fails."""

    def read(self) -> tuple[np.ndarray, str] | None:
        """The next frame and its reference, or None (live: lost; file: at its end)."""

    def close(self) -> None: ...

    def describe(self) -> str: ...


class OpenCvCapture:
    """``cv2.VideoCapture`` on a USB index, a URL or a video file."""

    def __init__(self, section: SourceSection) -> None:
        self.section = section
        self.live = section.live
        self._cap: cv2.VideoCapture | None = None
        self._index = 0

    def describe(self) -> str:
        s = self.section
        return {"usb": f"usb:{s.index}", "url": str(s.url), "file": str(s.path)}.get(s.kind, s.kind)

    def open(self) -> None:
        s = self.section
        timeouts = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            s.open_timeout_ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            s.read_timeout_ms,
        ]
        if s.kind == "usb":
            assert s.index is not None
            cap = cv2.VideoCapture(s.index, cv2.CAP_ANY)
        elif s.kind == "url":
            assert s.url is not None
            with _FFMPEG_ENV_LOCK:
                old = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
                if s.url.startswith(("rtsp://", "rtsps://")):
                    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{s.rtsp_transport}"
                try:
                    cap = cv2.VideoCapture(s.url, cv2.CAP_FFMPEG, timeouts)
                finally:
                    if old is None:
                        os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
                    else:
                        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = old
        else:
            path = Path(str(s.path))
            if not path.is_file():
                raise SourceError(f"video file {path} does not exist")
            cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.describe()}")
        if s.kind == "usb" and s.width and s.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, s.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, s.height)
        self._cap = cap
        self._index = 0

    def read(self) -> tuple[np.ndarray, str] | None:
        if self._cap is None:
            return None
        try:
            ok, img = self._cap.read()
        except cv2.error as exc:
            log.warning("read from %s failed: %s", self.describe(), exc)
            return None
        if not ok or img is None or img.size == 0:
            return None
        ref = str(self._index)
        self._index += 1
        return img, ref

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FolderCapture:
    """Images of a directory in name order. Unreadable files are skipped and counted."""

    live = False

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._files: list[Path] = []
        self._pos = 0
        self.unreadable = 0

    def describe(self) -> str:
        return str(self.path)

    def open(self) -> None:
        if not self.path.is_dir():
            raise SourceError(f"image folder {self.path} does not exist")
        self._files = list_images(self.path)
        self._pos = 0

    def read(self) -> tuple[np.ndarray, str] | None:
        while self._pos < len(self._files):
            f = self._files[self._pos]
            self._pos += 1
            img = read_image(f)
            if img is not None:
                return img, f.name
            self.unreadable += 1
            log.warning("skipping unreadable image %s", f)
        return None

    def close(self) -> None:
        self._files = []


class MemoryCapture:
    """Frames held in memory (load tests, ``agent simulate``). Behaves like a file source."""

    live = False

    def __init__(self, frames: Sequence[np.ndarray], name: str = "memory") -> None:
        self.frames = frames
        self.name = name
        self._pos = 0

    def describe(self) -> str:
        return self.name

    def open(self) -> None:
        self._pos = 0

    def read(self) -> tuple[np.ndarray, str] | None:
        if self._pos >= len(self.frames):
            return None
        self._pos += 1
        return self.frames[self._pos - 1], str(self._pos - 1)

    def close(self) -> None:
        pass


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def read_image(path: Path) -> np.ndarray | None:
    """Decode an image file with OpenCV; None when it is not a decodable image."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    return decode_image(data.tobytes())


def decode_image(data: bytes) -> np.ndarray | None:
    if not data:
        return None
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # e.g. a damaged header claiming an impossible size: OpenCV asserts
        return None
    return img if img is not None and img.size else None


def build_capture(section: SourceSection) -> Capture:
    if section.kind == "folder":
        return FolderCapture(Path(str(section.path)))
    return OpenCvCapture(section)
