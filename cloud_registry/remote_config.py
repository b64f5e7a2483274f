"""Push signed remote configuration to devices and groups (docs/remote-config.md).

:func:`overlay_from_toml` reads the file an engineer writes (the tables of a device config to
change), :class:`ConfigPusher` signs it as a versioned :class:`ConfigDocument` (the version comes
from the registry's deployment counter, so it only goes up across the whole fleet), publishes it
retained on the device's or the group's config topic, waits for the broker's acknowledgement, and
records the push (version, target, who, when, the signed document) in the registry.

A file of ``[[station]]`` tables is a device's station layout (docs/stations.md): its ``station`` list
travels as it is (the one list of tables a document may hold) to ``device:ID``, whose station
supervisor applies it; :func:`overlay_from_toml` bounds it like any overlay.
"""

from __future__ import annotations

import time
import tomllib
from dataclasses import dataclass
from typing import Any

from cloud_registry.errors import RegistryError
from cloud_registry.station_targets import parse_station
from cloud_registry.store.base import RegistryStore
from cloud_registry.store.config_pushes import ConfigPush
from converters.keys import SigningKey
from edgeline.core.errors import EdgelineError, ProtocolError
from edgeline.core.mqtt_link import MqttLink
from edgeline.core.protocol.delivery import envelope_bytes
from edgeline.core.protocol.manifest import Target
from edgeline.core.protocol.remote_config import MAX_CONFIG_DOC_BYTES, ConfigDocument, parse_config_document
from edgeline.core.protocol.topics import Topics, check_segment, check_unit

#: a pushed config may be applied for this long after it was signed (a device offline longer
#: than this refuses it as expired and keeps what it runs)
DEFAULT_VALID_DAYS = 30.0
ACK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ConfigTarget:
    kind: str  # "device" or "group"
    name: str

    @classmethod
    def parse(cls, text: str) -> ConfigTarget:
        """``device:ID``, ``group:NAME``, ``station:DEV/ST`` (docs/stations.md), or a bare device id
        (``DEV~ST`` for a station)."""
        kind, _, name = text.partition(":") if ":" in text else ("device", "", text)
        if kind not in ("device", "group", "station"):
            raise RegistryError(
                f"config target {text!r}: use DEVICE, device:ID, station:DEVICE/STATION or group:NAME",
                reason="bad_target",
            )
        try:
            if kind == "station":
                kind, name = "device", parse_station(name)
            elif kind == "device":
                check_unit(name, "device name")
            else:
                check_segment(name, "group name")
        except (ProtocolError, ValueError) as exc:
            raise RegistryError(str(exc), reason="bad_target") from exc
        return cls(kind, name)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    def topic(self, topics: Topics) -> str:
        return topics.device_config(self.name) if self.kind == "device" else topics.group_config(self.name)

    def manifest_target(self) -> Target:
        return Target(devices=(self.name,)) if self.kind == "device" else Target(groups=(self.name,))


def overlay_from_toml(text: str, origin: str = "config file") -> dict[str, Any]:
    """The tables of a TOML file, as a document's overlay (shape checked; the device's schema judges
    the values)."""
    if len(text.encode("utf-8")) > MAX_CONFIG_DOC_BYTES // 2:
        raise RegistryError(f"{origin}: larger than {MAX_CONFIG_DOC_BYTES // 2} bytes", reason="bad_config")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{origin}: not valid TOML: {exc}", reason="bad_config") from exc
    if not data:
        raise RegistryError(f"{origin}: no table to push", reason="bad_config")
    now = time.time()
    try:  # the same bounds the device applies
        parse_config_document({"version": 1, "issued_at": now, "expires_at": now + 1, "config": data})
    except ProtocolError as exc:
        raise RegistryError(f"{origin}: {exc}", reason="bad_config") from exc
    return data


class ConfigPusher:
    def __init__(self, link: MqttLink, topics: Topics, signer: SigningKey, store: RegistryStore) -> None:
        self.link = link
        self.topics = topics
        self.signer = signer
        self.store = store

    def push(
        self,
        target: ConfigTarget,
        overlay: dict[str, Any],
        *,
        actor: str,
        note: str = "",
        valid_days: float = DEFAULT_VALID_DAYS,
        now: float | None = None,
    ) -> ConfigPush:
        t = time.time() if now is None else now
        doc = ConfigDocument(
            version=self.store.next_sequence(),
            issued_at=t,
            expires_at=t + valid_days * 86400.0,
            target=target.manifest_target(),
            config=overlay,
            pushed_by=actor[:64],
            note=note[:200],
        )
        env = self.signer.sign(doc.to_body())
        payload = envelope_bytes(env)
        if len(payload) > MAX_CONFIG_DOC_BYTES:
            raise RegistryError(f"the signed document is {len(payload)} bytes (limit {MAX_CONFIG_DOC_BYTES})")
        topic = target.topic(self.topics)
        try:
            self.link.publish_sync(topic, payload, 1, True, ACK_TIMEOUT_S)
        except EdgelineError as exc:
            raise RegistryError(f"publishing config version {doc.version} to {topic} failed: {exc}") from exc
        push = ConfigPush(doc.version, str(target), actor, t, note, env.model_dump(mode="json"))
        self.store.record_config_push(push)
        return push

    def last_push(self, target: ConfigTarget) -> ConfigPush | None:
        pushes = self.store.config_pushes(str(target), limit=1)
        return pushes[0] if pushes else None
