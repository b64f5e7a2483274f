"""``edgeline predict`` on single image files takes the agent's decoder, as the local API does: a
truncated JPEG gets a clear error (not a verdict), an EXIF-rotated photo gets the API's verdict, and
a decompression bomb is refused before it is decoded, alone or in a folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edge_agent.http_api import PredictionApi
from edge_agent.inference import load_and_check
from edgeline.cli.main import cli
from edgeline.core.protocol.signing import TrustStore
from firmware_configs.schema import ApiSection
from tests.agent.helpers import png_bomb, with_exif_orientation
from tests.factories import tiny_frames

KEYS = ("verdict", "label", "confidence", "uncertain", "model", "model_version")


class Host:
    device_id = "api-1"

    def __init__(self, model: Any) -> None:
        self.current_model = model

    def counters(self) -> dict[str, Any]:
        return {}


def predict(bundle: Path, trust: Path, target: Path, *extra: str) -> tuple[int, list[dict[str, Any]], str]:
    res = CliRunner().invoke(
        cli, ["predict", "--bundle", str(bundle), "--trust", str(trust), "--format", "jsonl", *extra, str(target)]
    )
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    return res.exit_code, rows, res.output


def jpeg_of(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return bytes(buf)


def test_a_truncated_jpeg_gets_a_clear_error_not_a_verdict(tmp_path: Path, tiny_bundle: Path, trust_path: Path) -> None:
    jpg = jpeg_of(tiny_frames(1, seed=5)[0][0])
    cut = tmp_path / "part.jpg"
    cut.write_bytes(jpg[: len(jpg) * 2 // 3])
    code, rows, output = predict(tiny_bundle, trust_path, cut)
    assert code == 1, output
    assert len(rows) == 1 and "verdict" not in rows[0]
    assert "truncated JPEG" in rows[0]["error"] and "truncated JPEG" in output


def test_an_exif_rotated_photo_gets_the_verdict_the_api_gives(
    tmp_path: Path, tiny_bundle: Path, trust_path: Path, trust: TrustStore
) -> None:
    frames, _ = tiny_frames(12, seed=11)
    model = load_and_check(tiny_bundle, trust)
    api = PredictionApi(Host(model), ApiSection(enabled=True, port=0))
    differs = 0
    try:
        for i, frame in enumerate(frames):
            data = with_exif_orientation(jpeg_of(frame), 6)
            path = tmp_path / f"rotated_{i}.jpg"
            path.write_bytes(data)
            code, doc = api.predict(data)
            assert code == 200, doc
            exit_code, rows, output = predict(tiny_bundle, trust_path, path)
            assert exit_code == 0, output
            (row,) = rows
            assert {k: row[k] for k in KEYS} == {k: doc[k] for k in KEYS}
            assert row["ref"] == path.name
            _, upright = api.predict(jpeg_of(frame))
            differs += upright["confidence"] != doc["confidence"]
    finally:
        api.stop()
    assert differs > 0  # the orientation matters to this model, so the comparison means something


@pytest.fixture
def no_bomb_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    real = cv2.imdecode

    def guarded(buf: Any, flags: int) -> Any:
        assert len(buf) < 100_000, "the bomb reached cv2.imdecode"
        return real(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", guarded)


def test_a_decompression_bomb_is_refused_before_decoding_alone_and_in_a_folder(
    tmp_path: Path, tiny_bundle: Path, trust_path: Path, no_bomb_decode: None
) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(20000, 20000))
    code, rows, output = predict(tiny_bundle, trust_path, bomb)
    assert code == 1 and "20000x20000" in rows[0]["error"], output

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a_bomb.png").write_bytes(bomb.read_bytes())
    cv2.imwrite(str(folder / "b_good.png"), tiny_frames(1, seed=2)[0][0])
    code, rows, output = predict(tiny_bundle, trust_path, folder)
    assert code == 1, output
    assert [r["ref"] for r in rows] == ["a_bomb.png", "b_good.png"]
    assert "max_image_pixels" in rows[0]["error"] and rows[1]["verdict"] in ("ok", "defect")
    # the limit is an option
    code, rows, output = predict(tiny_bundle, trust_path, folder / "b_good.png", "--max-pixels", "100")
    assert code == 1 and "above the limit of 100" in rows[0]["error"], output
