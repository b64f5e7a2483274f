"""The station layout in force on a device, on disk: ``<updater.state_dir>/stations/layout.json``.

The supervisor writes it (atomically) before it starts a station of a layout set remotely, and
removes it when the file's own stations are in force. Every station process reads its configuration
through it (:func:`station_in_force`), so a station started by the supervisor runs exactly the
layout the supervisor chose; ``edgeline agent status`` lists the stations in force the same way. The
signed document behind it stays in the layout's config record (:mod:`.layout_boot` verifies it again
at every start of the supervisor); this file only says which list of stations was chosen.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tomllib
from pathlib import Path
from typing import Any

from edgeline.core.fsutil import write_atomic
from firmware_configs.errors import ConfigError
from firmware_configs.loader import load_config
from firmware_configs.schema import DeviceConfig
from firmware_configs.stations import STATIONS_DIR, device_tables, station_data

log = logging.getLogger(__name__)

LAYOUT_FILE = "layout.json"
#: the file's key of the station list (``[[station]]``), the protocol's ``LAYOUT_KEY``: not imported
#: from there, so that a supervisor without remote configuration never loads the signature code
LAYOUT_KEY = "station"

Entries = list[dict[str, Any]]


def layout_path(device: DeviceConfig) -> Path:
    return Path(device.updater.state_dir) / STATIONS_DIR / LAYOUT_FILE


def write_layout(path: Path, version: int, entries: Entries) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"version": version, LAYOUT_KEY: entries}
    write_atomic(path, json.dumps(doc, sort_keys=True).encode())


def clear_layout(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def read_layout(path: Path) -> tuple[int, Entries] | None:
    """``(version, stations)`` of the layout in force, None when the file's own are (or the file is
    unreadable: logged)."""
    try:
        doc = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("station layout %s unreadable, the file's own stations serve: %s", path, exc)
        return None
    entries = doc.get(LAYOUT_KEY) if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        log.error("station layout %s malformed, the file's own stations serve", path)
        return None
    version = doc.get("version", 0)
    return (version if isinstance(version, int) else 0), entries


def read_tables(config_path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(config_path).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{config_path}: cannot read: {exc}") from exc


def layout_in_force(config_path: Path) -> tuple[DeviceConfig, dict[str, Any], dict[str, DeviceConfig], int]:
    """The device file, the tables its stations are derived from (the file's, with the station list
    in force), every station in force validated, and the layout's version (0: the file's own). A file
    without stations gives ``{}`` stations. A layout that no longer validates with the file (it was
    edited since) is not used: logged, the file's own stations serve."""
    from firmware_configs.stations import derive_stations

    device = load_config(config_path)  # the file itself must stay valid
    tables = read_tables(config_path)
    if not device.station:
        return device, tables, {}, 0
    got = read_layout(layout_path(device)) if device.remote_config.enabled else None
    if got is not None:
        from edge_agent.remote_config.errors import ConfigRefused
        from edge_agent.stations.layout import resolve_layout

        version, entries = got
        try:
            stations = resolve_layout(tables, entries, f"{config_path} with station layout version {version}")
            return device, {**device_tables(tables), LAYOUT_KEY: entries}, stations, version
        except ConfigRefused as exc:
            log.error("station layout version %d not used: %s", version, exc.detail)
    return device, tables, derive_stations(device_tables(tables), device, str(config_path)), 0


def station_in_force(config_path: Path, name: str) -> tuple[DeviceConfig, dict[str, Any]]:
    """One station of the layout in force and the raw tables it was validated from (what a document
    for that station is laid over); :class:`ConfigError` naming the stations there are when ``name``
    is not one of them."""
    _device, tables, stations, version = layout_in_force(config_path)
    if name not in stations:
        known = ", ".join(sorted(stations)) or "none (the file is one station)"
        where = f" (station layout version {version})" if version else ""
        raise ConfigError(f"{config_path}: no station {name!r}{where}; stations: {known}")
    from firmware_configs.loader import parse_config

    cfg = parse_config(tables, str(config_path))
    index = [s.name for s in cfg.station].index(name)
    return stations[name], station_data(device_tables(tables), cfg, index)
