"""``[cloud]``: the connection from a device to the fleet broker. Owned by the delivery work."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgeline.core.errors import TransportError
from edgeline.core.mqtt.settings import parse_address
from edgeline.core.protocol.topics import SEGMENT_PATTERN
from firmware_configs.base import Section


class TlsSection(Section):
    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None


class CloudSection(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    #: the nodes of a clustered broker, ``"host:port"`` each, tried in turn (instead of host/port)
    brokers: tuple[str, ...] = Field(default=(), max_length=32)
    #: how long a CONNECT waits for its CONNACK before the next try (MQTT 3.1.1 after an unanswered 5)
    connect_timeout_s: float = Field(default=3.0, gt=0, le=120)
    #: "auto": MQTT 5 where the broker accepts it, else 3.1.1 (remembered per broker address)
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    topic_root: str = Field(default="edgeline", pattern=SEGMENT_PATTERN)
    fleet: str = Field(default="default", pattern=SEGMENT_PATTERN)
    username: str | None = None
    password_file: str | None = None
    tls: TlsSection | None = None
    #: the retained state is re-published this often; the fleet view marks a device offline after 3 missed
    heartbeat_s: float = Field(default=30.0, gt=0)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    #: how long the broker keeps this device's session (and queued QoS 1 messages) while it is away
    session_expiry_s: int = Field(default=7 * 86400, ge=0)
    reconnect_max_s: float = Field(default=10.0, gt=0, le=3600)

    @field_validator("brokers")
    @classmethod
    def _brokers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        seen = []
        for item in v:
            try:
                address = parse_address(item)
            except TransportError as exc:
                raise ValueError(str(exc)) from exc
            if address in seen:
                raise ValueError(f"broker {item!r} is listed twice")
            seen.append(address)
        return v

    @model_validator(mode="after")
    def _one_way(self) -> CloudSection:
        if self.brokers and {"host", "port"} & self.model_fields_set:
            raise ValueError('give either host/port or brokers = ["host:port", ...], not both')
        return self

    def addresses(self) -> list[tuple[str, int]]:
        """Every broker address in the order tried: ``brokers``, or ``host:port``."""
        return [parse_address(b) for b in self.brokers] or [(self.host, self.port)]
