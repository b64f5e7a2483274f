"""Helpers for the agent tests: a loopback MJPEG camera (that can also freeze with its connections
open), video and folder writers, config builders, crafted images (a decompression bomb, an
EXIF-rotated JPEG), and a plugin that records every result in order."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_agent.plugins import AgentHandle, FrameResult
from firmware_configs.loader import parse_config
from firmware_configs.schema import DeviceConfig


def write_video(path: Path, frames: Sequence[np.ndarray], fourcc: str = "MJPG", fps: float = 25.0) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} to {path}"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def write_folder(folder: Path, frames: Sequence[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        assert cv2.imwrite(str(folder / f"img_{i:04d}.png"), f)
    return folder


def make_config(tmp: Path, source: dict[str, Any], **sections: Any) -> DeviceConfig:
    doc: dict[str, Any] = {
        "device": {"id": "dev-1", "groups": ["line-1"]},
        "source": source,
        "sinks": {"jsonl": {"path": str(tmp / "verdicts.jsonl")}},
        "status": {"path": str(tmp / "status.json"), "interval_s": 0.2},
        "cloud": {"enabled": False},
        "telemetry": {"enabled": False},
    }
    doc.update(sections)
    return parse_config(doc, "test")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def verdicts(path: Path) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(path) if r["type"] == "verdict"]


def events(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(path) if r["type"] == "event" and (kind is None or r["kind"] == kind)]


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Recorder:
    """A plugin that keeps (frame_id, model version, verdict) of every result, in order."""

    name = "recorder"

    def __init__(self, on_result: Callable[[FrameResult], None] | None = None) -> None:
        self.results: list[FrameResult] = []
        self.started = False
        self.stopped = False
        self.agent: AgentHandle | None = None
        self._hook = on_result

    def start(self, agent: AgentHandle) -> None:
        self.started = True
        self.agent = agent

    def on_result(self, result: FrameResult) -> None:
        self.results.append(result)
        if self._hook is not None:
            self._hook(result)

    def stop(self) -> None:
        self.stopped = True


class MjpegCamera:
    """An HTTP MJPEG camera on 127.0.0.1 (multipart/x-mixed-replace), served by the test itself.
    ``stop()`` kills it (open streams end, new connections are refused); ``start()`` brings it back on
    the same port."""

    def __init__(self, frames: Sequence[np.ndarray], fps: float = 60.0) -> None:
        self.jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
        self.fps = fps
        self.port = _free_port()
        self.served = 0
        self._server: ThreadingHTTPServer | None = None
        self._alive = threading.Event()
        self._frozen = threading.Event()

    def freeze(self) -> None:
        """Like a camera process that hangs: connections stay open (and new ones are accepted), but
        no byte is sent on any of them until :meth:`thaw`."""
        self._frozen.set()

    def thaw(self) -> None:
        self._frozen.clear()

    def _hold(self) -> None:
        while self._frozen.is_set() and self._alive.is_set():
            time.sleep(0.005)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> None:
        cam = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                cam._hold()
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while cam._alive.is_set():
                        cam._hold()
                        jpg = cam.jpegs[i % len(cam.jpegs)]
                        head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                        self.wfile.write(head + jpg + b"\r\n")
                        cam.served += 1
                        i += 1
                        time.sleep(1.0 / cam.fps)
                except OSError:
                    pass

        server = _ReusableServer(("127.0.0.1", self.port), Handler)
        self._server = server
        self._alive.set()
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._alive.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A valid grey PNG of ``width`` x ``height`` black pixels: a few hundred KB that decode to
    ``width * height`` bytes (20000x20000: ~390 KB -> 400 MB, several GB while OpenCV decodes it).
    Built in slices, so making it never holds the pixels."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    parts = []
    block = 256
    for start in range(0, height, block):
        parts.append(comp.compress(row * min(block, height - start)))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """``jpeg`` with an APP1 Exif segment whose Orientation tag (0x0112) is ``orientation``
    (6 = the camera was turned 90 degrees clockwise: show it rotated)."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + app1 + jpeg[2:]


class _ReusableServer(ThreadingHTTPServer):
    allow_reuse_address = True  # the camera comes back on the same port
    daemon_threads = True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ApiHost:
    """The least an agent offers its local API: a device id, a serving model and a status document."""

    def __init__(self, model: Any, device_id: str) -> None:
        self.device_id = device_id
        self.current_model = model

    def counters(self) -> dict[str, Any]:
        return {"schema": "edgeline.agent-status/1", "device": {"id": self.device_id}, "model": {"name": "tiny"}}


def serve_api(bundle: Path, key_dir: Path, device_id: str) -> Iterator[Any]:
    """The local API on a free port serving the signed ``bundle`` (a generator for a fixture)."""
    from converters.keys import KeyPaths
    from edge_agent.http_api import PredictionApi
    from edge_agent.inference import load_and_check
    from edgeline.core.protocol.signing import TrustStore
    from firmware_configs.schema import ApiSection

    model = load_and_check(bundle, TrustStore.load(KeyPaths(key_dir).trust))
    server = PredictionApi(ApiHost(model, device_id), ApiSection(enabled=True, port=0, max_body_bytes=65536))
    server.start()
    try:
        yield server
    finally:
        server.stop()
