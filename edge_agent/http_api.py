"""The local prediction API, for line systems that ask rather than listen (stdlib ``http.server``).

Bound to 127.0.0.1 by default. Endpoints:

* ``POST /predict`` — body: one encoded image (PNG, JPEG, BMP, TIFF, WebP, PNM). Answer: the verdict as
  JSON, from the model serving the live loop, through the same code path
  (:func:`edge_agent.inference.inspect_frame`).
* ``GET /status`` — the status document (JSON), as in the status file.
* ``GET /metrics`` — Prometheus text exposition.
* ``GET /healthz`` — 200 when the agent is healthy, 503 when it is degraded (:func:`health`).

Every status code it answers is in :data:`STATUS_CODES` (and docs/agent.md). Connection rules, so a
kept-alive connection never desynchronises: every request body is read (or discarded) before the
answer, whatever the path or method; an answer of 400 or more closes the connection; the answer is
written in one ``send`` on a socket with ``TCP_NODELAY``, so no response waits for a delayed ACK.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from edge_agent.errors import EdgeAgentError
from edge_agent.image_decode import ImageError, ImageTooLarge, decode_image
from edge_agent.inference import inspect_frame, verdict_record
from edge_agent.model import LoadedModel
from edge_agent.status import PROMETHEUS_CONTENT_TYPE, health, prometheus_text, with_health
from firmware_configs.schema import ApiSection

log = logging.getLogger(__name__)

#: An oversized body up to this much beyond the limit is read and discarded before answering 413.
_DRAIN_LIMIT = 1024 * 1024

#: path -> the methods it answers
ROUTES: dict[str, tuple[str, ...]] = {
    "/predict": ("POST",),
    "/status": ("GET",),
    "/metrics": ("GET",),
    "/healthz": ("GET",),
}

#: Every status code the API answers, and when.
STATUS_CODES: dict[int, str] = {
    200: "success: a verdict (POST /predict), a document, or healthy (GET /healthz)",
    400: "the body is not a decodable image (unknown format, damaged, truncated), or a malformed request "
    "(bad or repeated Content-Length)",
    404: "no such endpoint",
    405: "the endpoint exists but not for this method (see the Allow header)",
    411: "a body without Content-Length (chunked bodies are not accepted)",
    413: "the body is larger than api.max_body_bytes",
    422: "the image declares more pixels than api.max_image_pixels (refused before decoding), or it decodes "
    "but cannot be inspected (e.g. the model's region of interest lies outside it)",
    414: "request line too long",
    431: "request headers too large",
    501: "unknown HTTP method",
    503: "no model is serving (POST /predict), or the agent is degraded (GET /healthz)",
    505: "HTTP version not supported",
}


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
    #: TCP_NODELAY on every connection (socketserver.StreamRequestHandler sets it in setup())
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):  # called for every request: format only when it is shown
            log.debug("api %s: %s", self.client_address[0], format % args)

    # -- answers ------------------------------------------------------------------------------------
    def _send(
        self, code: int, body: bytes, ctype: str = "application/json", extra: dict[str, str] | None = None
    ) -> None:
        """Status line, headers and body in ONE write. An error answer closes the connection."""
        if code >= 400:
            self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = ""
        lines = [
            f"{self.protocol_version} {code} {phrase}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in (extra or {}).items()),
        ]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # Counted BEFORE the answer leaves: a client that reads it and scrapes /metrics at once
        # must find this request counted (the body, /metrics' own included, is already rendered).
        counters = getattr(self.server.api.host, "counters_", None)
        if counters is not None:  # per endpoint and status code (edgeline_api_requests_total)
            counters.api_request(getattr(self, "path", "").split("?", 1)[0], code)
        self.wfile.write(head + (b"" if self.command == "HEAD" else body))
        self.log_request(code, len(body))

    def _json(self, code: int, doc: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        self._send(code, json.dumps(doc, sort_keys=True, default=str).encode("utf-8"), extra=extra)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors found by ``http.server`` itself (bad request line, headers too large, unknown
        method): a JSON answer like every other, and the connection is closed."""
        self.close_connection = True
        if not hasattr(self, "command") or self.command is None:
            self.command = ""
        self._json(code, {"error": message or HTTPStatus(code).phrase})

    # -- bodies -------------------------------------------------------------------------------------
    def _body(self, limit: int) -> bytes | None:
        """The request body (``b""`` when there is none), read whole BEFORE any answer; None when an
        error was answered instead (the connection then closes)."""
        if self.headers.get("Transfer-Encoding"):
            self._json(411, {"error": "chunked bodies are not accepted: send Content-Length"})
            return None
        if len(self.headers.get_all("Content-Length") or ()) > 1:
            self._json(400, {"error": "more than one Content-Length"})
            return None
        raw = self.headers.get("Content-Length")
        if raw is None:
            if self.command == "POST":
                self._json(411, {"error": "Content-Length is required"})
                return None
            return b""
        try:
            length = int(raw)
        except ValueError:
            self._json(400, {"error": f"bad Content-Length {raw[:40]!r}"})
            return None
        if length < 0:
            self._json(400, {"error": f"bad Content-Length {length}"})
            return None
        if length > limit:
            if length <= limit + _DRAIN_LIMIT:
                _discard(self.rfile, length)  # so the client reads our answer instead of a reset
            self._json(413, {"error": f"body of {length} bytes exceeds the limit of {limit}"})
            return None
        return self.rfile.read(length) if length else b""

    # -- dispatch -----------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        api = self.server.api
        path = self.path.split("?", 1)[0]
        methods = ROUTES.get(path)
        # Read or discard the body first, whatever the answer: what is left in the stream would be
        # parsed as the next request.
        body = self._body(api.max_body_bytes if methods == ("POST",) else _DRAIN_LIMIT)
        if body is None:
            return
        if methods is None:
            self._json(404, {"error": f"no such endpoint {path[:200]}"})
        elif self.command not in methods:
            allow = ", ".join(methods)
            self._json(405, {"error": f"{path} answers {allow} only"}, extra={"Allow": allow})
        elif path == "/predict":
            code, doc = api.predict(body)
            self._json(code, doc)
        elif path == "/status":
            self._json(200, api.status())
        elif path == "/metrics":
            self._send(200, prometheus_text(api.host.counters()).encode("utf-8"), PROMETHEUS_CONTENT_TYPE)
        else:
            doc = health(api.host.counters(), has_model=api.host.current_model is not None)
            self._json(200 if doc["status"] == "ok" else 503, doc)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()


