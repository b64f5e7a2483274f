"""The local API on the wire, with a raw socket AND the standard library's HTTP client on kept-alive
connections: every body is consumed (no request smuggled in a body is ever answered), errors close
the connection, 404/405/411/413/422 are proper answers, every answer leaves in one segment (no
Nagle/delayed-ACK stall), a decompression bomb is refused before decoding, and every status code
the API answers is documented."""

from __future__ import annotations

import http.client
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest

from edge_agent.http_api import STATUS_CODES, PredictionApi
from edge_agent.inference import load_and_check
from edge_agent.model import LoadedModel
from edgeline.core.protocol.signing import TrustStore
from firmware_configs.schema import ApiSection
from tests.agent.helpers import png_bomb
from tests.factories import tiny_frames

ROOT = Path(__file__).resolve().parents[2]


class Host:
    device_id = "api-1"

    def __init__(self, model: LoadedModel | None) -> None:
        self.current_model = model
        self.camera_state = "STREAMING"

    def counters(self) -> dict[str, Any]:
        return {
            "schema": "edgeline.agent-status/1",
            "device": {"id": self.device_id},
            "model": {"name": "tiny"} if self.current_model else None,
            "camera": {"state": self.camera_state, "last_error": ""},
        }


@pytest.fixture(scope="module")
def api(tiny_bundle: Path, key_dir: Path) -> Iterator[PredictionApi]:
    from converters.keys import KeyPaths

    model = load_and_check(tiny_bundle, TrustStore.load(KeyPaths(key_dir).trust))
    server = PredictionApi(Host(model), ApiSection(enabled=True, port=0, max_body_bytes=65536))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def png() -> bytes:
    return bytes(cv2.imencode(".png", tiny_frames(1, seed=3)[0][0])[1])


