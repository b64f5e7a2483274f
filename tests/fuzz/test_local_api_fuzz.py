"""Fuzz test of the local prediction API's body parser (``POST /predict``): any bytes, and real PNG,
JPEG and BMP images with bytes flipped, cut short or spliced, get an answer (200, 400, 422), never an
exception out of the handler, and a 200 only with a verdict from the serving model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from converters.keys import KeyPaths
from edge_agent.inference import load_and_check
from edge_agent.model import LoadedModel
from edgeline.core.protocol.signing import TrustStore
from firmware_configs.schema import ApiSection
from tests.factories import tiny_frames
from tests.fuzz.conftest import fuzz_settings

#: an ApiSection on a free port; the server is never started, only its parser is called
SECTION = ApiSection(enabled=True, port=0)


class Host:
    def __init__(self, model: LoadedModel) -> None:
        self.device_id = "fuzz-1"
        self.current_model = model

    def counters(self) -> dict[str, Any]:
        return {}


@pytest.fixture(scope="module")
def api(tiny_bundle: Path, key_dir: Path) -> Any:
    from edge_agent.http_api import PredictionApi

    model = load_and_check(tiny_bundle, TrustStore.load(KeyPaths(key_dir).trust))
    server = PredictionApi(Host(model), SECTION)
    yield server
    server.stop()


def encoded(ext: str) -> bytes:
    frame = tiny_frames(1, seed=3)[0][0]
    ok, buf = cv2.imencode(ext, frame)
    assert ok
    return bytes(buf)


IMAGES = [encoded(".png"), encoded(".jpg"), encoded(".bmp")]


@st.composite
def damaged_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(IMAGES)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "cut", "splice"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[i:]
        else:
            data[i:i] = draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


@fuzz_settings()
@given(st.binary(max_size=2048) | damaged_images())
def test_predict_answers_any_body(api: Any, body: bytes) -> None:
    code, doc = api.predict(body)
    assert code in (200, 400, 422), (code, doc)
    if code == 200:
        assert doc["label"] in ("ok", "spot") and 0.0 <= doc["confidence"] <= 1.0
        assert np.isfinite(doc["confidence"])
    else:
        assert doc["error"]


def test_an_image_header_claiming_an_impossible_size_is_a_400(api: Any) -> None:
    """Found by the fuzz test: OpenCV asserts (cv2.error) on such a header instead of returning None."""
    bmp = bytearray(IMAGES[2])
    bmp[18:22] = (0x7FFFFFFF).to_bytes(4, "little")  # BITMAPINFOHEADER width
    code, doc = api.predict(bytes(bmp))
    assert code == 400 and "not a decodable image" in doc["error"]
