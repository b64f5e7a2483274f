"""Signed remote configuration: the document the cloud pushes and the status the device reports.

A config document is the ``body`` of a signed :class:`~edgeline.core.protocol.signing.Envelope`
(the same trust chain as deployment manifests: root-certified signing keys, revocations, expiry).
Its ``config`` is an *overlay*: tables and keys of the device configuration (TOML sections as JSON
objects) laid over the device's own configuration file. Each document is absolute: the device runs
its file plus the newest document it accepted, never an accumulation of earlier documents.

``version`` only goes up across the whole fleet (the registry issues it from the same counter as
deployment sequences), so a newer group document beats an older device document and the other way
round; a device refuses a version at or below the newest it has accepted (replay, downgrade).

The device validates the overlay against its own schema (``firmware_configs``); this module only
bounds the document's shape and size, so that nothing unbounded reaches the validator.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from edgeline.core.errors import ProtocolError
from edgeline.core.protocol.canonical import canonical_json, parse_json
from edgeline.core.protocol.manifest import Target
from edgeline.core.protocol.signing import Envelope, parse_envelope
from edgeline.core.strict import Strict, StrictByName

CONFIG_SCHEMA = "edgeline.config/1"
CONFIG_STATE_SCHEMA = "edgeline.config-state/1"
#: a signed config document on the wire (the overlay is a few kilobytes; this bounds the envelope)
MAX_CONFIG_DOC_BYTES = 64 * 1024
MAX_CONFIG_STATE_BYTES = 16 * 1024
#: shape bounds of an overlay, checked before any schema sees it
MAX_DEPTH = 4
MAX_STRING = 1024
MAX_ITEMS = 64
MAX_INT = 2**53


class ConfigReason(StrEnum):
    """Why a config document was refused or rolled back (machine-readable, in the status)."""

    BAD_DOCUMENT = "bad_document"  # not a signed envelope, or not a config document
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"  # signed by a key certified by a root the device does not trust
    REVOKED_KEY = "revoked_key"
    KEY_EXPIRED = "key_expired"
    EXPIRED = "expired"
    WRONG_TARGET = "wrong_target"
    REPLAY = "replay"  # version at or below the newest accepted
    INVALID = "invalid"  # the device's schema refuses the merged configuration
    FORBIDDEN = "forbidden"  # a section or key a remote document may not set
    HOSTILE = "hostile"  # a path outside the allowed directories, a command to run, an oversized value
    NO_STATION = "no_station"  # the device would be left without a working station
    TRIAL_FAILED = "trial_failed"  # applied, but the agent could not run with it: rolled back
    CRASHED = "crashed"  # the agent died while trying it: rolled back at the next start
    IO_ERROR = "io_error"


def shape_problem(value: Any, where: str = "config", depth: int = 0) -> str | None:
    """Why ``value`` is not a bounded overlay (depth, string length, list length, integer size), or None."""
    if depth > MAX_DEPTH:
        return f"{where}: nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, dict):
        if len(value) > MAX_ITEMS:
            return f"{where}: {len(value)} keys (at most {MAX_ITEMS})"
        for k, v in value.items():
            if not isinstance(k, str) or not 0 < len(k) <= 64:
                return f"{where}: key {str(k)[:40]!r} is not a name of 1-64 characters"
            problem = shape_problem(v, f"{where}.{k}" if where != "config" else k, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, list):
        if len(value) > MAX_ITEMS:
            return f"{where}: {len(value)} items (at most {MAX_ITEMS})"
        for i, v in enumerate(value):
            if isinstance(v, dict | list):
                return f"{where}[{i}]: lists hold plain values only"
            problem = shape_problem(v, f"{where}[{i}]", depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            return f"{where}: a string of {len(value)} characters (at most {MAX_STRING})"
        return None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return f"{where}: integer {value} out of range" if abs(value) > MAX_INT else None
    if isinstance(value, float):
        return None
    return f"{where}: unsupported value of type {type(value).__name__}"


#: the one key of a document that holds a list of tables: a device's station layout (``[[station]]``,
#: docs/stations.md), each station's table bounded as a section is
LAYOUT_KEY = "station"
MAX_LAYOUT_STATIONS = 16


def layout_shape_problem(value: Any) -> str | None:
    """Why ``value`` is not a bounded station layout (a list of at most 16 tables), or None."""
    if value is None:
        return None
    if not isinstance(value, list):
        return f"{LAYOUT_KEY}: a station layout is a list of tables ([[station]])"
    if len(value) > MAX_LAYOUT_STATIONS:
        return f"{LAYOUT_KEY}: {len(value)} stations (at most {MAX_LAYOUT_STATIONS})"
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            return f"{LAYOUT_KEY}[{i}]: a station is a table"
        problem = shape_problem(item, f"{LAYOUT_KEY}[{i}]", 1)
        if problem:
            return problem
    return None


class ConfigDocument(StrictByName):
    schema_: Literal["edgeline.config/1"] = Field(default="edgeline.config/1", alias="schema")
    version: int = Field(ge=1, le=MAX_INT)
    issued_at: float
    expires_at: float
    target: Target = Target()
    #: the overlay: ``{"sinks": {"jsonl": {...}}, "telemetry": {"window_s": 30}}``
    config: dict[str, Any]
    #: who pushed it (the registry's record holds the same)
    pushed_by: str = Field(default="", max_length=64)
    note: str = Field(default="", max_length=200)

    @field_validator("config")
    @classmethod
    def _bounded(cls, v: dict[str, Any]) -> dict[str, Any]:
        tables = {k: s for k, s in v.items() if k != LAYOUT_KEY}
        problem = shape_problem(tables) or layout_shape_problem(v.get(LAYOUT_KEY))
        if problem:
            raise ValueError(problem)
        for name, section in tables.items():
            if not isinstance(section, dict):
                raise ValueError(f"{name}: a config document holds tables (sections), not a bare value")
        return v

    @model_validator(mode="after")
    def _times(self) -> ConfigDocument:
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")
        return self

    def to_body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def is_expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at


def parse_config_document(body: Any) -> ConfigDocument:
    """Validate a config document body; every failure is a :class:`ProtocolError` naming the field."""
    try:
        return ConfigDocument.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "document"
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise ProtocolError(f"config document field {loc}: {msg}") from exc


def parse_config_payload(payload: bytes) -> Envelope | None:
    """A payload of a config topic: None when empty (the push was cleared), else the signed envelope
    (its signature is NOT checked here)."""
    if not payload:
        return None
    data = parse_json(payload, max_bytes=MAX_CONFIG_DOC_BYTES)
    if not isinstance(data, dict):
        raise ProtocolError("config payload is not a JSON object")
    return parse_envelope(data)


class ConfigOutcome(Strict):
    """A refusal or a rollback, as the status reports it."""

    version: int = Field(ge=0)
    reason: str = Field(max_length=40)
    detail: str = Field(default="", max_length=1000)
    ts: float


class ConfigState(StrictByName):
    """Retained on ``devices/<id>/config_state``: which config version the device runs, whether a
    trial is under way, and the last refusal and rollback with their reasons."""

    schema_: Literal["edgeline.config-state/1"] = Field(default="edgeline.config-state/1", alias="schema")
    device_id: str
    ts: float
    #: the committed remote config version (0: the device's own file only)
    version: int = Field(default=0, ge=0)
    #: the version on trial (applied, not committed yet), if any
    trial: int | None = None
    applied_at: float | None = None
    #: dotted keys the committed document changed from the device's own file
    changed: tuple[str, ...] = ()
    last_refusal: ConfigOutcome | None = None
    last_rollback: ConfigOutcome | None = None

    def to_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", by_alias=True))


def parse_config_state(payload: bytes) -> ConfigState:
    data = parse_json(payload, max_bytes=MAX_CONFIG_STATE_BYTES)
    try:
        return ConfigState.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "top level"
        raise ProtocolError(f"config state is malformed at {loc}: {first['msg']}") from exc


__all__ = [
    "CONFIG_SCHEMA",
    "LAYOUT_KEY",
    "MAX_CONFIG_DOC_BYTES",
    "ConfigDocument",
    "ConfigOutcome",
    "ConfigReason",
    "ConfigState",
    "layout_shape_problem",
    "parse_config_document",
    "parse_config_payload",
    "parse_config_state",
    "shape_problem",
]
