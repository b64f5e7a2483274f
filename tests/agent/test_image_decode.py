"""The guarded image decoder: declared sizes read from the headers OpenCV itself writes (every format
the agent accepts), a decompression bomb refused without being decoded, truncated and unknown
images refused with a clear error, EXIF orientation applied."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.image_decode import ImageError, ImageTooLarge, decode_image, read_header
from tests.agent.helpers import png_bomb, with_exif_orientation
from tests.factories import tiny_frames

FRAME = tiny_frames(1, seed=3)[0][0]  # 96 x 128 BGR


def encoded(ext: str, img: np.ndarray = FRAME) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok, ext
    return bytes(buf)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return png_bomb(20000, 20000)


@pytest.fixture
def no_bomb_decode(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """cv2.imdecode, but it refuses (and records) any buffer of more than 100 KB: in these tests only
    the bomb is that large, so a call proves the bomb reached the decoder."""
    calls: list[int] = []
    real: Callable[..., Any] = cv2.imdecode

    def guarded(buf: Any, flags: int) -> Any:
        if len(buf) > 100_000:
            calls.append(len(buf))
            raise AssertionError("the bomb reached cv2.imdecode")
        return real(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", guarded)
    return calls


@pytest.mark.parametrize(
    ("ext", "fmt"),
    [(".png", "PNG"), (".jpg", "JPEG"), (".bmp", "BMP"), (".tiff", "TIFF"), (".webp", "WebP"), (".ppm", "PNM")],
)
def test_declared_size_is_read_from_every_accepted_format(ext: str, fmt: str) -> None:
    data = encoded(ext)
    h = read_header(data)
    assert (h.format, h.width, h.height, h.complete) == (fmt, 128, 96, True)
    img = decode_image(data)
    assert img.shape == (96, 128, 3)


def test_lossless_webp_and_grey_pnm_headers() -> None:
    ok, buf = cv2.imencode(".webp", FRAME, [cv2.IMWRITE_WEBP_QUALITY, 101])  # above 100: lossless
    assert ok
    lossless = bytes(buf)
    assert lossless[12:16] in (b"VP8L", b"VP8X")
    assert (read_header(lossless).width, read_header(lossless).height) == (128, 96)
    grey = encoded(".pgm", cv2.cvtColor(FRAME, cv2.COLOR_BGR2GRAY))
    assert (read_header(grey).width, read_header(grey).height) == (128, 96)


def test_a_png_bomb_is_refused_before_decoding(bomb: bytes, no_bomb_decode: list[int]) -> None:
    assert len(bomb) < 400_000  # small on the wire
    with pytest.raises(ImageTooLarge) as info:
        decode_image(bomb)
    assert "20000x20000" in str(info.value) and "max_image_pixels" in str(info.value)
    assert no_bomb_decode == []


def test_the_limit_is_configurable() -> None:
    data = encoded(".png")
    assert decode_image(data, max_pixels=128 * 96).shape == (96, 128, 3)
    with pytest.raises(ImageTooLarge):
        decode_image(data, max_pixels=128 * 96 - 1)


def test_a_truncated_jpeg_is_refused() -> None:
    jpg = encoded(".jpg")
    cut = jpg[: len(jpg) - 40]
    with pytest.raises(ImageError, match="truncated JPEG"):
        decode_image(cut)


@pytest.mark.parametrize(
    "data",
    [b"", b"GIF89a" + b"\0" * 64, b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM" + b"\0" * 10, b"P6\n# no size\n"],
)
def test_unknown_or_damaged_images_get_a_clear_error(data: bytes) -> None:
    with pytest.raises(ImageError):
        decode_image(data)


def test_a_damaged_header_claiming_an_impossible_size_is_an_image_error() -> None:
    bmp = bytearray(encoded(".bmp"))
    bmp[18:22] = (0x7FFFFFFF).to_bytes(4, "little")  # width 2**31 - 1: no real image is that wide
    with pytest.raises(ImageError, match="impossible size") as info:
        decode_image(bytes(bmp), max_pixels=1 << 40)
    assert not isinstance(info.value, ImageTooLarge)  # damaged (400 in the API), not merely large (422)


def test_exif_orientation_is_applied() -> None:
    rotated = with_exif_orientation(encoded(".jpg"), 6)
    assert read_header(rotated).width == 128
    assert decode_image(rotated).shape == (128, 96, 3)  # shown upright: turned 90 degrees


# -- fuzz: damaged headers of every accepted format ----------------------------------------------------

_SAMPLES = [encoded(ext) for ext in (".png", ".jpg", ".bmp", ".tiff", ".webp", ".ppm")] + [
    encoded(".webp", FRAME)[:12] + b"VP8L" + bytes(32),
    b"P5\n# c\n128 96\n255\n" + bytes(64),
]


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SAMPLES)))
    for _ in range(draw(st.integers(0, 6))):
        if not data:
            break
        i = draw(st.integers(0, min(len(data) - 1, 200)))  # the headers live near the start
        op = draw(st.sampled_from(["flip", "cut", "splice", "set"]))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[i:]
        elif op == "splice":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[i] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged() | st.binary(max_size=64))
def test_any_damaged_header_gets_an_image_error_or_a_bounded_image(data: bytes) -> None:
    try:
        header = read_header(data)
    except ImageError:
        header = None
    if header is not None:
        assert header.width >= 0 and header.height >= 0
    try:
        img = decode_image(data, max_pixels=200_000)
    except ImageError:
        return
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[0] * img.shape[1] <= 200_000
