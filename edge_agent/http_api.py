"""The local prediction API, for line systems that ask rather than listen (HTTP/1.1 with keep-alive on
``socketserver``, one thread per connection; the framing is :mod:`edge_agent.http_wire`'s).

Bound to 127.0.0.1 by default. Endpoints:

* ``POST /predict`` — body: one encoded image (PNG, JPEG, BMP, TIFF, WebP, PNM). Answer: the verdict as
  JSON, from the model serving the live loop, through :func:`edge_agent.inference.inspect_frame`.
* ``GET /status``, ``GET /metrics`` — the status document (JSON, as in the status file), Prometheus text.
* ``GET /healthz`` — 200 when the agent is healthy, 503 when it is degraded (:func:`health`).
* ``/v2...`` — the Open Inference Protocol (KServe V2): health, metadata and ``infer``
  (:mod:`edge_agent.oip`; registered here, answered there).
* ``POST /feedback``, ``GET /station`` and its forms — feedback (:mod:`edge_agent.feedback.web`).

With ``api.token_file`` set, every request must carry ``Authorization: Bearer <token>`` (compared in
constant time; else 401 with ``WWW-Authenticate``, before the body is read, and the connection
closes). Bound to an address that is not loopback, the API refuses to start without a token.

Every status code it answers is in :data:`STATUS_CODES` (and docs/agent.md). Connection rules, so a
kept-alive connection never desynchronises: every request body is read (or discarded) before the
answer, whatever the path or method; an answer of 400 or more closes the connection; the answer is
written in one ``send`` on a socket with ``TCP_NODELAY``, so no response waits for a delayed ACK;
before closing a connection the client may still be writing on, the server sends its FIN and reads
what still comes for a moment, so the close does not reset the connection under the answer. A
malformed, oversized or truncated request head is refused by :mod:`edge_agent.http_wire` (rules
there); a request cut short is never answered.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
import socket
import socketserver
import threading
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

from edge_agent.errors import EdgelineError
from edge_agent.feedback.web import ROUTES as FEEDBACK_ROUTES
from edge_agent.feedback.web import STATION_CHALLENGE, STATION_PATHS, FeedbackWeb, basic_password
from edge_agent.http_wire import Connection, HttpError, Request, content_length
from edge_agent.image_decode import ImageError, ImageTooLarge, decode_image
from edge_agent.inference import inspect_frame, verdict_record
from edge_agent.line.waiters import ResultWaiters, answer_trigger
from edge_agent.model import LoadedModel
from edge_agent.oip import OpenInference, methods_of
from edge_agent.status import PROMETHEUS_CONTENT_TYPE, health, prometheus_text, with_health
from firmware_configs.errors import ConfigError
from firmware_configs.schema import ApiSection, is_loopback

log = logging.getLogger(__name__)

#: An oversized body up to this much beyond the limit is read and discarded before answering 413.
_DRAIN_LIMIT = 1024 * 1024

#: The methods the API knows (each answered by a route or with 404/405); any other gets 501.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_PHRASES: dict[int, str] = {s.value: s.phrase for s in HTTPStatus}
#: One encoder for every JSON answer (``json.dumps`` with options builds a new one per call).
_ENCODER = json.JSONEncoder(sort_keys=True, default=str)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="edgeline"'}

#: path -> the methods it answers
ROUTES: dict[str, tuple[str, ...]] = {
    "/predict": ("POST",),
    "/trigger": ("POST",),
    "/status": ("GET",),
    "/metrics": ("GET",),
    "/healthz": ("GET",),
    **FEEDBACK_ROUTES,
}

#: Every status code the API answers, and when.
STATUS_CODES: dict[int, str] = {
    200: "success: a verdict (POST /predict), a triggered result (POST /trigger with wait_ms), a document, "
    "or healthy (GET /healthz)",
    303: "a station form handled (POST /station/feedback): back to the station page",
    202: "a trigger taken (POST /trigger without wait_ms): its trigger id and part id; the result follows on "
    "the sinks and the line interfaces",
    400: "the body is not a decodable image (unknown format, damaged, truncated), or a malformed request "
    "(request line, header line, a line not ending in CRLF, a bad or repeated Content-Length), or an "
    "inference request the protocol refuses (JSON, datatype, shape, binary data, header length)",
    401: "api.token_file is set and the request carries no bearer token or a wrong one (the station: Basic)",
    403: "a station form without a valid page token, or from another site (Origin, Sec-Fetch-Site)",
    404: "no such endpoint or model or version (/v2), no such result or part (feedback), feedback not enabled",
    405: "the endpoint exists but not for this method (see the Allow header)",
    411: "a body without Content-Length (chunked bodies are not accepted)",
    413: "the body is larger than api.max_body_bytes (a trigger or form: 4 KiB, feedback: 2 KiB), or an "
    "inference input declares too many elements",
    422: "the image declares more pixels than api.max_image_pixels (refused before decoding), or it decodes "
    "but cannot be inspected (e.g. the model's region of interest lies outside it), or a feedback names a "
    "result without a verdict (missed, refused, error)",
    414: "request line too long (more than 8 KiB)",
    431: "request headers too large (more than 100 lines or 64 KiB)",
    409: 'POST /trigger while the source runs free (triggers need [source] mode = "trigger")',
    501: "unknown HTTP method",
    503: "no model is serving (POST /predict, /v2 ready, metadata and infer), the agent is degraded (GET /healthz), "
    "or the feedback store failed",
    504: "POST /trigger with wait_ms: no result within that time (the trigger stays taken; its result, "
    "missed or late, still reaches the sinks)",
    505: "HTTP version not supported",
}


class ApiHost(Protocol):
    """What the API needs from the agent."""

    @property
    def device_id(self) -> str: ...

    @property
    def current_model(self) -> LoadedModel | None: ...

    def counters(self) -> dict[str, Any]: ...

    def trigger(self, part_id: str = "", ts: float | None = None, origin: str = "") -> Any: ...


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: PredictionApi


class _Handler(socketserver.BaseRequestHandler):
    """One connection: requests read by :mod:`edge_agent.http_wire`, answered in order, until an
    error answer, ``Connection: close`` or the peer going away."""

    server: _Server
    request: socket.socket
    #: TCP_NODELAY on every connection
    disable_nagle_algorithm = True

    def setup(self) -> None:
        if self.disable_nagle_algorithm:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = Connection(self.request)
        self.req: Request | None = None
        self.close_connection = False
        #: the client closed its side (between requests or in the middle of one)
        self.peer_gone = False

    def handle(self) -> None:
        try:
            while not self.close_connection:
                self._one()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            return  # the client went away; nothing to answer
        if not self.peer_gone:
            self.conn.linger_close()

    def _one(self) -> None:
        self.req = None
        try:
            req = self.conn.read_request()
        except HttpError as exc:
            self._json(exc.code, {"error": exc.message})  # the request is unreadable: closes
            return
        if req is None:
            self.close_connection = self.peer_gone = True
            return
        self.req = req
        self.close_connection = not req.keep_alive
        if req.method not in _METHODS:
            self._json(501, {"error": f"unsupported method {req.method[:40]!r}"})
            return
        self._dispatch(req)

    # -- answers ------------------------------------------------------------------------------------
    def _send(
        self, code: int, body: bytes, ctype: str = "application/json", extra: dict[str, str] | None = None
    ) -> None:
        """Status line, headers and body in ONE write. An error answer closes the connection."""
        if code >= 400:
            self.close_connection = True
        req = self.req
        head = f"HTTP/1.1 {code} {_PHRASES.get(code, '')}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        if extra:
            head += "".join(f"{k}: {v}\r\n" for k, v in extra.items())
        if self.close_connection:
            head += "Connection: close\r\n"
        elif req is not None and req.minor == 0:
            head += "Connection: keep-alive\r\n"
        path = req.path if req is not None else ""
        # Counted BEFORE the answer leaves: a client that reads it and scrapes /metrics at once
        # must find this request counted (the body, /metrics' own included, is already rendered).
        counters = getattr(self.server.api.host, "counters_", None)
        if counters is not None:  # per endpoint and status code (edgeline_api_requests_total)
            counters.api_request(path, code)
        self._write((head + "\r\n").encode("latin-1"), b"" if req is not None and req.method == "HEAD" else body)
        if log.isEnabledFor(logging.DEBUG):  # for every request: format only when it is shown
            line = req.line if req is not None else "-"
            log.debug("api %s: %r %d %d", self.client_address[0], line[:200], code, len(body))

    def _write(self, head: bytes, body: bytes) -> None:
        self.conn.send(head + body)

    def _json(self, code: int, doc: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        self._send(code, _ENCODER.encode(doc).encode("utf-8"), extra=extra)

    # -- bodies -------------------------------------------------------------------------------------
    def _body(self, req: Request, limit: int) -> bytes | None:
        """The request body (``b""`` when there is none), read whole BEFORE any answer; None when an
        error was answered instead (the connection then closes)."""
        if "transfer-encoding" in req.headers:
            self._json(411, {"error": "chunked bodies are not accepted: send Content-Length"})
            return None
        try:
            length = content_length(req)
        except HttpError as exc:
            self._json(400, {"error": exc.message})
            return None
        if length is None:
            if req.method == "POST":
                self._json(411, {"error": "Content-Length is required"})
                return None
            return b""
        if length > limit:
            if length <= limit + _DRAIN_LIMIT:
                self._continue(req)
                self.conn.discard(length)  # so the client reads our answer instead of a reset
            self._json(413, {"error": f"body of {length} bytes exceeds the limit of {limit}"})
            return None
        if not length:
            return b""
        self._continue(req)
        body = self.conn.read_body(length)
        if body is None:  # the client went away in the middle of its body: nothing to answer
            self.close_connection = self.peer_gone = True
        return body

    def _continue(self, req: Request) -> None:
        """``Expect: 100-continue`` (HTTP/1.1): tell the client to send the body it holds back."""
        expect = req.get("expect")
        if req.minor == 1 and expect is not None and expect.lower() == "100-continue":
            self.conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")

    # -- dispatch -----------------------------------------------------------------------------------
    def _dispatch(self, req: Request) -> None:
        api = self.server.api
        path = req.path
        methods = ROUTES.get(path)
        if methods is None and path.startswith("/v2"):
            methods = methods_of(path)
        if api.token is not None and not api.authorized(req.get("authorization"), path in STATION_PATHS):
            # Before the body: the answer closes the connection, so nothing left in it is parsed.
            challenge = STATION_CHALLENGE if path in STATION_PATHS else _CHALLENGE
            self._json(401, {"error": "a valid bearer token is required"}, extra=challenge)
            return
        # Read or discard the body first, whatever the answer: what is left in the stream would be
        # parsed as the next request.
        body = self._body(req, api.max_body_bytes if methods == ("POST",) else _DRAIN_LIMIT)
        if body is None:
            return
        if methods is None:
            self._json(404, {"error": f"no such endpoint {path[:200]}"})
        elif req.method not in methods:
            allow = ", ".join(methods)
            self._json(405, {"error": f"{path} answers {allow} only"}, extra={"Allow": allow})
        elif path.startswith("/v2"):
            reply = api.oip.handle(path, body, req.headers.get)
            self._send(reply.code, reply.body, reply.content_type, reply.headers or None)
        elif path == "/predict":
            code, doc = api.predict(body)
            self._json(code, doc)
        elif path == "/trigger":
            code, doc = api.trigger(body)
            self._json(code, doc)
        elif path in FEEDBACK_ROUTES:
            self._send(*api.web.answer(req, body))
        elif path == "/status":
            self._json(200, api.status())
        elif path == "/metrics":
            self._send(200, prometheus_text(api.host.counters()).encode("utf-8"), PROMETHEUS_CONTENT_TYPE)
        else:
            doc = health(api.host.counters(), has_model=api.host.current_model is not None)
            self._json(200 if doc["status"] == "ok" else 503, doc)


class PredictionApi:
    def __init__(self, host: ApiHost, section: ApiSection) -> None:
        self.host = host
        self.max_body_bytes = section.max_body_bytes
        self.max_image_pixels = section.max_image_pixels
        #: the SHA-256 digest of the bearer token (None: no token required)
        self.token = _read_token(section)
        self._ids = itertools.count()
        self.requests = 0
        self.oip = OpenInference(
            host, max_image_pixels=section.max_image_pixels, next_id=self._next_infer, encoder=_ENCODER
        )
        #: results for ``POST /trigger`` callers that wait (an outlet the agent adds to its result bus)
        self.waiters = ResultWaiters()
        #: operator feedback and the station page
        self.web = FeedbackWeb(host)
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

    def authorized(self, header: str | None, basic: bool = False) -> bool:
        """The ``Authorization`` header carries the token (``Bearer``, compared in constant time; with
        ``basic``, the station page's paths, also as the password of HTTP Basic credentials)."""
        assert self.token is not None
        if header is None:
            return False
        scheme, _, value = header.partition(" ")
        if basic and scheme.lower() == "basic":
            scheme, value = "bearer", basic_password(value) or ""
        # digests of equal length, so neither the content nor the length of the token leaks in time
        given = hashlib.sha256(value.strip().encode("utf-8")).digest()
        return hmac.compare_digest(given, self.token) and scheme.lower() == "bearer"

    def _next_infer(self) -> int:
        """A result id for one image of an ``infer`` request, counted like a ``/predict`` request."""
        self.requests += 1
        counters = getattr(self.host, "counters_", None)
        if counters is not None:
            counters.bump("api_requests")
        return next(self._ids)

    def status(self) -> dict[str, Any]:
        return with_health(self.host.counters())

    def trigger(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """``POST /trigger``: one triggered inspection (see :mod:`edge_agent.line.trigger_request`)."""
        self.requests += 1
        counters = getattr(self.host, "counters_", None)
        if counters is not None:
            counters.bump("api_requests")
        return answer_trigger(self.host.trigger, self.waiters, body)

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
        except EdgelineError as exc:
            return 422, {"error": str(exc)}
        return 200, verdict_record(result, self.host.device_id, "api")


def _read_token(section: ApiSection) -> bytes | None:
    """The SHA-256 digest of the bearer token in ``api.token_file`` (surrounding whitespace stripped).
    Refuses a host that is not loopback without one, and a token file that is missing, unreadable or
    too short."""
    if section.token_file is None:
        if not is_loopback(section.host):
            raise ConfigError(f"api.host {section.host!r} is not a loopback address and api.token_file is not set")
        return None
    try:
        token = Path(section.token_file).read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"api.token_file {section.token_file!r} cannot be read: {exc}") from exc
    if len(token) < 16 or any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(
            f"api.token_file {section.token_file!r} must hold one token of at least 16 printable characters"
        )
    return hashlib.sha256(token.encode("utf-8")).digest()


__all__ = ["ROUTES", "STATUS_CODES", "ApiHost", "PredictionApi"]
