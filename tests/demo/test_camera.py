"""The camera simulator over real loopback HTTP: the MJPEG stream OpenCV reads, the ground truth it
logs, and its control API with bad input."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeline.demo.camera import CameraServer
from edgeline.demo.linefeed import LineFeed, Ramp
from edgeline.demo.scoring import load_truth


@pytest.fixture
def server(tmp_path: Path) -> Iterator[CameraServer]:
    feeds = {n: LineFeed(n, seed=i, truth_path=tmp_path / f"{n}.csv") for i, n in enumerate(("a", "b"))}
    srv = CameraServer(feeds, fps=60.0)
    threading.Thread(target=srv.serve, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()


def _post(srv: CameraServer, path: str, body: bytes) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(f"http://127.0.0.1:{srv.port}{path}", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_ramp_interpolates_and_holds() -> None:
    r = Ramp((0.0, 1.0), (-60.0, 0.7), t0=10.0, t1=13.0)
    assert r.at(9.0) == (0.0, 1.0)
    assert r.at(11.5) == pytest.approx((-30.0, 0.85))
    assert r.at(20.0) == (-60.0, 0.7)


def test_opencv_reads_the_stream_and_each_frame_has_its_truth(server: CameraServer, tmp_path: Path) -> None:
    cap = cv2.VideoCapture(f"http://127.0.0.1:{server.port}/a.mjpg", cv2.CAP_FFMPEG)
    assert cap.isOpened()
    frames = []
    for _ in range(12):
        ok, img = cap.read()
        assert ok
        frames.append(img)
    cap.release()
    assert frames[0].shape == (240, 320, 3)
    server.shutdown()
    truth = load_truth(tmp_path / "a.csv")
    assert list(truth) == [1]  # one connection
    rows = truth[1]
    assert len(rows) >= 12
    assert {r.label for r in rows} <= {"ok", "scratch", "dent", "missing_hole"}
    assert all(r.brightness == 0.0 and r.contrast == 1.0 for r in rows)
    assert server.status()["lines"]["b"]["served"] == 0  # the other line served nobody


def test_lighting_change_is_applied_to_the_frames(server: CameraServer, tmp_path: Path) -> None:
    code, doc = _post(server, "/a/lighting", json.dumps({"brightness": -80, "contrast": 0.6, "ramp_s": 0}).encode())
    assert code == 200 and doc["brightness"] == -80.0
    cap = cv2.VideoCapture(f"http://127.0.0.1:{server.port}/a.mjpg", cv2.CAP_FFMPEG)
    dark = [cap.read()[1] for _ in range(5)]
    cap.release()
    cap = cv2.VideoCapture(f"http://127.0.0.1:{server.port}/b.mjpg", cv2.CAP_FFMPEG)
    normal = [cap.read()[1] for _ in range(5)]
    cap.release()
    assert np.mean([f.mean() for f in dark]) < np.mean([f.mean() for f in normal]) - 30
    server.shutdown()
    rows = load_truth(tmp_path / "a.csv")[1]
    assert all(r.brightness == -80.0 and r.contrast == 0.6 for r in rows)


def test_a_new_part_kind_is_shown_on_one_line_and_logged(server: CameraServer, tmp_path: Path) -> None:
    code, doc = _post(server, "/a/parts", json.dumps({"kind": "crack", "share": 1.0}).encode())
    assert code == 200 and doc == {"extra_kind": "crack", "extra_share": 1.0}
    assert server.status()["lines"]["b"]["extra_kind"] is None
    cap = cv2.VideoCapture(f"http://127.0.0.1:{server.port}/a.mjpg", cv2.CAP_FFMPEG)
    assert all(cap.read()[0] for _ in range(6))
    cap.release()
    code, doc = _post(server, "/a/parts", json.dumps({"kind": None}).encode())
    assert code == 200 and doc["extra_kind"] is None
    cap = cv2.VideoCapture(f"http://127.0.0.1:{server.port}/a.mjpg", cv2.CAP_FFMPEG)
    assert all(cap.read()[0] for _ in range(30))
    cap.release()
    server.shutdown()
    first, second = load_truth(tmp_path / "a.csv")[1], load_truth(tmp_path / "a.csv")[2]
    assert {r.label for r in first[:6]} == {"crack"}  # (the stream may run on a little after the reset)
    assert "crack" not in {r.label for r in second} and len({r.label for r in second}) > 1  # the usual mix again


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"kind": "sprocket"}).encode(),  # the renderer does not know it
        json.dumps({"kind": "crack", "share": 1.5}).encode(),
        json.dumps({"kind": 3}).encode(),
        json.dumps({"kind": "crack", "colour": "red"}).encode(),
        b"{",
    ],
)
def test_bad_part_requests_are_refused(server: CameraServer, body: bytes) -> None:
    got, doc = _post(server, "/a/parts", body)
    assert got == 400 and doc["error"]
    assert server.status()["lines"]["a"]["extra_kind"] is None


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/a/lighting", b"{not json", 400),
        ("/a/lighting", json.dumps({"brightness": -999}).encode(), 400),  # outside -255..255
        ("/a/lighting", json.dumps({"contrast": 0}).encode(), 400),
        ("/a/lighting", json.dumps({"brightness": -10, "colour": "red"}).encode(), 400),  # unknown key
        ("/a/lighting", json.dumps([1, 2]).encode(), 400),
        ("/a/lighting", b"x" * 5000, 400),  # oversized
        ("/nope/lighting", json.dumps({"brightness": -10}).encode(), 404),
    ],
)
def test_bad_control_requests_are_refused(server: CameraServer, path: str, body: bytes, code: int) -> None:
    got, doc = _post(server, path, body)
    assert got == code
    assert doc["error"]
    assert server.status()["lines"]["a"]["target_brightness"] == 0.0  # nothing changed


def test_unknown_stream_is_404(server: CameraServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/zzz.mjpg", timeout=5)
    assert err.value.code == 404
