"""Fuzz test of the local API's HTTP framing (``edge_agent.http_wire``, and the server through it):
the head parser takes any bytes and mutated real heads and raises nothing but ``HttpError``, and what
it accepts obeys its rules; the running API answers any bytes on a socket with documented status
codes only (or closes), and keeps serving."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.http_api import STATUS_CODES, PredictionApi
from edge_agent.http_wire import MAX_HEADERS, MAX_REQUEST_LINE, HttpError, content_length, parse_head
from tests.agent.helpers import serve_api
from tests.fuzz.conftest import fuzz_settings

REAL = [
    b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:8571\r\nAccept-Encoding: identity\r\nContent-Length: 25109\r\n"
    b"Content-Type: application/octet-stream",
    b"GET /metrics?x=1 HTTP/1.0\r\nConnection: keep-alive\r\nUser-Agent: curl/8.5",
    b"POST /predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked",
]
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@st.composite
def mutated_heads(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(REAL)))
    for _ in range(draw(st.integers(1, 5))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        if op == "flip" and i < len(data):
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[i : i + draw(st.integers(1, 8))]
        elif op == "insert":
            data[i:i] = draw(st.sampled_from([b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b"\x00", b"\xff", b"/"]))
        else:
            data[i:i] = data[i : i + draw(st.integers(1, 30))]
    return bytes(data)


@fuzz_settings()
@given(st.binary(max_size=400) | mutated_heads())
def test_the_head_parser_raises_only_http_errors_and_accepts_only_what_its_rules_allow(head: bytes) -> None:
    try:
        req = parse_head(head)
    except HttpError as exc:
        assert exc.code in (400, 414, 431, 505) and exc.message
        return
    assert _TOKEN.fullmatch(req.method) and req.target.startswith("/") and req.minor in (0, 1)
    assert len(head.split(b"\r\n", 1)[0]) <= MAX_REQUEST_LINE
    assert sum(len(v) for v in req.headers.values()) <= MAX_HEADERS
    for name, values in req.headers.items():
        assert _TOKEN.fullmatch(name) and name == name.lower()
        for v in values:
            assert not re.search(r"[\x00-\x08\x0a-\x1f\x7f]", v) and v == v.strip(" \t")
    try:
        n = content_length(req)
    except HttpError as exc:
        assert exc.code == 400
    else:
        assert n is None or n >= 0


@pytest.fixture(scope="module")
def api(tiny_bundle: Path, key_dir: Path) -> Iterator[PredictionApi]:
    yield from serve_api(tiny_bundle, key_dir, "fuzz-wire")


def exchange(api: PredictionApi, payload: bytes) -> bytes:
    """``payload`` on a fresh connection, then end of input; everything the server answers."""
    with socket.create_connection(api.address, timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            chunks.append(b"<still open>")
        return b"".join(chunks)


@fuzz_settings(ci=40)
@given(
    st.binary(max_size=600)
    | st.builds(lambda head, body: head + b"\r\n\r\n" + body, mutated_heads(), st.binary(max_size=60))
    | st.builds(
        lambda line, heads, body: line + b"\r\n" + b"\r\n".join(heads) + b"\r\n\r\n" + body,
        st.sampled_from([b"GET /healthz HTTP/1.1", b"POST /predict HTTP/1.1", b"GET /status HTTP/1.0"]),
        st.lists(st.binary(max_size=40) | st.sampled_from([b"Content-Length: 3", b"Host: x", b"Expect: 100-continue"])),
        st.binary(max_size=60),
    )
)
def test_any_bytes_get_only_documented_answers_and_the_server_keeps_serving(api: PredictionApi, data: bytes) -> None:
    raw = exchange(api, data)
    assert not raw.endswith(b"<still open>")
    for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw):
        assert int(code) in STATUS_CODES or int(code) == 100, raw[:300]
    t0 = time.monotonic()
    assert exchange(api, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    assert time.monotonic() - t0 < 5
