"""The local API's own HTTP framing, end to end on raw sockets: hostile heads get a JSON error and a
closed connection, with nothing after them answered; truncated requests are never answered; HTTP/1.0,
HEAD, ``Expect: 100-continue`` and pipelining work. (Any bytes through the framing:
tests/fuzz/test_http_wire_fuzz.py.)"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

from edge_agent.http_api import PredictionApi
from edge_agent.http_wire import MAX_HEAD, MAX_HEADERS, MAX_REQUEST_LINE
from tests.agent.helpers import serve_api
from tests.factories import tiny_frames


@pytest.fixture(scope="module")
def api(tiny_bundle: Path, key_dir: Path) -> Iterator[PredictionApi]:
    yield from serve_api(tiny_bundle, key_dir, "wire-1")


@pytest.fixture(scope="module")
def png() -> bytes:
    return bytes(cv2.imencode(".png", tiny_frames(1, seed=3)[0][0])[1])


def exchange(api: PredictionApi, payload: bytes, *, half_close: bool = False, timeout: float = 5.0) -> bytes:
    """Send ``payload`` on a fresh connection, read until the server closes it or goes quiet."""
    with socket.create_connection(api.address, timeout=timeout) as s:
        s.sendall(payload)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            chunks.append(b"<still open>")
        except ConnectionResetError:
            chunks.append(b"<reset>")
        return b"".join(chunks)


def statuses(raw: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


SMUGGLED = b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    ("head", "code"),
    [
        (b"GET /healthz\r\n\r\n", 400),
        (b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n folded: y\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: a\x00b\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\nHost: x\n\n", 400),
        (b"GET http://x/healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /" + b"a" * MAX_REQUEST_LINE + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\n" + b"X: y\r\n" * (MAX_HEADERS + 1) + b"\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\nX: " + b"y" * (MAX_HEAD + 10) + b"\r\n\r\n", 431),
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", 400),
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello", 400),
        (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello", 411),
        (b"get /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    ],
    ids=["http09", "http2", "space-before-colon", "folded", "nul", "bare-lf", "absolute-form", "long-line",
         "many-headers", "big-head", "plus-length", "list-length", "te-and-cl", "lowercase-method"],
)  # fmt: skip
def test_hostile_heads_get_a_json_error_and_nothing_after_them_is_answered(
    api: PredictionApi, head: bytes, code: int
) -> None:
    raw = exchange(api, head + SMUGGLED)
    assert statuses(raw) == [code], raw[:300]
    assert b"Connection: close\r\n" in raw and not raw.endswith((b"<still open>", b"<reset>"))
    assert "error" in json.loads(raw.split(b"\r\n\r\n", 1)[1])


@pytest.mark.parametrize(
    "payload",
    [b"GET /healthz HTTP/1.1\r\nHost:", b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n\x89PNG"],
    ids=["truncated-head", "truncated-body"],
)
def test_a_truncated_request_is_never_answered(api: PredictionApi, payload: bytes) -> None:
    assert exchange(api, payload, half_close=True) == b""


def test_pipelined_requests_are_answered_in_order(api: PredictionApi, png: bytes) -> None:
    one = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(png) + png
    raw = exchange(api, one + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + one + b"\r\n" + one, half_close=True)
    assert statuses(raw) == [200, 200, 200, 200], raw[:500]
    assert raw.count(b'"label"') == 3


def test_a_request_dripped_byte_by_byte_is_answered(api: PredictionApi) -> None:
    with socket.create_connection(api.address, timeout=5) as s:
        for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n":
            s.sendall(bytes([b]))
        raw = s.recv(65536)
    assert statuses(raw) == [200]


def test_http_1_0_closes_unless_kept_alive(api: PredictionApi) -> None:
    raw = exchange(api, b"GET /healthz HTTP/1.0\r\n\r\n" + SMUGGLED)
    assert statuses(raw) == [200] and b"Connection: close\r\n" in raw
    keep = b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    raw = exchange(api, keep + b"GET /healthz HTTP/1.0\r\n\r\n")
    assert statuses(raw) == [200, 200] and b"Connection: keep-alive\r\n" in raw
    assert not raw.endswith(b"<still open>")


def test_head_answers_the_headers_alone(api: PredictionApi) -> None:
    # HEAD is not among the routes' methods: 405, its Content-Length that of the JSON error, no body
    raw = exchange(api, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert statuses(raw) == [405] and rest == b"", raw
    assert int(re.search(rb"Content-Length: (\d+)", head).group(1)) > 0  # type: ignore[union-attr]


def test_expect_100_continue_gets_its_interim_answer(api: PredictionApi, png: bytes) -> None:
    with socket.create_connection(api.address, timeout=5) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(png))
        assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(png)
        assert statuses(s.recv(65536)) == [200]
