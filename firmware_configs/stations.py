"""A device file with ``[[station]]`` tables -> one complete, validated configuration per station.

Each station's configuration is the device file with the station's tables laid over it (key by
key), and what a station must own alone derived from the device's:

- ``device.id`` becomes the station's address ``<device>~<station>`` (its topics, its telemetry
  stream, its line topics); ``groups`` are the device's unless the station names its own;
- ``updater.state_dir`` becomes ``<device state_dir>/stations/<name>`` (its A/B slots, updater
  record, outboxes, feedback store, remote config) unless the station sets one;
- ``status.path`` becomes ``<stem>-<name><suffix>`` beside the device's unless the station sets one;
- an inherited ``model.bundle`` inside the device's state dir (its current slot) moves into the
  station's state dir the same way.

Then what two stations must not share is refused with both names and the key: a state dir (equal or
nested), a file one of them writes (status, JSONL sink, outboxes, feedback store), a listening port,
a USB camera. Pure: no file is read or written.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from pydantic import ValidationError

from edgeline.core.protocol.topics import STATION_SEPARATOR, unit_problem
from firmware_configs.errors import ConfigError
from firmware_configs.schema import DeviceConfig
from firmware_configs.supervisor_section import liveness_problems

STATIONS_DIR = "stations"


def merge_tables(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overlay`` laid over it: tables merge key by key, any other value replaces."""
    out = dict(base)
    for key, value in overlay.items():
        old = out.get(key)
        out[key] = merge_tables(old, value) if isinstance(old, Mapping) and isinstance(value, Mapping) else value
    return out


def station_dir(device_state_dir: str, name: str) -> str:
    return f"{device_state_dir.rstrip('/') or '/'}/{STATIONS_DIR}/{name}".replace("//", "/")


def _status_path(device_status: str, name: str) -> str:
    p = PurePosixPath(device_status)
    return str(p.with_name(f"{p.stem}-{name}{p.suffix}"))


def _inside(path: str, directory: str) -> bool:
    try:
        PurePosixPath(path).relative_to(PurePosixPath(directory))
    except ValueError:
        return False
    return True


def station_data(device: Mapping[str, Any], cfg: DeviceConfig, index: int) -> dict[str, Any]:
    """The raw configuration of station ``index`` of ``cfg`` (``device``: the file's tables without
    ``station``), before validation."""
    st = cfg.station[index]
    given = st.overrides()
    data = merge_tables(device, given)
    dev = dict(data.get("device", {}))
    dev["id"] = f"{cfg.device.id}{STATION_SEPARATOR}{st.name}"
    if st.groups is not None:
        dev["groups"] = list(st.groups)
    data["device"] = dev
    own_dir = station_dir(cfg.updater.state_dir, st.name)
    updater = dict(data.get("updater", {}))
    if "state_dir" not in given.get("updater", {}):
        updater["state_dir"] = own_dir
    data["updater"] = updater
    status = dict(data.get("status", {}))
    if "path" not in given.get("status", {}):
        status["path"] = _status_path(cfg.status.path, st.name)
    data["status"] = status
    bundle = data.get("model", {}).get("bundle")
    if isinstance(bundle, str) and "bundle" not in given.get("model", {}) and _inside(bundle, cfg.updater.state_dir):
        rel = PurePosixPath(bundle).relative_to(PurePosixPath(cfg.updater.state_dir))
        data["model"] = {**data["model"], "bundle": str(PurePosixPath(updater["state_dir"]) / rel)}
    return data


def derive_stations(device: Mapping[str, Any], cfg: DeviceConfig, origin: str = "config") -> dict[str, DeviceConfig]:
    """Every station of ``cfg`` validated, by name; :class:`ConfigProblems` naming the station and
    key for anything wrong, the resources two stations would share included. ``{}`` for a file
    without stations (it is one station, exactly as it reads)."""
    from firmware_configs.loader import ConfigProblems, Problem, problems_of

    problems: list[Problem] = []
    out: dict[str, DeviceConfig] = {}
    for i, st in enumerate(cfg.station):
        where = f"station[{st.name}]"
        unit = f"{cfg.device.id}{STATION_SEPARATOR}{st.name}"
        why = unit_problem(unit)
        if why is not None:
            problems.append(Problem(f"{where}.name", st.name, f"the station's address {unit!r} {why}"))
            continue
        try:
            out[st.name] = DeviceConfig.model_validate(station_data(device, cfg, i))
        except ValidationError as exc:
            problems += [Problem(f"{where}.{p.key}", p.value, p.message, p.has_value) for p in problems_of(exc)]
    if not problems:
        problems = shared_resources(out) + liveness_problems(cfg.supervisor, out)
    if problems:
        raise ConfigProblems(origin, problems)
    return out


def _owned_files(c: DeviceConfig) -> dict[str, str]:
    """The files a station writes that the config names (those left to their defaults live in its
    own state dir, which is checked apart)."""
    files = {"status.path": c.status.path}
    if c.feedback.enabled and c.feedback.path:
        files["feedback.path"] = c.feedback.path
    if c.telemetry.enabled and c.telemetry.outbox_path:
        files["telemetry.outbox_path"] = c.telemetry.outbox_path
    if c.remote_config.enabled and c.remote_config.state_dir:
        files["remote_config.state_dir"] = c.remote_config.state_dir
    if c.sinks.jsonl is not None and c.sinks.jsonl.enabled:
        files["sinks.jsonl.path"] = c.sinks.jsonl.path
    return files


