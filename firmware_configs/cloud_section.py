"""``[cloud]``: the connection from a device to the fleet broker. Owned by the delivery work."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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
