"""A TCP fault proxy on loopback: it sits between MQTT clients and a real broker and, on command,
breaks the network the way factory networks break.

    client ──▶ 127.0.0.1:<proxy.port> ──▶ 127.0.0.1:<upstream port> (Mosquitto)

Faults (each can be switched on and off at any time, from any thread):

* :meth:`cut`: reset every open connection at once (RST, like a switch reboot or a NAT flush);
* :meth:`refuse`: accept new connections and close them at once (the broker looks down);
* :meth:`stall`: stop moving bytes in both directions without losing any (a partition shorter than
  TCP's retransmission give-up: the bytes arrive late, all of them, in order);
* :meth:`drop`: read and discard every byte (a black hole: keepalives go unanswered, so clients must
  detect the dead link themselves). A connection that lost bytes is desynchronised, so it is reset
  when the drop ends, as a real middlebox that lost state would do;
* :meth:`delay`: add latency to every forwarded chunk, in both directions, keeping order.

Loopback only: it refuses to listen or connect anywhere else. Threaded (two pump threads per
connection), which is plenty for a handful of MQTT clients.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_CHUNK = 64 * 1024
_POLL_S = 0.02


@dataclass
class ProxyStats:
    accepted: int = 0
    refused: int = 0
    cut: int = 0
    reset_after_drop: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    bytes_dropped: int = 0
    faults: dict[str, int] = field(default_factory=dict)

    def count(self, fault: str) -> None:
        self.faults[fault] = self.faults.get(fault, 0) + 1


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), not a polite FIN: the peer sees the connection die."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class _Conn:
    def __init__(self, proxy: FaultProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.closed = threading.Event()
        self.tainted = False  # lost bytes to a drop: must be reset when the drop ends
        self._lock = threading.Lock()

    def start(self) -> None:
        for src, dst, up in ((self.client, self.upstream, True), (self.upstream, self.client, False)):
            threading.Thread(target=self._pump, args=(src, dst, up), daemon=True, name="fault-proxy-pump").start()

    def close(self) -> None:
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
        _reset(self.client)
        _reset(self.upstream)
        self.proxy._forget(self)

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        p = self.proxy
        try:
            while not self.closed.is_set():
                if p._stalled.is_set():
                    time.sleep(_POLL_S)
                    continue
                ready, _, _ = select.select([src], [], [], _POLL_S)
                if not ready:
                    continue
                data = src.recv(_CHUNK)
                if not data:
                    break
                got = time.monotonic()
                if p._dropping.is_set():
                    self.tainted = True
                    with p._lock:
                        p.stats.bytes_dropped += len(data)
                    continue
                wait = got + p._delay_s - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                while p._stalled.is_set() and not self.closed.is_set():
                    time.sleep(_POLL_S)
                dst.sendall(data)
                with p._lock:
                    if up:
                        p.stats.bytes_up += len(data)
                    else:
                        p.stats.bytes_down += len(data)
        except OSError:
            pass
        self.close()


class FaultProxy:
    """Forward ``127.0.0.1:port`` to ``127.0.0.1:upstream_port``, with faults on command."""

    def __init__(self, upstream_port: int, *, upstream_host: str = LOOPBACK, port: int = 0) -> None:
        if upstream_host != LOOPBACK:
            raise ValueError("the fault proxy forwards to loopback only")
        self.upstream = (upstream_host, upstream_port)
        self.stats = ProxyStats()
        self._lock = threading.Lock()
        self._conns: set[_Conn] = set()
        self._stalled = threading.Event()
        self._dropping = threading.Event()
        self._refusing = threading.Event()
        self._delay_s = 0.0
        self._closing = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, port))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="fault-proxy")
        self._thread.start()

    # -- faults ------------------------------------------------------------------------------------
    def cut(self) -> int:
        """Reset every open connection; returns how many were cut."""
        with self._lock:
            conns = list(self._conns)
            self.stats.cut += len(conns)
            self.stats.count("cut")
        for c in conns:
            c.close()
        return len(conns)

    def refuse(self, on: bool = True) -> None:
        if on:
            self.stats.count("refuse")
        (self._refusing.set if on else self._refusing.clear)()

    def stall(self, on: bool = True) -> None:
        if on:
            self.stats.count("stall")
        (self._stalled.set if on else self._stalled.clear)()

    def drop(self, on: bool = True) -> None:
        if on:
            self.stats.count("drop")
            self._dropping.set()
            return
        self._dropping.clear()
        with self._lock:
            tainted = [c for c in self._conns if c.tainted]
            self.stats.reset_after_drop += len(tainted)
        for c in tainted:
            c.close()

    def delay(self, seconds: float) -> None:
        if seconds > 0:
            self.stats.count("delay")
        self._delay_s = max(0.0, float(seconds))

    def heal(self) -> None:
        """Every fault off (a drop that ends resets the connections that lost bytes)."""
        self.refuse(False)
        self.stall(False)
        self.drop(False)
        self.delay(0.0)

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._conns)

    # -- lifecycle ----------------------------------------------------------------------------------
    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(2.0)
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _forget(self, conn: _Conn) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                ready, _, _ = select.select([self._listener], [], [], 0.1)
                if not ready:
                    continue
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refusing.is_set():
                with self._lock:
                    self.stats.refused += 1
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=2.0)
                upstream.settimeout(None)
            except OSError:  # the broker itself is down: the client sees a refused connection
                with self._lock:
                    self.stats.refused += 1
                _reset(client)
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(self, client, upstream)
            with self._lock:
                self._conns.add(conn)
                self.stats.accepted += 1
            conn.start()
