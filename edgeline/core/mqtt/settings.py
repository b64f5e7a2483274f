"""What an MQTT link is told: broker addresses, credentials, TLS, protocol version, Will, timing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from edgeline.core.errors import TransportError

#: "auto": MQTT 5 first, 3.1.1 when the broker refuses 5 or never answers it (remembered per address)
Protocol = Literal["auto", "5", "3.1.1"]


@dataclass(frozen=True)
class TlsSettings:
    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None
    server_hostname_check: bool = True


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def parse_address(text: str, default_port: int = 1883) -> tuple[str, int]:
    """``host:port``, ``host`` (the default port) or ``[v6addr]:port`` as ``(host, port)``."""
    value = text.strip()
    if not value:
        raise TransportError("empty broker address", reason="config")
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep or (rest and not rest.startswith(":")):
            raise TransportError(f"bad broker address {text!r}: use [v6addr]:port", reason="config")
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    else:
        host, port_text = value, ""
    if not host or any(c.isspace() or c in "/#+" for c in host):
        raise TransportError(f"bad broker address {text!r}: expected host:port", reason="config")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise TransportError(f"bad broker address {text!r}: the port must be 1-65535", reason="config")
    return host, int(port_text)


def format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class LinkSettings:
    """``host``/``port`` is the first broker; ``brokers`` adds the other nodes of the same cluster:
    the link tries them in turn, moving on when one fails (:mod:`edgeline.core.mqtt.plan`)."""

    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""
    username: str | None = None
    password: str | None = None
    tls: TlsSettings | None = None
    protocol: Protocol = "auto"
    keepalive: int = 30
    clean_start: bool = False
    session_expiry_s: int = 7 * 86400
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 10.0
    will: Will | None = None
    max_inflight: int = 64
    max_queued: int = 0
    #: further broker addresses (host, port), tried after ``host:port``
    brokers: tuple[tuple[str, int], ...] = field(default_factory=tuple)
    #: how long an MQTT 5 CONNECT to a broker not known to speak it waits for its CONNACK (some
    #: brokers never answer it: then 3.1.1 is tried)
    connack_timeout_s: float = 3.0
    #: how long any other CONNECT waits: a cluster node restoring a session (NATS: one JetStream
    #: consumer per subscription) can take seconds to answer
    connack_wait_s: float = 15.0
    #: first wait before a refused subscription is sent again (doubles up to reconnect_max_s)
    resubscribe_min_s: float = 0.5

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Every broker address, the first one first, without repeats."""
        out: list[tuple[str, int]] = []
        for a in [(self.host, self.port), *self.brokers]:
            if a not in out:
                out.append(a)
        return out
