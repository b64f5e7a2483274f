"""The one implementation of image preprocessing, used by training AND on the device.

Training/serving skew is the classic failure of this field, so there is exactly one code path from a
camera frame to the model input: :class:`Preprocessor`. The cloud trains on its output, the bundle
declares its :class:`~edgeline.core.protocol.manifest.PreprocessSpec`, and the device proves with the
bundle's self-test vectors that it computes what the cloud computed.

Only numpy and OpenCV are used here (no scikit-learn), so the agent carries it unchanged.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge_agent.angle_search import AngleSearcher
from edge_agent.errors import PreprocessError
from edge_agent.image_decode import ImageError, read_header
from edge_agent.registration import Placement, align, working_size
from edgeline.core.protocol.manifest import PreprocessSpec
from edgeline.core.protocol.telemetry import STAT_BINS, STAT_RANGES

#: a self-test frame travels in the signed manifest; it is checked before it is decoded
SELFTEST_MAX_PIXELS = 4096 * 4096


def stat_edges(name: str, bins: int = STAT_BINS) -> np.ndarray:
    lo, hi = STAT_RANGES[name]
    return np.linspace(lo, hi, bins + 1)


def to_color(frame: np.ndarray, color: str) -> np.ndarray:
    """Convert an OpenCV frame (BGR, BGRA or single channel) to the requested colour layout."""
    if frame is None or not isinstance(frame, np.ndarray) or frame.size == 0:
        raise PreprocessError("empty frame")
    if frame.dtype != np.uint8:
        raise PreprocessError(f"frames must be 8-bit, got {frame.dtype}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        if color == "gray":
            return frame
        bgr = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        return bgr if color == "bgr" else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise PreprocessError(f"unsupported frame shape {frame.shape}")
    if frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if color == "gray":
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if color == "rgb":
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return frame


def roi_origin(img: np.ndarray, roi: tuple[float, float, float, float] | None) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the ROI in ``img``'s pixels."""
    h, w = img.shape[:2]
    if roi is None:
        return 0, 0, w, h
    x0, y0 = round(roi[0] * w), round(roi[1] * h)
    x1, y1 = min(w, round((roi[0] + roi[2]) * w)), min(h, round((roi[1] + roi[3]) * h))
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise PreprocessError(f"roi {roi} leaves no pixels of a {w}x{h} frame")
    return x0, y0, x1, y1


