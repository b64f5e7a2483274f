"""Guarded image decoding: the one decoder of the device side for encoded images (the local API,
``edgeline predict`` on image files, image-folder sources).

``cv2.imdecode`` has no pixel limit: a 389 KB PNG declaring 20000x20000 pixels takes seconds and
gigabytes to decode. So the width and height an image *declares* are read from its header first, by
the small parsers below, and an image above ``max_pixels`` is refused before any pixel is decoded.
A format whose header is not parsed here is refused too: its size cannot be known in advance.

Formats: PNG, JPEG, BMP, TIFF (classic, first page), WebP (VP8, VP8L, VP8X) and PNM (P1-P6). JPEG
and PNG must also be complete (an end-of-image marker after the image data, an ``IEND`` chunk): a
truncated JPEG decodes "successfully" into grey rows otherwise, and would get a verdict.

EXIF orientation is applied (OpenCV's ``IMREAD_COLOR`` does it), so a rotated photo is inspected
upright, the same way on every path.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_agent.errors import EdgeAgentError
from firmware_configs.schema import DEFAULT_MAX_IMAGE_PIXELS

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "ImageError",
    "ImageHeader",
    "ImageTooLarge",
    "decode_image",
    "read_header",
    "read_image_file",
]

log = logging.getLogger(__name__)

#: A file larger than this is not read into memory for decoding (an encoded image of the largest
#: accepted size is far smaller than this in any supported format but uncompressed BMP/PNM/TIFF).
MAX_FILE_BYTES = 256 * 1024 * 1024

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
#: JPEG start-of-frame markers (C4 = DHT, C8 = JPG extension, CC = DAC are not frames).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PNM_MAGIC = frozenset(b"123456")
#: OpenCV's own ceilings (OPENCV_IO_MAX_IMAGE_WIDTH/HEIGHT/PIXELS defaults): a header declaring more
#: is damaged, not merely large.
_MAX_SIDE = 1 << 20
_MAX_PIXELS = 1 << 30


class ImageError(EdgeAgentError):
    """Bytes that are not an image the agent decodes: unknown format, damaged or truncated."""


class ImageTooLarge(ImageError):
    """An image declares more pixels than the configured limit; it was not decoded."""

    def __init__(self, header: ImageHeader, max_pixels: int) -> None:
        super().__init__(
            f"{header.format} image declares {header.width}x{header.height} = {header.pixels:,} pixels, "
            f"above the limit of {max_pixels:,} (max_image_pixels); not decoded"
        )
        self.header = header
        self.max_pixels = max_pixels


@dataclass(frozen=True, slots=True)
class ImageHeader:
    format: str
    width: int
    height: int
    #: the image data is complete (JPEG: an end-of-image marker after the scan; PNG: an IEND chunk)
    complete: bool = True

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_header(data: bytes) -> ImageHeader:
    """The format and the declared size of an encoded image, read from its header alone."""
    if data.startswith(_PNG_SIG):
        return _png(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if data.startswith(b"BM"):
        return _bmp(data)
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return _tiff(data)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return _webp(data)
    if len(data) >= 2 and data[0] == ord("P") and data[1] in _PNM_MAGIC:
        return _pnm(data)
    if data.startswith((b"II+\x00", b"MM\x00+")):
        raise ImageError("BigTIFF images are not supported")
    raise ImageError("not a decodable image (the agent decodes PNG, JPEG, BMP, TIFF, WebP and PNM)")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an encoded image to BGR (EXIF orientation applied), after checking its declared size.

    Raises :class:`ImageTooLarge` above ``max_pixels`` (nothing decoded) and :class:`ImageError` for
    anything else that is not a complete image."""
    if not data:
        raise ImageError("empty body: not a decodable image")
    header = read_header(data)
    if header.width <= 0 or header.height <= 0:
        raise ImageError(f"{header.format} image declares an empty size {header.width}x{header.height}")
    if max(header.width, header.height) > _MAX_SIDE or header.pixels > _MAX_PIXELS:
        raise ImageError(
            f"not a decodable image: the {header.format} header declares an impossible size "
            f"{header.width}x{header.height}"
        )
    if header.pixels > max_pixels:
        raise ImageTooLarge(header, max_pixels)
    if not header.complete:
        raise ImageError(f"truncated {header.format} image (its data ends before the end-of-image marker)")
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. a damaged header claiming an impossible size: OpenCV asserts
        raise ImageError(f"not a decodable {header.format} image: {_first_line(str(exc))}") from exc
    if img is None or not img.size:
        raise ImageError(f"not a decodable {header.format} image (damaged or truncated)")
    if img.shape[0] * img.shape[1] > max_pixels:  # the header lied: never hand this on
        raise ImageError(f"{header.format} image decoded to {img.shape[1]}x{img.shape[0]}, not its declared size")
    return img


