"""What a remote document may change, and how: pure rules over plain dicts (a TOML file parsed, a
document's overlay), no I/O but for resolving paths.

* :func:`merge` lays an overlay over the device's own configuration (tables merge key by key, any
  other value replaces);
* :func:`flatten` and :func:`diff` give the dotted keys that differ (``sinks.jsonl.path``);
* :func:`classify` splits them into keys applied on the running agent (sinks, decision thresholds,
  telemetry windows) and keys that need a controlled restart;
* :func:`check_allowed` refuses what a document may never set (the device's identity, its fleet
  link, its trust, its update slots) and :func:`check_hostile` what would turn a signed document
  into a foothold (a command to run, a file outside the allowed directories).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from edge_agent.remote_config.errors import ConfigRefused
from edgeline.core.protocol.remote_config import ConfigReason

#: applied on the running agent, between two frames (no restart, no frame lost): these sections ...
HOT_SECTIONS = ("sinks", "decision")
#: ... and these keys
HOT_KEYS = frozenset({"telemetry.window_s", "telemetry.window_frames", "telemetry.min_frames"})
#: sections whose other keys a document may set; the agent restarts in a controlled way for them
RESTART_SECTIONS = frozenset({"sinks", "decision", "telemetry", "source", "inference", "trigger", "line", "shadow"})
#: why a section (or key) is never set remotely
FORBIDDEN = {
    "device": "the device's identity is its own",
    "cloud": "the fleet link and its credentials are set on the device",
    "updater": "the trust store and the model slots are set on the device",
    "model": "the initial bundle and its trust are set on the device",
    "remote_config": "how documents are accepted is set on the device",
    "status": "the status file is set on the device",
    "supervisor": "the station supervisor's hang watch is set in the device file, which it reads at start",
    "api": "the local API's address and token are set on the device",
    "feedback": "the feedback store is set on the device",
    "telemetry.pseudonym_key_file": "the pseudonym secret stays on the device",
    "telemetry.outbox_path": "the outbox database is set on the device",
    "sinks.command": "a remote document may not name a command to run",
    "station": "the station layout is set by a document to a device whose file has [[station]] tables "
    "(device:DEVICE), which its station supervisor applies",
}
_PATH_SUFFIXES = ("_path", "_file", "_dir")


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overlay`` laid over it: tables merge key by key, any other value replaces."""
    out = dict(base)
    for key, value in overlay.items():
        old = out.get(key)
        out[key] = merge(old, value) if isinstance(old, Mapping) and isinstance(value, Mapping) else value
    return out


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"sinks": {"jsonl": {"path": p}}}`` -> ``{"sinks.jsonl.path": p}`` (an empty table stays a key)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any
    #: False: the key is not in the old configuration (added); ``had_new`` likewise (removed)
    had_old: bool = True
    had_new: bool = True


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Every dotted key whose value differs between two configurations, sorted by key."""
    a, b = flatten(old), flatten(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if key not in a:
            out.append(Change(key, None, b[key], had_old=False))
        elif key not in b:
            out.append(Change(key, a[key], None, had_new=False))
        elif a[key] != b[key]:
            out.append(Change(key, a[key], b[key]))
    return out


@dataclass(frozen=True)
class Plan:
    hot: tuple[str, ...]
    restart: tuple[str, ...]

    @property
    def needs_restart(self) -> bool:
        return bool(self.restart)

    @property
    def keys(self) -> tuple[str, ...]:
        return self.hot + self.restart


def is_hot(key: str) -> bool:
    return key.split(".", 1)[0] in HOT_SECTIONS or key in HOT_KEYS


def classify(keys: Iterable[str]) -> Plan:
    hot: list[str] = []
    restart: list[str] = []
    for key in keys:
        (hot if is_hot(key) else restart).append(key)
    return Plan(tuple(hot), tuple(restart))


def _forbidden_reason(key: str) -> str | None:
    parts = key.split(".")
    for n in range(1, len(parts) + 1):
        why = FORBIDDEN.get(".".join(parts[:n]))
        if why is not None:
            return why
    if parts[0] not in RESTART_SECTIONS:
        return f"{parts[0]!r} is not a section a remote document may set"
    return None


def check_allowed(overlay: Mapping[str, Any]) -> None:
    """Refuse a key no remote document may set (the first one found, with why)."""
    for key in sorted(flatten(overlay)):
        why = _forbidden_reason(key)
        if why is not None:
            reason = ConfigReason.HOSTILE if key.startswith("sinks.command") else ConfigReason.FORBIDDEN
            raise ConfigRefused(reason, f"{key}: {why}")


def is_path_key(key: str) -> bool:
    leaf = key.rsplit(".", 1)[-1]
    return leaf == "path" or leaf.endswith(_PATH_SUFFIXES)


def allowed_roots(base: Mapping[str, Any], extra: Iterable[str]) -> list[str]:
    """The directories under which a document may name files: ``extra`` (``[remote_config]
    allowed_dirs``) and the directories of the sink and source paths of the device's own file."""
    roots = list(extra)
    for key, value in flatten(base).items():
        if isinstance(value, str) and (key.startswith("sinks.") or key == "source.path") and is_path_key(key):
            roots.append(os.path.dirname(value.rstrip("/")) or "/")
    return roots


