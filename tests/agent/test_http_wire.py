"""The local API's request framing (``edge_agent.http_wire``) on hostile input: malformed, oversized,
truncated, dripped and pipelined requests, read from a real socket pair."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from edge_agent.http_wire import (
    MAX_HEAD,
    MAX_HEADERS,
    MAX_REQUEST_LINE,
    Connection,
    HttpError,
    content_length,
    parse_head,
)


def refused(head: bytes) -> int:
    with pytest.raises(HttpError) as info:
        parse_head(head)
    return info.value.code


def test_a_well_formed_head_is_read_with_its_headers_in_order() -> None:
    req = parse_head(
        b"POST /predict?x=1 HTTP/1.1\r\nHost: x\r\nX-A:  one \t\r\nx-a: two\r\nContent-Length: 12\r\nV: caf\xe9"
    )
    assert (req.method, req.target, req.path, req.minor) == ("POST", "/predict?x=1", "/predict", 1)
    assert req.headers["x-a"] == ["one", "two"] and req.get("host") == "x" and req.get("v") == "caf\xe9"
    assert content_length(req) == 12 and req.keep_alive


@pytest.mark.parametrize(
    ("connection", "minor", "keep"),
    [(None, 1, True), ("close", 1, False), ("Keep-Alive, Close", 1, False), (None, 0, False),
     ("keep-alive", 0, True), ("foo, keep-alive", 0, True), ("upgrade", 1, True)],
)  # fmt: skip
def test_keep_alive_follows_the_version_and_the_connection_header(
    connection: str | None, minor: int, keep: bool
) -> None:
    line = f"GET / HTTP/1.{minor}\r\nHost: x" + (f"\r\nConnection: {connection}" if connection else "")
    assert parse_head(line.encode()).keep_alive is keep


@pytest.mark.parametrize(
    ("head", "code"),
    [
        (b"GET /", 400),  # HTTP/0.9
        (b"GET / HTTP/1.1 extra", 400),
        (b"GET  / HTTP/1.1", 400),
        (b"GET / http/1.1", 400),
        (b"GET / HTTP/1.10", 400),
        (b"GET / HTTP/11", 400),
        (b"GET / HTTP/2.0", 505),
        (b"GET / HTTP/1.2", 505),
        (b"GET / HTTP/0.9", 505),
        (b"GET http://x/predict HTTP/1.1", 400),  # absolute form: not for this server
        (b"OPTIONS * HTTP/1.1", 400),
        (b"GET /a b HTTP/1.1", 400),
        (b"GET /caf\xe9 HTTP/1.1", 400),
        (b"G(T / HTTP/1.1", 400),
        (b" GET / HTTP/1.1", 400),
        (b"GET / HTTP/1.1\r\nHost : x", 400),  # space before the colon (a smuggling classic)
        (b"GET / HTTP/1.1\r\nHost x", 400),
        (b"GET / HTTP/1.1\r\n: x", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n folded", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\tfolded", 400),
        (b"GET / HTTP/1.1\r\nHost: a\x00b", 400),
        (b"GET / HTTP/1.1\r\nHost: a\x7fb", 400),
        (b"GET / HTTP/1.1\r\nHost: a\x1bb", 400),
        (b"GET / HTTP/1.1\nHost: x", 400),  # bare LF
        (b"GET / HTTP/1.1\r\nHost: x\rX: y", 400),  # bare CR
        (b"GET / HTTP/1.1\r\nHost: x\nContent-Length: 5", 400),
        (b"GET /" + b"a" * MAX_REQUEST_LINE + b" HTTP/1.1", 414),
        (b"GET / HTTP/1.1" + b"\r\nX: y" * (MAX_HEADERS + 1), 431),
        (b"GET / HTTP/1.1\r\nX: " + b"y" * MAX_HEAD, 431),
    ],
)
def test_malformed_or_oversized_heads_are_refused(head: bytes, code: int) -> None:
    assert refused(head) == code


def test_the_limits_themselves_are_accepted() -> None:
    target = b"/" + b"a" * (MAX_REQUEST_LINE - len(b"GET / HTTP/1.1"))
    assert len(b"GET " + target + b" HTTP/1.1") == MAX_REQUEST_LINE
    parse_head(b"GET " + target + b" HTTP/1.1")
    assert len(parse_head(b"GET / HTTP/1.1" + b"\r\nX: y" * MAX_HEADERS).headers["x"]) == MAX_HEADERS


@pytest.mark.parametrize("value", ["+12", "-1", "1_0", "0x10", "12, 12", "1 2", "", "1" * 19, "١٢"])
def test_a_content_length_that_is_not_plain_digits_is_refused(value: str) -> None:
    req = parse_head(f"POST / HTTP/1.1\r\nContent-Length: {value}".encode())
    with pytest.raises(HttpError) as info:
        content_length(req)
    assert info.value.code == 400


def test_a_repeated_content_length_is_refused_even_when_equal() -> None:
    req = parse_head(b"POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3")
    with pytest.raises(HttpError, match="more than one"):
        content_length(req)


# -- on a socket ----------------------------------------------------------------------------------
@pytest.fixture
def pair() -> Iterator[tuple[Connection, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(5)
    try:
        yield Connection(a), b
    finally:
        a.close()
        b.close()


def drip(sock: socket.socket, data: bytes, step: int) -> threading.Thread:
    def run() -> None:
        try:
            for i in range(0, len(data), step):
                sock.sendall(data[i : i + step])
        except OSError:
            pass  # the reader refused the request and the test closed the socket

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_pipelined_requests_and_their_bodies_are_read_in_order(pair: tuple[Connection, socket.socket]) -> None:
    conn, peer = pair
    one = b"POST /predict HTTP/1.1\r\nContent-Length: 28\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n\r\n"
    two = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    peer.sendall(one + b"\r\n" + two)  # with an empty line between them
    req = conn.read_request()
    assert req is not None and req.path == "/predict"
    assert conn.read_body(content_length(req) or 0) == b"GET /smuggled HTTP/1.1\r\n\r\n\r\n"
    nxt = conn.read_request()
    assert nxt is not None and nxt.path == "/healthz"


@pytest.mark.parametrize("step", [1, 7, 4096])
def test_a_request_dripped_in_pieces_is_read_whole_and_the_next_one_is_untouched(
    pair: tuple[Connection, socket.socket], step: int
) -> None:
    conn, peer = pair
    body = bytes(range(256)) * 40
    data = b"POST /p HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body + b"GET /next HTTP/1.1\r\n\r\n"
    t = drip(peer, data, step)
    req = conn.read_request()
    assert req is not None and conn.read_body(len(body)) == body
    nxt = conn.read_request()
    assert nxt is not None and nxt.path == "/next"
    t.join(5)


def test_a_discarded_body_leaves_the_next_request_intact(pair: tuple[Connection, socket.socket]) -> None:
    conn, peer = pair
    data = b"POST /p HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000 + b"GET /n HTTP/1.1\r\n\r\n"
    t = drip(peer, data, 3000)
    assert conn.read_request() is not None and conn.discard(100000)
    nxt = conn.read_request()
    assert nxt is not None and nxt.path == "/n"
    t.join(5)


@pytest.mark.parametrize("sent", [b"", b"\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n", b"GET / HTTP/1.1\r\nHo"])
def test_a_peer_that_closes_before_a_whole_head_ends_the_connection(
    pair: tuple[Connection, socket.socket], sent: bytes
) -> None:
    conn, peer = pair
    peer.sendall(sent)
    peer.shutdown(socket.SHUT_WR)
    assert conn.read_request() is None


def test_a_truncated_body_is_never_handed_on(pair: tuple[Connection, socket.socket]) -> None:
    conn, peer = pair
    peer.sendall(b"POST /p HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort")
    peer.shutdown(socket.SHUT_WR)
    assert conn.read_request() is not None
    assert conn.read_body(10) is None


def test_a_reset_is_an_end_not_an_error() -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    with srv, socket.create_connection(srv.getsockname()[:2]) as client:
        server_side, _ = srv.accept()
        with server_side:
            server_side.settimeout(5)
            client.sendall(b"GET / HTTP/1.1\r\n")
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            client.close()  # RST
            assert Connection(server_side).read_request() is None


@pytest.mark.parametrize(
    ("stream", "code"),
    [
        (b"GET /" + b"a" * (MAX_REQUEST_LINE + 10), 414),  # no newline yet: refused without waiting for one
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * (MAX_HEAD // 6 + 10), 431),  # no blank line, ever
        (b"GET / HTTP/1.1\n\n", 400),  # bare LFs: refused at once, not waited on
        (b"GET / HTTP/1.1\r\nHost: x\n\n", 400),
    ],
)
def test_heads_that_never_end_well_are_refused_while_the_connection_is_open(
    pair: tuple[Connection, socket.socket], stream: bytes, code: int
) -> None:
    conn, peer = pair
    drip(peer, stream, 4096)  # the peer keeps the connection open: a wait would time out (5 s)
    with pytest.raises(HttpError) as info:
        conn.read_request()
    assert info.value.code == code
