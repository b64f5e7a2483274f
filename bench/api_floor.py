"""The floor of ``bench_api``: the least any HTTP server in this Python process could do per request.

A raw-socket server, one thread per kept-alive connection (as the API), that reads a request head up
to its blank line, takes the body length from a ``Content-Length`` found by a plain byte search (no
other header is looked at, no request line checked), reads the body, runs the bare pipeline on it
(``cv2.imdecode`` -> the model's Preprocessor -> ``session.run``, exactly the ``bare`` arm) and writes
a precomputed answer of the API's size in one ``send`` with ``TCP_NODELAY``. Nothing here is safe to
serve: it exists to measure what the HTTP layer of the real API costs above it, in the same run.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable


class FloorServer:
    def __init__(self, work: Callable[[bytes], object], answer_body: bytes) -> None:
        self._work = work
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(answer_body)}\r\n\r\n"
        self._answer = head.encode("latin-1") + answer_body
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._stop = False
        self._thread = threading.Thread(target=self._accept, name="floor", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            socket.create_connection(self.address, timeout=1).close()  # wakes accept()
        self._thread.join(5)
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop:
            conn, _ = self._sock.accept()
            if self._stop:
                conn.close()
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = bytearray()
        with conn:
            while True:
                end = buf.find(b"\r\n\r\n")
                while end < 0:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                    end = buf.find(b"\r\n\r\n")
                head = bytes(buf[:end]).lower()
                del buf[: end + 4]
                i = head.find(b"content-length:")
                j = head.find(b"\r\n", i)
                n = int(head[i + 15 : j if j > 0 else None]) if i >= 0 else 0
                while len(buf) < n:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                body = bytes(buf[:n])
                del buf[:n]
                self._work(body)
                conn.sendall(self._answer)
