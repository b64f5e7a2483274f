"""``[cloud]``: the connection from a device to the fleet broker. Owned by the delivery work."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from firmware_configs.base import Section


class TlsSection(Section):
    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None


class CloudSection(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    protocol: Literal["5", "3.1.1"] = "5"
    topic_root: str = "edgeline"
    fleet: str = "default"
    username: str | None = None
    password_file: str | None = None
    tls: TlsSection | None = None
    heartbeat_s: float = Field(default=30.0, gt=0)
