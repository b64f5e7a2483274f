"""HTTP/1.1 framing for the local API: a strict request-head parser and one connection's reader.

It replaces ``http.server``'s parsing, which builds an ``email.message.Message`` for every request
(about a third of the API's own CPU per request), and it is stricter. A request that breaks a rule
is refused with :class:`HttpError` (the caller answers it and closes the connection):

* the request line is ``METHOD SP TARGET SP HTTP/D.D`` and at most :data:`MAX_REQUEST_LINE` bytes
  (else 414). METHOD is a token, TARGET starts with ``/`` and is visible ASCII, the version is
  HTTP/1.1 or HTTP/1.0 (another ``HTTP/D.D``: 505; anything else, HTTP/0.9 included: 400);
* every header line is ``name: value``: the name a token with no space before the colon, the value
  without control characters (tab allowed); no line folding; at most :data:`MAX_HEADERS` lines and
  :data:`MAX_HEAD` bytes in all (else 431);
* every line ends in CRLF: a bare CR or LF anywhere in the head is refused (400);
* ``Content-Length`` values are ``1*DIGIT`` (at most 18) and :func:`content_length` refuses a
  repeated one; what to do with ``Transfer-Encoding`` is the caller's rule.

Empty lines before a request line are skipped (RFC 9112, section 2.2). A peer that closes or resets
between requests, or in the middle of one, just ends the connection: an incomplete request is never
answered. The reader keeps what follows a request in its buffer, so pipelined requests are read in
order and a body is never taken for the next request's head.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass

__all__ = [
    "MAX_HEAD",
    "MAX_HEADERS",
    "MAX_REQUEST_LINE",
    "Connection",
    "HttpError",
    "Request",
    "content_length",
    "parse_head",
]

#: The longest request line accepted (method, target and version), in bytes: 414 above.
MAX_REQUEST_LINE = 8192
#: The longest request head accepted (request line and headers, without the blank line): 431 above.
MAX_HEAD = 65536
#: The most header lines in one request: 431 above (``http.server``'s own limit).
MAX_HEADERS = 100

# Patterns on the head decoded as latin-1 (one character per byte). No class admits CR or LF.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE = re.compile(r"(" + _TOKEN + r") (/[\x21-\x7e]*) HTTP/([0-9])\.([0-9])")
_HEADER = re.compile(r"(" + _TOKEN + r"):[ \t]*([\t\x20-\x7e\x80-\xff]*?)[ \t]*")
_DIGITS = re.compile(r"[0-9]{1,18}")
_RECV = 65536


class HttpError(Exception):
    """A request refused at its framing: answer ``code`` and close the connection."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class Request:
    method: str
    #: the request target as sent (path and query)
    target: str
    #: 0 for HTTP/1.0, 1 for HTTP/1.1
    minor: int
    #: lower-case header name -> its values in order of arrival
    headers: dict[str, list[str]]
    #: the connection may stay open after the answer (HTTP/1.1 unless ``Connection: close``;
    #: HTTP/1.0 only with ``Connection: keep-alive``)
    keep_alive: bool

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def get(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None

    @property
    def line(self) -> str:
        return f"{self.method} {self.target} HTTP/1.{self.minor}"


def parse_head(head: bytes) -> Request:
    """A request head (up to, without, the blank line that ends it) -> :class:`Request`."""
    if len(head) > MAX_HEAD:
        raise HttpError(431, f"request head larger than {MAX_HEAD} bytes")
    lines = head.decode("latin-1").split("\r\n")  # one byte, one character: the checks below hold for both
    if len(lines[0]) > MAX_REQUEST_LINE:
        raise HttpError(414, f"request line longer than {MAX_REQUEST_LINE} bytes")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header lines")
    m = _REQUEST_LINE.fullmatch(lines[0])
    if m is None:
        raise _malformed("request line", lines[0])
    major, minor = int(m[3]), int(m[4])
    if major != 1 or minor > 1:
        raise HttpError(505, f"HTTP/{major}.{minor} is not supported (HTTP/1.1 and HTTP/1.0 are)")
    headers: dict[str, list[str]] = {}
    match = _HEADER.fullmatch
    for raw in lines[1:]:
        h = match(raw)
        if h is None:
            raise _malformed("folded header line" if raw[:1] in (" ", "\t") else "header line", raw)
        name = h[1].lower()
        if name in headers:
            headers[name].append(h[2])
        else:
            headers[name] = [h[2]]
    keep_alive = minor == 1
    if "connection" in headers:
        tokens = {t.strip().lower() for v in headers["connection"] for t in v.split(",")}
        keep_alive = "close" not in tokens and (minor == 1 or "keep-alive" in tokens)
    return Request(m[1], m[2], minor, headers, keep_alive)


def _malformed(what: str, line: str) -> HttpError:
    if "\r" in line or "\n" in line:
        return HttpError(400, "a line of the request head does not end in CRLF")
    return HttpError(400, f"malformed {what} {line[:100]!r}")


def content_length(req: Request) -> int | None:
    """The body length the request declares; None without ``Content-Length``. Raises
    :class:`HttpError` (400) for a repeated or malformed one."""
    values = req.headers.get("content-length")
    if values is None:
        return None
    if len(values) > 1:
        raise HttpError(400, "more than one Content-Length")
    if _DIGITS.fullmatch(values[0]) is None:
        raise HttpError(400, f"bad Content-Length {values[0][:40]!r}")
    return int(values[0])


class Connection:
    """One client connection: request heads and bodies read from a single buffer, answers written."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()

    def _fill(self) -> bool:
        """Receive more bytes into the buffer; False when the peer closed or reset the connection."""
        try:
            chunk = self.sock.recv(_RECV)
        except (ConnectionResetError, ConnectionAbortedError):
            return False
        self._buf += chunk
        return bool(chunk)

    def read_request(self) -> Request | None:
        """The next request's head; None when the peer went away before a whole head arrived."""
        buf = self._buf
        searched = 0
        while True:
            while buf.startswith(b"\r\n"):  # empty lines before a request line
                del buf[:2]
                searched = 0
            end = buf.find(b"\r\n\r\n", searched)
            if end >= 0:
                break
            first = buf.find(b"\n")
            if (first < 0 and len(buf) > MAX_REQUEST_LINE + 1) or first > MAX_REQUEST_LINE + 1:
                raise HttpError(414, f"request line longer than {MAX_REQUEST_LINE} bytes")
            if len(buf) > MAX_HEAD + 4:
                raise HttpError(431, f"request head larger than {MAX_HEAD} bytes")
            if buf.find(b"\n\n", max(0, searched - 1)) >= 0:
                raise HttpError(400, "a line of the request head does not end in CRLF")
            searched = max(0, len(buf) - 3)
            if not self._fill():
                return None
        head = bytes(buf[:end])
        del buf[: end + 4]
        return parse_head(head)

    def read_body(self, n: int) -> bytes | None:
        """Exactly ``n`` body bytes; None when the peer went away before they all arrived."""
        buf = self._buf
        if len(buf) >= n:
            data = bytes(buf[:n])
            del buf[:n]
            return data
        out = bytearray(n)
        got = len(buf)
        out[:got] = buf
        buf.clear()
        view = memoryview(out)
        try:
            while got < n:
                k = self.sock.recv_into(view[got:])  # never beyond this body: what follows stays unread
                if k == 0:
                    return None
                got += k
        except (ConnectionResetError, ConnectionAbortedError):
            return None
        finally:
            view.release()
        return bytes(out)

    def discard(self, n: int) -> bool:
        """Read and drop ``n`` body bytes; False when the peer went away first."""
        buf = self._buf
        taken = min(n, len(buf))
        del buf[:taken]
        n -= taken
        scratch = bytearray(min(n, _RECV))
        try:
            while n > 0:
                k = self.sock.recv_into(scratch, min(n, len(scratch)))
                if k == 0:
                    return False
                n -= k
        except (ConnectionResetError, ConnectionAbortedError):
            return False
        return True

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def linger_close(self, limit: int = 1 << 20, seconds: float = 1.0) -> None:
        """Before the server closes a connection the client may still be sending on (after an error):
        send the FIN, then read and drop what still comes (up to ``limit`` bytes, ``seconds``), so
        closing with unread data does not reset the connection before the client read the answer."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + seconds
            while limit > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.sock.settimeout(left)
                chunk = self.sock.recv(min(limit, _RECV))
                if not chunk:
                    return
                limit -= len(chunk)
        except OSError:  # reset, timed out, already closed: nothing more to do
            return
