"""Self-test frames travel inside the signed manifest: a hostile one (a decompression bomb, another
format) is refused from its header, before OpenCV decodes it."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest

from edge_agent.errors import PreprocessError
from edge_agent.preprocessing import decode_png_b64, encode_png_b64
from tests.agent.helpers import png_bomb


def test_a_bomb_in_a_self_test_case_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_a: object, **_k: object) -> None:
        raise AssertionError("cv2.imdecode must not see the bomb")

    text = base64.b64encode(png_bomb()).decode("ascii")
    monkeypatch.setattr(cv2, "imdecode", never)
    with pytest.raises(PreprocessError, match=r"at most 16777216 pixels .*20000x20000"):
        decode_png_b64(text)


def test_a_jpeg_self_test_frame_is_refused_and_a_png_round_trips() -> None:
    ok, jpg = cv2.imencode(".jpg", np.full((8, 8), 100, np.uint8))
    assert ok
    with pytest.raises(PreprocessError, match="must be a PNG"):
        decode_png_b64(base64.b64encode(jpg.tobytes()).decode("ascii"))
    img = np.arange(64, dtype=np.uint8).reshape(8, 8)
    assert np.array_equal(decode_png_b64(encode_png_b64(img)), img)
