"""The local prediction API, for line systems that ask rather than listen (stdlib ``http.server``).

Bound to 127.0.0.1 by default. Endpoints:

* ``POST /predict`` — body: one encoded image (PNG, JPEG, BMP, ...). Answer: the verdict as JSON, from
  the model serving the live loop, through the same code path (:func:`edge_agent.inference.inspect_frame`).
  400 for a body that is not an image, 413 when larger than ``max_body_bytes``, 503 without a model.
* ``GET /status`` — the status document (JSON), as in the status file.
* ``GET /metrics`` — Prometheus text exposition.
* ``GET /healthz`` — 200 when the agent runs with a model, 503 otherwise.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from edge_agent.errors import EdgeAgentError
from edge_agent.inference import inspect_frame, verdict_record
from edge_agent.model import LoadedModel
from edge_agent.sources import decode_image
from edge_agent.status import PROMETHEUS_CONTENT_TYPE, prometheus_text
from firmware_configs.schema import ApiSection

log = logging.getLogger(__name__)

#: An oversized body up to this much beyond the limit is read and discarded before answering 413.
_DRAIN_LIMIT = 1024 * 1024


def _discard(stream: Any, n: int) -> None:
    while n > 0:
        chunk = stream.read(min(n, 65536))
        if not chunk:
            return
        n -= len(chunk)


class ApiHost(Protocol):
    """What the API needs from the agent."""

    @property
    def device_id(self) -> str: ...

    @property
    def current_model(self) -> LoadedModel | None: ...

    def counters(self) -> dict[str, Any]: ...


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: PredictionApi


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("api %s: %s", self.client_address[0], format % args)

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, doc: dict[str, Any]) -> None:
        self._send(code, json.dumps(doc, sort_keys=True, default=str).encode("utf-8"))

    def do_GET(self) -> None:
        api = self.server.api
        path = self.path.split("?", 1)[0]
        if path == "/status":
            self._json(200, api.host.counters())
        elif path == "/metrics":
            self._send(200, prometheus_text(api.host.counters()).encode("utf-8"), PROMETHEUS_CONTENT_TYPE)
        elif path == "/healthz":
            ok = api.host.current_model is not None
            self._json(200 if ok else 503, {"ok": ok})
        else:
            self._json(404, {"error": f"no such endpoint {path}"})

    def do_POST(self) -> None:
        api = self.server.api
        if self.path.split("?", 1)[0] != "/predict":
            self._json(404, {"error": f"no such endpoint {self.path}"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            self._json(411, {"error": "Content-Length is required"})
            return
        if length < 0 or length > api.max_body_bytes:
            self.close_connection = True
            if 0 < length <= api.max_body_bytes + _DRAIN_LIMIT:
                _discard(self.rfile, length)  # so the client reads our answer instead of a reset
            self._json(413, {"error": f"body of {length} bytes exceeds the limit of {api.max_body_bytes}"})
            return
        body = self.rfile.read(length)
        code, doc = api.predict(body)
        self._json(code, doc)


class PredictionApi:
    def __init__(self, host: ApiHost, section: ApiSection) -> None:
        self.host = host
        self.max_body_bytes = section.max_body_bytes
        self._ids = itertools.count()
        self.requests = 0
        self._server = _Server((section.host, section.port), _Handler)
        self._server.api = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="api", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread.start()
        log.info("prediction API on %s", self.url)

    def stop(self) -> None:
        """Stop serving. Safe to call twice or before :meth:`start` (``shutdown()`` on a server whose
        loop never ran would wait forever)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5.0)
        self._server.server_close()

    def predict(self, body: bytes) -> tuple[int, dict[str, Any]]:
        self.requests += 1
        counters = getattr(self.host, "counters_", None)
        if counters is not None:
            counters.bump("api_requests")
        model = self.host.current_model
        if model is None:
            return 503, {"error": "no model yet"}
        img = decode_image(body)
        if img is None:
            return 400, {"error": "the body is not a decodable image"}
        try:
            result = inspect_frame(model, img, next(self._ids))
        except EdgeAgentError as exc:
            return 422, {"error": str(exc)}
        return 200, verdict_record(result, self.host.device_id, "api")