#: keys naming where verdicts go, and how to read the host out of each
_HOST_KEYS = ("sinks.mqtt.host", "sinks.webhook.url")


def _host_of(key: str, value: str) -> str:
    if key.endswith(".url"):
        return (urlsplit(value).hostname or "").lower()
    return value.strip("[]").lower()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(base: Mapping[str, Any], extra: Iterable[str]) -> set[str]:
    """Hosts a document may send verdicts to: ``extra`` (``[remote_config] allowed_hosts``) and the
    sink hosts of the device's own file (loopback always)."""
    flat = flatten(base)
    hosts = {h.lower() for h in extra}
    hosts |= {_host_of(k, v) for k in _HOST_KEYS if isinstance(v := flat.get(k), str)}
    return hosts


def check_hosts(overlay: Mapping[str, Any], hosts: set[str]) -> None:
    """Verdicts stay on the line: a document may point a sink at loopback or an allowed host only."""
    flat = flatten(overlay)
    for key in _HOST_KEYS:
        value = flat.get(key)
        if not isinstance(value, str):
            continue
        host = _host_of(key, value)
        if not _loopback(host) and host not in hosts:
            shown = ", ".join(sorted(hosts)) or "loopback only"
            raise ConfigRefused(ConfigReason.HOSTILE, f"{key} = {value[:80]!r}: host {host!r} is not allowed ({shown})")


def _under(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def check_hostile(
    overlay: Mapping[str, Any],
    roots: Iterable[str],
    protected: Iterable[str],
    resolve: Callable[[str], str] = os.path.realpath,
) -> None:
    """Refuse a path that is relative, climbs with ``..``, or lands (symbolic links followed) outside
    every allowed root or inside a protected one (the updater's state, the trust store)."""
    real_roots = [resolve(r) for r in roots]
    real_protected = [resolve(p) for p in protected]
    for key, value in sorted(flatten(overlay).items()):
        if not is_path_key(key) or value is None:
            continue
        if not isinstance(value, str) or not value or "\x00" in value:
            raise ConfigRefused(ConfigReason.HOSTILE, f"{key}: not a path")
        if not value.startswith("/") or ".." in value.split("/"):
            raise ConfigRefused(ConfigReason.HOSTILE, f"{key} = {value[:80]!r}: a path must be absolute, without '..'")
        real = resolve(value)
        if any(_under(real, p) for p in real_protected):
            raise ConfigRefused(ConfigReason.HOSTILE, f"{key} = {value[:80]!r}: inside the device's own state")
        if not any(_under(real, r) for r in real_roots):
            shown = ", ".join(sorted(set(real_roots))) or "none"
            raise ConfigRefused(
                ConfigReason.HOSTILE, f"{key} = {value[:80]!r}: outside the allowed directories ({shown})"
            )
