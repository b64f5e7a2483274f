"""The camera simulator: one process that serves every demo line as an HTTP MJPEG stream on 127.0.0.1.

Each line is a triggered inspection camera: every frame shows the next part at the inspection
position (rendered by :func:`converters.synth.render_part`, the generator the training images come
from), at ``fps`` parts per second. The lighting of a line can be changed while it streams, with a
linear ramp, through a small control API, so a line can drift darker while its agent keeps running:

    GET  /<line>.mjpg       the stream (multipart/x-mixed-replace, one JPEG per part)
    GET  /status            JSON: per line, frames served, connections, current and target lighting
    POST /<line>/lighting   JSON body {"brightness": -70, "contrast": 0.7, "ramp_s": 4}
    POST /<line>/parts      JSON body {"kind": "crack", "share": 0.5}: that share of the parts is of that
                            kind from now on ({"kind": null} returns to the usual mix)

Ground truth: every frame served is logged to ``<truth-dir>/<line>.csv`` with the connection number,
its index in that connection (what the agent's reader calls the frame's ``ref``), the label and the
lighting it was rendered with. That is how the demo scores the devices' verdicts afterwards.

Run as ``python -m edgeline.demo.camera --lines line-1,line-2 --truth-dir DIR --ready-file F``;
it writes ``{"port": ..., "pid": ...}`` to the ready file once it listens, stops on SIGTERM/SIGINT, and
also stops by itself when the process that started it goes away (no orphan cameras).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edgeline.core.fsutil import write_atomic
from edgeline.demo.linefeed import LineFeed

log = logging.getLogger(__name__)

_LINE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
MAX_CONTROL_BYTES = 4096


class CameraServer:
    """Serves every :class:`LineFeed` on one port. ``fps`` paces each stream."""

    def __init__(self, feeds: dict[str, LineFeed], fps: float, host: str = "127.0.0.1", port: int = 0) -> None:
        self.feeds = feeds
        self.fps = fps
        self.alive = threading.Event()
        self.alive.set()
        self._stop_lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def status(self) -> dict[str, Any]:
        return {
            "fps": self.fps,
            "lines": {
                name: {"served": f.served, "connections": f.connections, **f.lighting(), **f.parts()}
                for name, f in self.feeds.items()
            },
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("camera: %s", format % args)

            def _json(self, code: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/status":
                    self._json(200, server.status())
                    return
                m = re.match(r"^/([^/]+)\.mjpg$", self.path)
                feed = server.feeds.get(m.group(1)) if m else None
                if feed is None:
                    self._json(404, {"error": f"no such stream {self.path}"})
                    return
                self._stream(feed)

            def _stream(self, feed: LineFeed) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                conn = feed.connect()
                index = 0
                period = 1.0 / server.fps
                due = time.monotonic()
                try:
                    while server.alive.is_set():
                        jpg = feed.next_jpeg(conn, index)
                        head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                        self.wfile.write(head + jpg + b"\r\n")
                        index += 1
                        due += period
                        delay = due - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        else:
                            due = time.monotonic()  # a slow client does not get a burst afterwards
                except OSError:
                    log.info("camera %s: connection %d closed after %d frames", feed.name, conn, index)

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length", "0"))
                if not 0 < length <= MAX_CONTROL_BYTES:
                    raise ValueError(f"body must be 1..{MAX_CONTROL_BYTES} bytes")
                doc = json.loads(self.rfile.read(length))
                if not isinstance(doc, dict):
                    raise ValueError("expected a JSON object")
                return doc

            def do_POST(self) -> None:
                m = re.match(r"^/([^/]+)/(lighting|parts)$", self.path)
                feed = server.feeds.get(m.group(1)) if m else None
                if feed is None or m is None:
                    self._json(404, {"error": f"no such line in {self.path}"})
                    return
                try:
                    doc = self._body()
                    if m.group(2) == "lighting":
                        if set(doc) - {"brightness", "contrast", "ramp_s"}:
                            raise ValueError("expected an object with brightness, contrast and ramp_s")
                        feed.set_lighting(
                            float(doc.get("brightness", 0.0)),
                            float(doc.get("contrast", 1.0)),
                            float(doc.get("ramp_s", 0)),
                        )
                        answer: dict[str, Any] = feed.lighting()
                    else:
                        if set(doc) - {"kind", "share"}:
                            raise ValueError("expected an object with kind and share")
                        kind = doc.get("kind")
                        if kind is not None and not isinstance(kind, str):
                            raise ValueError("kind must be a string or null")
                        feed.set_parts(kind, float(doc.get("share", 0.5)))
                        answer = feed.parts()
                except Exception as exc:  # any bad input is the client's problem: say so
                    self._json(400, {"error": str(exc)})
                    return
                self._json(200, answer)

        return Handler

    def serve(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        with self._stop_lock:
            if not self.alive.is_set():
                return
            self.alive.clear()
        self.httpd.shutdown()
        self.httpd.server_close()
        for f in self.feeds.values():
            f.close()


def _watch_parent(parent: int, server: CameraServer) -> None:
    while server.alive.is_set():
        if os.getppid() != parent:
            log.warning("camera: the demo process is gone; stopping")
            threading.Thread(target=server.shutdown, daemon=True).start()
            return
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgeline.demo.camera", description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", required=True, help="comma-separated line names")
    p.add_argument("--truth-dir", required=True, type=Path)
    p.add_argument("--ready-file", required=True, type=Path)
    p.add_argument("--fps", type=float, default=12.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--defect-rate", type=float, default=0.5)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=os.environ.get("EDGELINE_LOG_LEVEL", "WARNING").upper(), stream=sys.stderr)
    names = [n for n in args.lines.split(",") if n]
    if not names or any(not _LINE.match(n) for n in names) or not 0 < args.fps <= 120:
        p.error("--lines needs names of letters, digits, '_', '.', '-'; --fps must be in (0, 120]")
    args.truth_dir.mkdir(parents=True, exist_ok=True)
    feeds = {
        n: LineFeed(n, args.seed * 1000 + i, args.truth_dir / f"{n}.csv", defect_rate=args.defect_rate)
        for i, n in enumerate(names)
    }
    server = CameraServer(feeds, args.fps, port=args.port)

    def on_signal(signum: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=_watch_parent, args=(os.getppid(), server), daemon=True).start()
    write_atomic(args.ready_file, json.dumps({"port": server.port, "pid": os.getpid()}).encode())
    server.serve()
    for f in feeds.values():
        f.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
