"""One simulated line: its part sequence, its lighting (with a linear ramp when it changes) and the
ground-truth log of every frame it served. Used by the camera simulator (:mod:`.camera`)."""

from __future__ import annotations

import csv
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from converters.synth import ALL_CLASSES, CLASSES, Conditions, Lighting, render_part

TRUTH_FIELDS = ("conn", "index", "t", "label", "brightness", "contrast")


@dataclass(frozen=True)
class Ramp:
    """Lighting that moves linearly from ``start`` to ``target`` between ``t0`` and ``t1``."""

    start: tuple[float, float] = (0.0, 1.0)
    target: tuple[float, float] = (0.0, 1.0)
    t0: float = 0.0
    t1: float = 0.0

    def at(self, t: float) -> tuple[float, float]:
        if t >= self.t1 or self.t1 <= self.t0:
            return self.target
        if t <= self.t0:
            return self.start
        f = (t - self.t0) / (self.t1 - self.t0)
        return (
            self.start[0] + f * (self.target[0] - self.start[0]),
            self.start[1] + f * (self.target[1] - self.start[1]),
        )


def draw_label(rng: np.random.Generator, defect_rate: float) -> str:
    """``ok`` with probability ``1 - defect_rate``, otherwise one of the defects, evenly."""
    if rng.random() >= defect_rate:
        return "ok"
    defects = [c for c in CLASSES if c != "ok"]
    return defects[int(rng.integers(0, len(defects)))]


def check_kind(kind: str | None, share: float) -> None:
    """A part kind the renderer knows (or None: no extra kind) and a share in [0, 1]."""
    if kind is not None and kind not in ALL_CLASSES:
        raise ValueError(f"unknown part kind {kind!r}; known: {', '.join(ALL_CLASSES)}")
    if not 0.0 <= share <= 1.0:
        raise ValueError("share must be between 0 and 1")


class LineFeed:
    """One line: the part sequence, its lighting, and its ground-truth log. Thread-safe.

    :meth:`set_parts` makes a share of the parts one given kind (a defect kind the models may never
    have seen, e.g. ``crack``); the other parts keep following the line's usual mix."""

    def __init__(
        self, name: str, seed: int, truth_path: Path, *, defect_rate: float = 0.5, jpeg_quality: int = 95
    ) -> None:
        self.name = name
        self.defect_rate = defect_rate
        self.jpeg_quality = jpeg_quality
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._ramp = Ramp()
        self._extra: tuple[str | None, float] = (None, 0.0)
        self.served = 0
        self.connections = 0
        self._fh: IO[str] = open(truth_path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._csv = csv.writer(self._fh)
        self._csv.writerow(TRUTH_FIELDS)
        self._last_flush = time.monotonic()

    def connect(self) -> int:
        with self._lock:
            self.connections += 1
            return self.connections

    def set_lighting(self, brightness: float, contrast: float, ramp_s: float) -> None:
        Lighting(brightness, contrast)  # validates (raises DatasetError)
        now = time.time()
        with self._lock:
            current = self._ramp.at(now)
            self._ramp = Ramp(current, (float(brightness), float(contrast)), now, now + max(0.0, ramp_s))

    def set_parts(self, kind: str | None, share: float) -> None:
        check_kind(kind, share)
        with self._lock:
            self._extra = (kind, share if kind is not None else 0.0)

    def parts(self) -> dict[str, object]:
        with self._lock:
            return {"extra_kind": self._extra[0], "extra_share": self._extra[1]}

    def _draw(self) -> str:
        kind, share = self._extra
        if kind is not None and self._rng.random() < share:
            return kind
        return draw_label(self._rng, self.defect_rate)

    def lighting(self) -> dict[str, float]:
        with self._lock:
            b, c = self._ramp.at(time.time())
            return {
                "brightness": round(b, 3),
                "contrast": round(c, 4),
                "target_brightness": self._ramp.target[0],
                "target_contrast": self._ramp.target[1],
                "ramp_ends": self._ramp.t1,
            }

    def next_jpeg(self, conn: int, index: int) -> bytes:
        """Render, encode and log the next part for connection ``conn`` (frame ``index`` of it)."""
        with self._lock:
            if self._fh.closed:
                raise OSError("the camera is shutting down")
            now = time.time()
            label = self._draw()
            b, c = self._ramp.at(now)
            frame = render_part(label, self._rng, conditions=Conditions(lighting=Lighting(b, c)))
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            self._csv.writerow((conn, index, f"{now:.3f}", label, f"{b:.3f}", f"{c:.4f}"))
            self.served += 1
            if now - self._last_flush > 0.5:
                self._fh.flush()
                self._last_flush = now
            return bytes(buf.tobytes())

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                self._fh.close()