def _ports(c: DeviceConfig) -> dict[str, int]:
    ports: dict[str, int] = {}
    if c.api.enabled and c.api.port:
        ports["api.port"] = c.api.port
    for name in ("tcp", "modbus", "opcua"):
        sec = getattr(c.line, name)
        if sec is not None and sec.enabled and sec.port:
            ports[f"line.{name}.port"] = sec.port
    return ports


def _identity(c: DeviceConfig) -> dict[str, str]:
    cloud = c.cloud
    out = {"cloud.username": cloud.username} if cloud.username else {}
    if cloud.tls is not None and cloud.tls.cert_file:
        out["cloud.tls.cert_file"] = cloud.tls.cert_file
    return out


def _shared_identity(a: str, ca: DeviceConfig, b: str, cb: DeviceConfig) -> list[Any]:
    """Two stations connecting to the fleet broker as one identity: the broker edgeline sets up pins
    the client id to the identity (each would take the other's session over) and allows an identity
    its own unit's topics only."""
    from firmware_configs.loader import Problem

    if not (ca.cloud.enabled and cb.cloud.enabled):
        return []
    ia, ib = _identity(ca), _identity(cb)
    return [
        Problem(
            f"station[{b}].{key}",
            value,
            f"stations {a!r} and {b!r} would connect as one identity: each station is its own unit "
            f"({ca.device.id}, {cb.device.id}) with its own broker identity; give each a [station.cloud] "
            "username and password_file (or [station.cloud.tls] cert_file and key_file)",
        )
        for key, value in ib.items()
        if ia.get(key) == value
    ]


def shared_resources(stations: Mapping[str, DeviceConfig]) -> list[Any]:
    """What two stations would share and must not: one problem per clash, naming both."""
    from firmware_configs.loader import Problem

    problems: list[Problem] = []
    items = list(stations.items())
    for i, (a, ca) in enumerate(items):
        for b, cb in items[i + 1 :]:
            da, db = ca.updater.state_dir.rstrip("/"), cb.updater.state_dir.rstrip("/")
            if da == db or _inside(da, db) or _inside(db, da):
                problems.append(
                    Problem(
                        f"station[{b}].updater.state_dir",
                        cb.updater.state_dir,
                        f"stations {a!r} and {b!r} would share a state dir ({ca.updater.state_dir!r} and "
                        f"{cb.updater.state_dir!r}): each keeps its own slots, updater record and outboxes",
                    )
                )
            fa, fb = _owned_files(ca), _owned_files(cb)
            for key_a, path in fa.items():
                for key_b, other in fb.items():
                    if path == other:
                        problems.append(
                            Problem(
                                f"station[{b}].{key_b}",
                                other,
                                f"stations {a!r} ({key_a}) and {b!r} ({key_b}) would write the same file: "
                                f"give each station its own [station.{key_b.split('.')[0]}]",
                            )
                        )
            pa, pb = _ports(ca), _ports(cb)
            for key_a, port in pa.items():
                for key_b, port_b in pb.items():
                    if port == port_b:
                        problems.append(
                            Problem(
                                f"station[{b}].{key_b}",
                                port_b,
                                f"stations {a!r} ({key_a}) and {b!r} ({key_b}) would listen on the same port "
                                "(give each its own, or 0 for a free one)",
                            )
                        )
            problems += _shared_identity(a, ca, b, cb)
            if ca.source.kind == "usb" and cb.source.kind == "usb" and ca.source.index == cb.source.index:
                problems.append(
                    Problem(
                        f"station[{b}].source.index",
                        cb.source.index,
                        f"stations {a!r} and {b!r} would open the same USB camera (a camera has one reader)",
                    )
                )
    return problems


def _read_tables(path: str) -> dict[str, Any]:
    import tomllib
    from pathlib import Path

    return tomllib.loads(Path(path).read_text("utf-8"))


def load_stations(path: str) -> tuple[DeviceConfig, dict[str, DeviceConfig]]:
    """The device file and its stations (``{}`` when it declares none), all validated."""
    from firmware_configs.loader import load_config

    cfg = load_config(path)  # validates the stations too
    if not cfg.station:
        return cfg, {}
    return cfg, derive_stations(device_tables(_read_tables(path)), cfg, str(path))


def device_tables(data: Mapping[str, Any]) -> dict[str, Any]:
    """The file's tables that stations inherit (all but the ``station`` list)."""
    return {k: v for k, v in data.items() if k != "station"}


def station_base(path: str, name: str) -> tuple[DeviceConfig, dict[str, Any]]:
    """One station's configuration and the raw tables it was validated from (what a remote config
    document for that station is laid over). :class:`ConfigError` naming the stations there are
    when ``name`` is not one of them."""
    cfg, stations = load_stations(path)
    if name not in stations:
        known = ", ".join(sorted(stations)) or "none (the file is one station)"
        raise ConfigError(f"{path}: no station {name!r}; stations: {known}")
    index = [s.name for s in cfg.station].index(name)
    return stations[name], station_data(device_tables(_read_tables(path)), cfg, index)


def station_config(path: str, name: str) -> DeviceConfig:
    """One station's configuration (see :func:`station_base`)."""
    return station_base(path, name)[0]
