"""Frame sources through OpenCV: USB index, RTSP/HTTP URL, video file, image folder, and frames held in
memory. OpenCV's failures (``isOpened()`` false, ``read()`` false) become :class:`SourceError` or a lost
frame here; nothing else touches ``cv2.VideoCapture`` on the live path.

Image sizes are bounded everywhere (``source.max_image_pixels``): folder images go through the guarded
decoder (:mod:`edge_agent.image_decode`: declared size checked before decoding), and a stream or video
whose declared frame size is above the limit is refused at open, before its first frame is read."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge_agent.errors import SourceError
from edge_agent.image_decode import ImageError, read_image_file
from firmware_configs.schema import DEFAULT_MAX_IMAGE_PIXELS, SourceSection

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


class Probe(Protocol):
    """A capture that can tell cheaply, without opening it, whether its camera answers."""

    def probe(self) -> bool: ...


class OpenCvCapture:
    """``cv2.VideoCapture`` on a USB index, a URL or a video file."""

    def __init__(self, section: SourceSection) -> None:
        self.section = section
        self.live = section.live
        self._cap: cv2.VideoCapture | None = None
        self._index = 0
        #: frames per second the stream or file declares (0 when it does not say)
        self.declared_fps = 0.0
        self.oversized = 0

    def describe(self) -> str:
        s = self.section
        return {"usb": f"usb:{s.index}", "url": str(s.url), "file": str(s.path)}.get(s.kind, s.kind)

    @property
    def read_timeout_ms(self) -> int:
        """OpenCV's read timeout: ``read_timeout_ms``, but at most the stall watchdog's ceiling for a
        live source, so a frozen stream's blocked read ends in time for the watchdog."""
        s = self.section
        if self.live and s.stall_intervals > 0:
            return min(s.read_timeout_ms, max(100, int(s.stall_max_s * 1000)))
        return s.read_timeout_ms

    def probe(self) -> bool:
        """Does the camera answer? A TCP connect to a URL's host and port, the device node of a USB
        camera, the file of a video. Never raises."""
        s = self.section
        if s.kind == "usb":
            return os.path.exists(f"/dev/video{s.index}")
        if s.kind != "url":
            return Path(str(s.path)).is_file()
        from urllib.parse import urlsplit

        try:
            u = urlsplit(str(s.url))
            port = u.port or {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}.get(u.scheme, 80)
            with socket.create_connection((u.hostname or "", port), timeout=0.2):
                return True
        except (OSError, ValueError):
            return False

    def open(self) -> None:
        s = self.section
        timeouts = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            s.open_timeout_ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            self.read_timeout_ms,
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
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if width * height > s.max_image_pixels:
            cap.release()
            raise SourceError(
                f"{self.describe()} declares {width}x{height} = {width * height:,} pixels per frame, above "
                f"the limit of {s.max_image_pixels:,} (source.max_image_pixels); no frame read"
            )
        self.declared_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
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
        if img.shape[0] * img.shape[1] > self.section.max_image_pixels:  # the stream changed size
            self.oversized += 1
            h, w = img.shape[:2]
            log.warning("%s: a %dx%d frame is above source.max_image_pixels", self.describe(), w, h)
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

    def __init__(self, path: Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        self.path = Path(path)
        self.max_pixels = max_pixels
        self._files: list[Path] = []
        self._pos = 0
        self.unreadable = 0
        self.last_error = ""

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
            try:
                return read_image_file(f, self.max_pixels), f.name
            except ImageError as exc:
                self.unreadable += 1
                self.last_error = f"{f.name}: {exc}"
                log.warning("skipping image %s: %s", f, exc)
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


def build_capture(section: SourceSection) -> Capture:
    if section.kind == "folder":
        return FolderCapture(Path(str(section.path)), section.max_image_pixels)
    return OpenCvCapture(section)