def raw_exchange(api: PredictionApi, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send ``payload`` on a fresh connection and read until the server closes it (or goes quiet)."""
    with socket.create_connection(api.address, timeout=timeout) as s:
        s.sendall(payload)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            chunks.append(b"<still open>")
        return b"".join(chunks)


def statuses(raw: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", raw)]


SMUGGLED = b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n"


def post(path: str, body: bytes, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
    return head + body


def test_a_request_in_the_body_of_a_post_to_an_unknown_path_is_never_answered(api: PredictionApi) -> None:
    raw = raw_exchange(api, post("/nothing", SMUGGLED))
    assert statuses(raw) == [404], raw
    assert b"Connection: close" in raw and not raw.endswith(b"<still open>")


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (post("/status", SMUGGLED), 405),  # a known path, wrong method, with a body
        (b"PUT /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED, 405),
        (b"DELETE /nothing HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED, 404),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED, 200),
        (post("/predict", b"x" * 70_000), 413),  # over max_body_bytes: read and discarded, then 413
        (post("/predict", b"not an image at all" + SMUGGLED), 400),
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411),
        (b"POST /predict HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLED, 411),
        (b"BREW /predict HTTP/1.1\r\nHost: x\r\n\r\n", 501),
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 33\r\n\r\n" + SMUGGLED, 400),
    ],
    ids=[
        "post-known-path-405",
        "put-405",
        "delete-unknown-404",
        "get-with-body-200",
        "oversized-413",
        "not-an-image-400",
        "chunked-411",
        "no-length-411",
        "unknown-method-501",
        "two-lengths-400",
    ],
)
def test_every_body_is_consumed_and_errors_close_the_connection(
    api: PredictionApi, request_bytes: bytes, code: int
) -> None:
    # Followed by a second, well-formed request: after an error nothing more is answered (closed);
    # after a success the second request is answered, and the smuggled one never is.
    raw = raw_exchange(api, request_bytes + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    got = statuses(raw)
    assert got[0] == code, raw
    if code >= 400:
        assert got == [code] and b"Connection: close" in raw, raw
        body = raw.split(b"\r\n\r\n", 1)[1]
        assert "error" in json.loads(body)
    else:
        assert got == [code, 200], raw  # the healthz after it, not the smuggled /status
        assert b'"schema"' not in raw


def test_405_names_the_allowed_methods(api: PredictionApi) -> None:
    raw = raw_exchange(api, b"GET /predict HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(raw) == [405] and b"Allow: POST\r\n" in raw


def test_a_kept_alive_http_client_session_stays_in_sync(api: PredictionApi, png: bytes) -> None:
    conn = http.client.HTTPConnection(*api.address, timeout=10)
    try:
        sequence: list[tuple[str, str, bytes | None, int]] = [
            ("GET", "/healthz", None, 200),
            ("POST", "/nothing", SMUGGLED, 404),
            ("GET", "/healthz", None, 200),
            ("POST", "/status", SMUGGLED, 405),
            ("POST", "/predict", png, 200),
            ("PUT", "/predict", png, 405),
            ("POST", "/predict", b"\0" * 70_000, 413),
            ("POST", "/predict", png, 200),
            ("GET", "/status", None, 200),
            ("POST", "/predict", png, 200),
        ]
        for method, path, body, code in sequence:
            conn.request(method, path, body=body, headers={"Content-Type": "application/octet-stream"})
            resp = conn.getresponse()
            data = resp.read()
            assert resp.status == code, (method, path, resp.status, data[:200])
            doc = json.loads(data)
            if code == 200 and path == "/predict":
                assert doc["label"] in ("ok", "spot") and doc["device"] == "api-1"
            if code == 200 and path == "/status":
                assert doc["health"]["status"] == "ok"
            if code >= 400:
                assert resp.getheader("Connection") == "close" and "error" in doc
    finally:
        conn.close()


def test_every_answer_leaves_in_one_segment(api: PredictionApi, png: bytes) -> None:
    """Headers and body written separately with Nagle on made each answer on a kept-alive
    connection wait for the client's delayed ACK (~40 ms). One write: the first recv() after the
    request holds the whole answer, request after request."""
    with socket.create_connection(api.address, timeout=5) as s:
        for _ in range(20):
            s.sendall(post("/predict", png))
            first = s.recv(65536)
            head, _, body = first.partition(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            assert statuses(first) == [200] and len(body) == length, first


def test_a_decompression_bomb_gets_422_before_it_is_decoded(
    api: PredictionApi, png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = png_bomb(20000, 20000)  # 389 KB: within max_body_bytes once raised below
    monkeypatch.setattr(api, "max_body_bytes", 1 << 20)
    real = cv2.imdecode

    def guarded(buf: Any, flags: int) -> Any:
        assert len(buf) != len(bomb), "the bomb reached cv2.imdecode"
        return real(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", guarded)
    conn = http.client.HTTPConnection(*api.address, timeout=30)
    try:
        conn.request("POST", "/predict", body=bomb)
        resp = conn.getresponse()
        doc = json.loads(resp.read())
        assert resp.status == 422, doc
        assert "20000x20000" in doc["error"] and "max_image_pixels" in doc["error"]
        conn.request("POST", "/predict", body=png)  # the client reconnects; the API still serves
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        resp.read()
    finally:
        conn.close()


def test_healthz_is_503_and_says_degraded_while_the_camera_is_lost(api: PredictionApi) -> None:
    host: Host = api.host  # type: ignore[assignment]
    conn = http.client.HTTPConnection(*api.address, timeout=10)
    try:
        host.camera_state = "RECONNECTING"
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        doc = json.loads(resp.read())
        assert resp.status == 503 and doc["status"] == "degraded"
        assert any("camera" in r for r in doc["reasons"])
    finally:
        host.camera_state = "STREAMING"
        conn.close()


def test_every_status_code_the_api_answers_is_documented() -> None:
    doc = (ROOT / "docs" / "agent.md").read_text("utf-8")
    section = doc.split("### `[api]`", 1)[1].split("\n### ", 1)[0]
    for code in STATUS_CODES:
        assert re.search(rf"\b{code}\b", section), f"status {code} is not documented in docs/agent.md [api]"
    source = (ROOT / "edge_agent" / "http_api.py").read_text("utf-8")
    answered = {int(c) for c in re.findall(r"_json\((\d{3})", source)} | {200, 503}
    assert answered <= set(STATUS_CODES), answered - set(STATUS_CODES)
