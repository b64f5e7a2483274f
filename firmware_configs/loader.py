"""TOML → :class:`DeviceConfig`, with errors that name the bad key and the bad value.

    >>> load_config("/etc/edgeline/agent.toml")        # doctest: +SKIP

Every problem in the file is reported at once, one line each, e.g.::

    /etc/edgeline/agent.toml: 2 problems
      source.kind = 'camera': must be one of 'usb', 'url', 'file', 'folder'
      inference.treads: unknown key (value 2)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgeline.core.protocol.topics import SEGMENT_RULE, segment_problem
from firmware_configs.errors import ConfigError
from firmware_configs.schema import SEGMENT_PATTERN, DeviceConfig

#: A device config is a few kilobytes; refuse anything absurd before parsing it.
MAX_CONFIG_BYTES = 1024 * 1024
_MAX_SHOWN = 20


@dataclass(frozen=True)
class Problem:
    key: str
    value: Any
    message: str
    has_value: bool = True

    def __str__(self) -> str:
        if self.message == "unknown key":
            return f"{self.key}: unknown key (value {_show(self.value)})"
        if self.has_value:
            return f"{self.key} = {_show(self.value)}: {self.message}"
        return f"{self.key}: {self.message}"


class ConfigProblems(ConfigError):
    """A configuration failed validation; ``problems`` lists every bad key with its value."""

    def __init__(self, origin: str, problems: list[Problem]) -> None:
        self.origin = origin
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:_MAX_SHOWN])
        more = f"\n  ... and {len(problems) - _MAX_SHOWN} more" if len(problems) > _MAX_SHOWN else ""
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{origin}: {len(problems)} {noun}\n{shown}{more}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _message(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "literal_error" and "expected" in ctx:
        return f"must be one of {ctx['expected']}"
    if kind == "missing":
        return "required key is missing"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == SEGMENT_PATTERN:
        return segment_problem(err.get("input")) or SEGMENT_RULE
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    return msg[:1].lower() + msg[1:]


def _tables(value: Any) -> bool:
    """An array of tables (``[[station]]``): named by its key, not shown."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def problems_of(exc: ValidationError) -> list[Problem]:
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            out.append(Problem(key, err["input"], "unknown key"))
            continue
        value = err.get("input")
        # A rule spanning several keys reports the whole table as its input: name the table only.
        leaf = err["type"] != "missing" and not isinstance(value, dict) and not _tables(value)
        out.append(Problem(key, value, _message(err), has_value=leaf))
    return out


def parse_config(data: Any, origin: str = "config") -> DeviceConfig:
    """Validate a parsed TOML document (a dict). Raises :class:`ConfigProblems`."""
    if not isinstance(data, dict):
        raise ConfigProblems(origin, [Problem("(top level)", data, "a config must be a table of sections")])
    raw, stations = data, data.get("station")
    if stations and "source" not in data and isinstance(stations, list):
        # the stations name their own sources: the device-level view shows the first one given
        given = (st["source"] for st in stations if isinstance(st, dict) and isinstance(st.get("source"), dict))
        data = {**data, "source": next(given, None)}
    try:
        cfg = DeviceConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigProblems(origin, problems_of(exc)) from exc
    if cfg.station:
        from firmware_configs.stations import derive_stations, device_tables

        derive_stations(device_tables(raw), cfg, origin)
    return cfg


def parse_toml(text: str, origin: str = "config") -> DeviceConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from exc
    return parse_config(data, origin)


def load_config(path: str | Path) -> DeviceConfig:
    """Read and validate a device configuration file."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{p}: {size} bytes is too large for a device config (limit {MAX_CONFIG_BYTES})")
        raw = p.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{p}: no such config file") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{p}: is a directory, not a config file") from exc
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start})") from exc
    return parse_toml(text, str(p))


def profiles_dir() -> Path:
    """Directory of the device profiles shipped with edgeline."""
    return Path(__file__).resolve().parent / "profiles"


def shipped_profiles() -> list[Path]:
    return sorted(profiles_dir().glob("*.toml"))
