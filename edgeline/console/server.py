"""Serving the console with uvicorn: the bind address (loopback unless told otherwise), TLS with the
certificate the user gives, and a server that runs in a thread (tests, benches)."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cloud_registry.registry import Registry
from converters.keys import SigningKey
from edgeline.console.actions import Operations
from edgeline.console.app import Console, create_app
from edgeline.console.live import LiveView
from edgeline.core.errors import EdgelineError
from edgeline.core.mqtt_link import MqttLink
from edgeline.core.protocol.topics import Topics

log = logging.getLogger(__name__)


class ConsoleError(EdgelineError):
    default_reason = "config"


@dataclass(frozen=True)
class Bind:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Bind:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConsoleError(f"bad --bind {text!r}: use HOST:PORT, e.g. 127.0.0.1:8080")
        return cls(host.strip("[]") or "127.0.0.1", int(port))

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class Tls:
    cert_file: Path
    key_file: Path


def build(
    registry: Registry,
    link: MqttLink,
    topics: Topics,
    signer: Callable[[], SigningKey],
    telemetry_url: str | Path,
    *,
    secure_cookies: bool,
) -> Console:
    live = LiveView(link, topics, book=registry.store)
    ops = Operations(registry, live, signer)
    return Console(registry, live, ops, telemetry_url, secure_cookies=secure_cookies)


def check_exposure(bind: Bind, tls: Tls | None, *, allow_plain_http: bool = False) -> None:
    """Beyond loopback, only with TLS (passwords and session cookies never cross a network in clear),
    unless plain HTTP is explicitly allowed (a network the user trusts; logged as a warning)."""
    if bind.loopback or tls is not None:
        return
    if not allow_plain_http:
        raise ConsoleError(
            f"refusing to serve on {bind.host} without TLS: give --https-cert-file and --https-key-file "
            "(or bind to 127.0.0.1 and reach it through an SSH tunnel; --allow-plain-http if the network is trusted)"
        )
    log.warning("serving plain HTTP on %s: passwords and session cookies cross the network in clear", bind.host)


def cookies_secure(bind: Bind, tls: Tls | None) -> bool:
    """Session cookies are marked Secure with TLS, and on loopback (browsers treat http://127.0.0.1
    as a secure context); on plain HTTP beyond loopback a Secure cookie would never come back."""
    return tls is not None or bind.loopback


class ConsoleServer:
    """uvicorn in a thread; :meth:`stop` ends it."""

    def __init__(self, console: Console, bind: Bind, tls: Tls | None = None) -> None:
        import uvicorn

        self.console = console
        self.bind = bind
        self.tls = tls
        config = uvicorn.Config(
            create_app(console),
            host=bind.host,
            port=bind.port,
            ssl_certfile=str(tls.cert_file) if tls else None,
            ssl_keyfile=str(tls.key_file) if tls else None,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        port = self.bind.port
        if self.server.started and self.server.servers:
            port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"{scheme}://{self.bind.host}:{port}"

    def run(self) -> None:
        """Serve in this thread until SIGINT/SIGTERM."""
        try:
            self.server.run()
        finally:
            self.console.close()

    def start(self, timeout: float = 10.0) -> ConsoleServer:
        self._thread = threading.Thread(target=self.server.run, name="console-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise ConsoleError(f"the console did not start on {self.bind.host}:{self.bind.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.console.close()