def crop_roi(img: np.ndarray, roi: tuple[float, float, float, float] | None) -> np.ndarray:
    if roi is None:
        return img
    x0, y0, x1, y1 = roi_origin(img, roi)
    return img[y0:y1, x0:x1]


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (width, height). Large downscales go LINEAR to 4x the target, then AREA: a single
    AREA resize at a non-integer scale costs ~40x more on a 1080p frame for the same result."""
    w, h = size
    ih, iw = img.shape[:2]
    if (iw, ih) == (w, h):
        return img
    if iw > 4 * w and ih > 4 * h:
        img = cv2.resize(img, (4 * w, 4 * h), interpolation=cv2.INTER_LINEAR)
    interp = cv2.INTER_AREA if (iw >= w and ih >= h) else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)


def box_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (width, height): a box filter by the largest whole factor that stays at or above
    the target (OpenCV's fast integer INTER_AREA path), then linear to the exact size. The box
    filter removes what would alias; the last step shrinks by less than 2x."""
    w, h = size
    ih, iw = img.shape[:2]
    k = min(iw // w, ih // h) if iw >= w and ih >= h else 1
    if k >= 2:
        img = cv2.resize(img[: (ih // k) * k, : (iw // k) * k], (iw // k, ih // k), interpolation=cv2.INTER_AREA)
    if img.shape[1] == w and img.shape[0] == h:
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


@dataclass
class Preprocessor:
    """Frame -> model input, as declared by a :class:`PreprocessSpec`. Stateless apart from caches."""

    spec: PreprocessSpec
    _hog_index: np.ndarray | None = field(default=None, init=False, repr=False)
    _searcher: AngleSearcher | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        reg = self.spec.registration
        self._searcher = AngleSearcher(reg.search) if reg is not None and reg.search is not None else None
        if "hog" in self.spec.features:
            w, h = self.spec.size
            c = self.spec.hog_cell
            ys, xs = np.mgrid[0:h, 0:w]
            self._hog_index = ((ys // c) * (w // c) + xs // c).astype(np.int64).reshape(-1)

    # -- stages ---------------------------------------------------------------------------
    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """Colour conversion, ROI crop, resize and (when declared) registration: the uint8 image the
        features are computed on."""
        return self.place(frame)[0]

    def place(self, frame: np.ndarray) -> tuple[np.ndarray, Placement]:
        """:meth:`prepare`, and where the prepared image came from in the frame (for the defect
        region and for telling a part from something else)."""
        img = to_color(frame, self.spec.color)
        x0, y0, x1, y1 = roi_origin(img, self.spec.roi)
        img = img[y0:y1, x0:x1] if self.spec.roi is not None else img
        h, w = img.shape[:2]
        reg = self.spec.registration
        if reg is None:
            out = resize(img, self.spec.size)
            identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
            scale = (w / self.spec.size[0], h / self.spec.size[1])
            return out, Placement(identity, scale, (float(x0), float(y0)), None)
        work_w, work_h = working_size(reg, self.spec.size)
        work = resize(img, (work_w, work_h)) if reg.resample == "area" else box_resize(img, (work_w, work_h))
        out, matrix, sil = align(work, reg, self.spec.size, self._searcher)
        return out, Placement(matrix, (w / work_w, h / work_h), (float(x0), float(y0)), sil)

    def _normalise(self, img: np.ndarray) -> np.ndarray:
        x = img.astype(np.float32)
        if self.spec.normalize == "per_image":
            mean, std = cv2.meanStdDev(x)
            x = (x - np.float32(mean[0, 0])) * np.float32(1.0 / max(float(std[0, 0]), 1.0))
            x = x * np.float32(64.0 / 255.0) + np.float32(0.5)  # back on the 0..1 scale: +-2 std -> 0..1
            return (x - np.asarray(self.spec.mean, dtype=np.float32)) / np.asarray(self.spec.std, dtype=np.float32)
        x = x * np.float32(self.spec.scale)
        mean = np.asarray(self.spec.mean, dtype=np.float32)
        std = np.asarray(self.spec.std, dtype=np.float32)
        return (x - mean) / std

    def features_of(self, prepared: np.ndarray) -> np.ndarray:
        spec = self.spec
        if spec.features == "tensor":
            x = self._normalise(prepared)
            x = x[None, :, :] if x.ndim == 2 else np.transpose(x, (2, 0, 1))
            return np.ascontiguousarray(x, dtype=np.float32)
        parts: list[np.ndarray] = []
        if "pixels" in spec.features:
            pooled = resize(prepared, spec.pixel_pool)
            parts.append(self._normalise(pooled).reshape(-1))
        if self._hog_index is not None:
            parts.append(self._hog(prepared))
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _hog(self, prepared: np.ndarray) -> np.ndarray:
        """Histograms of oriented gradients: unsigned orientation, per-cell magnitude-weighted
        histograms, L2-normalised over 2x2-cell blocks with stride one cell (Dalal-Triggs layout).
        OpenCV 5 dropped ``HOGDescriptor`` from the main modules, so it is computed here."""
        assert self._hog_index is not None
        c, bins = self.spec.hog_cell, self.spec.hog_bins
        w, h = self.spec.size
        img = prepared.astype(np.float32)
        gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=1)
        gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=1)
        mag, ang = cv2.cartToPolar(gx, gy, angleInDegrees=True)
        b = np.minimum((np.mod(ang, 180.0) * (bins / 180.0)).astype(np.int64), bins - 1).reshape(-1)
        ncy, ncx = h // c, w // c
        hist = np.bincount(self._hog_index * bins + b, weights=mag.reshape(-1), minlength=ncy * ncx * bins).reshape(
            ncy, ncx, bins
        )
        blocks = np.concatenate([hist[:-1, :-1], hist[:-1, 1:], hist[1:, :-1], hist[1:, 1:]], axis=2)
        norm = np.sqrt(np.sum(blocks * blocks, axis=2, keepdims=True) + 1e-6)
        return (blocks / norm).astype(np.float32).reshape(-1)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return self.features_of(self.prepare(frame))

    def batch(self, frames: list[np.ndarray]) -> np.ndarray:
        if not frames:
            raise PreprocessError("empty batch")
        return np.stack([self(f) for f in frames])

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one model input (without the batch dimension)."""
        w, h = self.spec.size
        if self.spec.features == "tensor":
            return (1 if self.spec.color == "gray" else 3, h, w)
        return self(np.zeros((h, w), dtype=np.uint8)).shape


def input_stats(prepared: np.ndarray) -> dict[str, float]:
    """Scalar statistics of a prepared (colour-converted, cropped, resized) image, for drift tracking.

    Aggregated on the device into histograms; the values themselves never leave it.
    """
    gray = prepared if prepared.ndim == 2 else cv2.cvtColor(prepared, cv2.COLOR_BGR2GRAY)
    mean, std = cv2.meanStdDev(gray)
    lap = cv2.Laplacian(gray, cv2.CV_32F)
    edges = cv2.Canny(gray, 50, 150)
    return {
        "brightness": float(mean[0, 0]) / 255.0,
        "contrast": float(std[0, 0]) / 255.0,
        "sharpness": math.log10(1.0 + float(lap.var())),
        "edge_density": float(np.count_nonzero(edges)) / edges.size,
    }


def encode_png_b64(img: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise PreprocessError("PNG encoding failed")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def decode_png_b64(text: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise PreprocessError("self-test image is not valid base64") from exc
    try:
        header = read_header(raw)
    except ImageError as exc:
        raise PreprocessError(f"self-test image: {exc}") from exc
    if header.format != "PNG" or header.pixels > SELFTEST_MAX_PIXELS:
        raise PreprocessError(
            f"self-test image must be a PNG of at most {SELFTEST_MAX_PIXELS} pixels "
            f"(declares {header.format} {header.width}x{header.height}); not decoded"
        )
    img = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise PreprocessError("self-test image is not a decodable PNG")
    return img
