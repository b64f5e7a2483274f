"""Brokers edgeline starts for you: a real Mosquitto process (preferred), or an in-process amqtt broker
when no Mosquitto binary is installed. Used by ``edgeline demo`` and by the test suite, which needs to
stop, restart, kill and lock down its own broker on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cloud_registry.errors import BrokerError

log = logging.getLogger(__name__)

MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return True
        time.sleep(0.02)
    return False


def find_mosquitto() -> str | None:
    for path in MOSQUITTO_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("mosquitto")


class Broker(Protocol):
    host: str
    port: int
    #: "5" when the broker speaks MQTT 5, else "3.1.1"
    protocol: str

    def start(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class MosquittoBroker:
    """A Mosquitto process with its own config, port and persistence directory.

    ``extra_config`` is appended verbatim (ACLs, TLS listeners, password files). When it defines its
    own ``listener`` lines, set ``default_listener=False``.
    """

    workdir: Path
    port: int = 0
    host: str = "127.0.0.1"
    extra_config: str = ""
    default_listener: bool = True
    persistence: bool = True
    autosave_interval: int = 1
    binary: str | None = None
    protocol: str = "5"
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.binary = self.binary or find_mosquitto()
        if not self.binary:
            raise BrokerError("mosquitto is not installed (apt-get install -y mosquitto)")
        if self.port == 0:
            self.port = free_port(self.host)

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def render_config(self) -> str:
        user = pwd.getpwuid(os.getuid()).pw_name
        # Mosquitto's default of 1000 queued messages per client silently drops QoS 1 telemetry for an
        # ingest that falls behind (measured: 1,602 of 2,000 windows arrived, no error anywhere).
        lines = [f"user {user}", "max_queued_messages 100000"]
        if self.default_listener:
            lines += [f"listener {self.port} {self.host}", "allow_anonymous true"]
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.workdir}/",
                f"autosave_interval {self.autosave_interval}",
            ]
        lines += [f"log_dest file {self.log_path}", "log_type error", "log_type warning", "log_type notice"]
        return "\n".join(lines) + "\n" + self.extra_config + "\n"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.render_config(), "utf-8")
        assert self.binary is not None
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        if not wait_port(self.host, self.port, timeout):
            err = self._collect_error()
            self.kill()
            raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port} within {timeout}s: {err}")
        log.info("mosquitto started on %s:%d (pid %d)", self.host, self.port, self._proc.pid)

    def _collect_error(self) -> str:
        tail = ""
        if self.log_path.exists():
            tail = self.log_path.read_text("utf-8", "replace")[-500:]
        if self._proc is not None and self._proc.poll() is not None and self._proc.stderr is not None:
            tail += self._proc.stderr.read().decode("utf-8", "replace")[-500:]
        return tail.strip() or "no output"

    def stop(self, timeout: float = 5.0) -> None:
        """Graceful stop: Mosquitto saves its persistence database."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stderr is not None:
            self._proc.stderr.close()
        self._proc = None

    def kill(self) -> None:
        """Crash: SIGKILL, nothing saved beyond the last autosave."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stderr is not None:
            self._proc.stderr.close()
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def reload(self) -> None:
        """Re-read config (SIGHUP): e.g. a changed password file or ACL."""
        self.config_path.write_text(self.render_config(), "utf-8")
        if self._proc is not None:
            self._proc.send_signal(signal.SIGHUP)


@dataclass
class AmqttBroker:
    """In-process fallback broker (MQTT 3.1.1 only, in-memory queues). Runs its own event loop thread."""

    port: int = 0
    host: str = "127.0.0.1"
    protocol: str = "3.1.1"
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)
    _broker: object | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.port == 0:
            self.port = free_port(self.host)

    def start(self, timeout: float = 10.0) -> None:
        try:
            from amqtt.broker import Broker as _AmqttBroker
        except ImportError as exc:
            raise BrokerError("no mosquitto binary and amqtt is not installed (pip install edgeline[cloud])") from exc
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "sys_interval": 0,
            "auth": {"allow-anonymous": True, "plugins": ["auth_anonymous"]},
            "topic-check": {"enabled": False},
        }
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                broker = _AmqttBroker(config, loop=loop)
                self._broker = broker
                loop.run_until_complete(broker.start())
            except BaseException as exc:  # report to the starting thread
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="amqtt-broker", daemon=True)
        self._thread.start()
        ready.wait(timeout)
        if errors:
            raise BrokerError(f"in-process broker failed to start: {errors[0]}")
        if not wait_port(self.host, self.port, timeout):
            raise BrokerError("in-process broker did not start listening")

    def stop(self) -> None:
        loop, broker = self._loop, self._broker
        if loop is None or broker is None:
            return
        fut = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            fut.result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = self._broker = None


def start_embedded_broker(workdir: Path, prefer: str = "auto") -> MosquittoBroker | AmqttBroker:
    """Mosquitto when its binary is present (or ``prefer='mosquitto'``), otherwise amqtt in-process."""
    broker: MosquittoBroker | AmqttBroker
    if prefer == "amqtt" or (prefer == "auto" and find_mosquitto() is None):
        broker = AmqttBroker()
    else:
        broker = MosquittoBroker(Path(workdir) / "broker")
    broker.start()
    return broker
