"""``[trigger]`` and ``[line.*]``: triggered inspection and the line's own interfaces (a plain TCP line
protocol, a Modbus TCP server, an OPC UA server). See docs/line.md for the register map and tag list."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, model_validator

from edgeline.core.protocol.topics import SEGMENT_PATTERN
from firmware_configs.base import Section


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class TriggerSection(Section):
    """``[trigger]``: how triggers are matched to frames (used when ``[source] mode = "trigger"``)."""

    #: a trigger without a time takes the first frame captured within this long after it arrived; one
    #: with a time takes the frame closest to it within this distance. Else the result is ``missed``.
    window_ms: float = Field(default=200.0, gt=0.0, le=60_000.0)
    #: a result published later than this after its trigger arrived has the state ``late``
    budget_ms: float = Field(default=100.0, gt=0.0, le=600_000.0)
    #: triggers waiting for a frame at once; more are answered ``refused``
    max_pending: int = Field(default=64, ge=1, le=10_000)
    #: recent frames kept for triggers that carry a time
    buffer_frames: int = Field(default=32, ge=1, le=10_000)
    #: part ids assigned to triggers that carry none: ``<prefix><n>``
    part_id_prefix: str = Field(default="part-", max_length=32)


class LineCommon(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    #: results waiting for this interface; when full the oldest is dropped and counted
    queue_size: int = Field(default=256, ge=1, le=1_000_000)


class TcpLineSection(LineCommon):
    """``[line.tcp]``: ``TRIGGER <part_id>`` lines in, ``RESULT ...`` lines out."""

    port: int = Field(default=8573, ge=0, le=65535)
    max_clients: int = Field(default=16, ge=1, le=1024)


class ModbusSection(LineCommon):
    """``[line.modbus]``: a Modbus TCP server (register map: docs/line.md). Modbus has no
    authentication: off loopback it needs ``allow_remote = true`` said out loud."""

    port: int = Field(default=5020, ge=0, le=65535)
    unit_id: int = Field(default=1, ge=0, le=247)
    allow_remote: bool = False

    @model_validator(mode="after")
    def _remote(self) -> ModbusSection:
        if self.enabled and not _loopback(self.host) and not self.allow_remote:
            raise ValueError(
                f"line.modbus.host {self.host!r} is not a loopback address and Modbus has no authentication: "
                "set line.modbus.allow_remote = true on a separated control network, or bind to 127.0.0.1"
            )
        return self


OpcuaPolicy = Literal["Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"]


class OpcuaSection(LineCommon):
    """``[line.opcua]``: an OPC UA server (tag list: docs/line.md). Anonymous access only on loopback;
    off loopback a user file and a certificate (Sign&Encrypt with ``policy``) are required."""

    port: int = Field(default=4840, ge=0, le=65535)
    #: the namespace of the vision system's nodes
    namespace: str = "urn:edgeline:line"
    #: anonymous sessions; refused off loopback
    allow_anonymous: bool = False
    #: ``user:password`` lines (``user:pbkdf2_sha256$...`` hashes or plain text)
    users_file: str | None = None
    #: server certificate and key (PEM); when absent, the agent makes a self-signed pair in ``pki_dir``
    certificate: str | None = None
    private_key: str | None = None
    pki_dir: str = "/var/lib/edgeline/opcua"
    #: a directory of client certificates (PEM or DER) allowed to connect; empty = any client
    #: certificate, the user/password decides
    trusted_clients_dir: str | None = None
    policy: OpcuaPolicy = "Basic256Sha256"
    #: also offer the unencrypted endpoint; only on loopback
    allow_unencrypted: bool = False

    @model_validator(mode="after")
    def _security(self) -> OpcuaSection:
        if not self.enabled or _loopback(self.host):
            return self
        if self.allow_anonymous or self.allow_unencrypted:
            raise ValueError(
                f"line.opcua.host {self.host!r} is not a loopback address: anonymous and unencrypted access "
                "are for 127.0.0.1 only (set allow_anonymous = false and allow_unencrypted = false)"
            )
        if self.users_file is None:
            raise ValueError(f"line.opcua.host {self.host!r} is not a loopback address: set line.opcua.users_file")
        return self

    @model_validator(mode="after")
    def _pair(self) -> OpcuaSection:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("line.opcua.certificate and line.opcua.private_key go together")
        if self.enabled and not self.allow_anonymous and self.users_file is None:
            raise ValueError("line.opcua: no way in (allow_anonymous = false and no users_file)")
        return self


class MqttLineSection(LineCommon):
    """``[line.mqtt]``: triggers from ``<topic_prefix>/<device>/trigger`` on the LINE's local broker,
    each result on ``<topic_prefix>/<device>/results``. Never the cloud broker."""

    port: int = Field(default=1883, ge=1, le=65535)
    topic_prefix: str = Field(default="line", pattern=SEGMENT_PATTERN)
    #: QoS of the results (triggers are subscribed with QoS 1)
    qos: int = Field(default=1, ge=0, le=1)
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    username: str | None = None
    password_file: str | None = None


class LineSection(Section):
    """``[line]``: the interfaces a PLC or a MES speaks to."""

    tcp: TcpLineSection | None = None
    modbus: ModbusSection | None = None
    opcua: OpcuaSection | None = None
    mqtt: MqttLineSection | None = None

    @property
    def any_enabled(self) -> bool:
        return any(x is not None and x.enabled for x in (self.tcp, self.modbus, self.opcua, self.mqtt))