def read_image_file(path: Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """:func:`decode_image` on a file's bytes; :class:`ImageError` when it cannot be read."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{p.name}: {size:,} bytes is larger than any image the agent decodes")
        data = p.read_bytes()
    except OSError as exc:
        raise ImageError(f"{p.name}: cannot read: {exc.strerror or exc}") from exc
    return decode_image(data, max_pixels)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[-1][:200] if text.strip() else "OpenCV error"


def _need(data: bytes, n: int, fmt: str) -> None:
    if len(data) < n:
        raise ImageError(f"truncated {fmt} header")


def _png(data: bytes) -> ImageHeader:
    _need(data, 24, "PNG")
    if data[12:16] != b"IHDR":
        raise ImageError("damaged PNG: the first chunk is not IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return ImageHeader("PNG", width, height, complete=data.rfind(b"IEND") > 24)


def _jpeg(data: bytes) -> ImageHeader:
    i, n = 2, len(data)
    size: tuple[int, int] | None = None
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise ImageError(f"damaged JPEG: no marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # stand-alone markers
            i += 2
            continue
        if marker == 0xD9:
            break
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            raise ImageError(f"damaged JPEG: segment length {length} at byte {i}")
        if marker in _SOF:
            _need(data, i + 9, "JPEG")
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            if height == 0:
                raise ImageError("JPEG declares its height later (DNL marker): not supported")
            size = (width, height)
        elif marker == 0xDA:  # start of scan: the entropy-coded data follows
            if size is None:
                break
            return ImageHeader("JPEG", size[0], size[1], complete=data.rfind(b"\xff\xd9") > i)
        i += 2 + length
    if size is None:
        raise ImageError("damaged JPEG: no frame header before the image data")
    return ImageHeader("JPEG", size[0], size[1], complete=False)


def _bmp(data: bytes) -> ImageHeader:
    _need(data, 26, "BMP")
    (hsize,) = struct.unpack("<I", data[14:18])
    if hsize == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", data[18:22])
    elif hsize >= 16:
        width, height = struct.unpack("<ii", data[18:26])
    else:
        raise ImageError(f"damaged BMP: info header of {hsize} bytes")
    if width < 0:  # a negative height means top-down rows; a negative width means nothing
        raise ImageError(f"damaged BMP: width {width}")
    return ImageHeader("BMP", width, abs(height))


def _tiff(data: bytes) -> ImageHeader:
    end = "<" if data[:2] == b"II" else ">"
    _need(data, 8, "TIFF")
    (ifd,) = struct.unpack(end + "I", data[4:8])
    _need(data, ifd + 2, "TIFF")
    (count,) = struct.unpack(end + "H", data[ifd : ifd + 2])
    dims: dict[int, int] = {}
    for k in range(count):
        at = ifd + 2 + 12 * k
        _need(data, at + 12, "TIFF")
        tag, kind = struct.unpack(end + "HH", data[at : at + 4])
        if tag in (256, 257):
            if kind == 3:
                (dims[tag],) = struct.unpack(end + "H", data[at + 8 : at + 10])
            elif kind == 4:
                (dims[tag],) = struct.unpack(end + "I", data[at + 8 : at + 12])
            else:
                raise ImageError(f"damaged TIFF: image size tag {tag} of type {kind}")
    if 256 not in dims or 257 not in dims:
        raise ImageError("damaged TIFF: no image width and length in the first directory")
    return ImageHeader("TIFF", dims[256], dims[257])


def _webp(data: bytes) -> ImageHeader:
    _need(data, 30, "WebP")
    chunk = data[12:16]
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise ImageError("damaged WebP: no VP8 start code")
        width, height = struct.unpack("<HH", data[26:30])
        return ImageHeader("WebP", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            raise ImageError("damaged WebP: no VP8L signature")
        (bits,) = struct.unpack("<I", data[21:25])
        return ImageHeader("WebP", 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF))
    if chunk == b"VP8X":
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return ImageHeader("WebP", width, height)
    raise ImageError(f"damaged WebP: unknown first chunk {chunk!r}")


def _pnm(data: bytes) -> ImageHeader:
    tokens: list[bytes] = []
    i, n = 2, min(len(data), 4096)
    while len(tokens) < 2 and i < n:
        c = data[i]
        if c == ord("#"):
            while i < n and data[i] not in b"\r\n":
                i += 1
        elif chr(c).isspace():
            i += 1
        else:
            j = i
            while j < n and not chr(data[j]).isspace() and data[j] != ord("#"):
                j += 1
            tokens.append(data[i:j])
            i = j
    if len(tokens) < 2 or not all(t.isdigit() for t in tokens):
        raise ImageError("damaged PNM header: no width and height")
    return ImageHeader("PNM", int(tokens[0]), int(tokens[1]))