def _discard(stream: Any, n: int) -> None:
    while n > 0:
        chunk = stream.read(min(n, 65536))
        if not chunk:
            return
        n -= len(chunk)


class PredictionApi:
    def __init__(self, host: ApiHost, section: ApiSection) -> None:
        self.host = host
        self.max_body_bytes = section.max_body_bytes
        self.max_image_pixels = section.max_image_pixels
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

    def status(self) -> dict[str, Any]:
        return with_health(self.host.counters())

    def predict(self, body: bytes) -> tuple[int, dict[str, Any]]:
        self.requests += 1
        counters = getattr(self.host, "counters_", None)
        if counters is not None:
            counters.bump("api_requests")
        model = self.host.current_model
        if model is None:
            return 503, {"error": "no model yet"}
        try:
            img = decode_image(body, self.max_image_pixels)
        except ImageTooLarge as exc:
            return 422, {"error": str(exc)}
        except ImageError as exc:
            return 400, {"error": str(exc)}
        try:
            result = inspect_frame(model, img, next(self._ids))
        except EdgeAgentError as exc:
            return 422, {"error": str(exc)}
        return 200, verdict_record(result, self.host.device_id, "api")


__all__ = ["ROUTES", "STATUS_CODES", "ApiHost", "PredictionApi"]
