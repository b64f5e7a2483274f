"""The station layout the supervisor starts with: the file's own stations, or the committed layout
document, verified again against the trust store (its expiry aside, like a committed model). A
layout still on trial when the supervisor stopped or died is rolled back here (``crashed``), before
any station starts. Anything unreadable, or a layout the file no longer validates with, leaves the
file's own stations in force. The choice is written to ``layout.json`` (:mod:`.layout_file`), which
the station processes read."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.errors import EdgelineError
from edge_agent.identity import DeviceIdentity
from edge_agent.remote_config.store import ConfigRecord, ConfigStore, state_dir_of
from edge_agent.revocation_file import REVOCATIONS_FILE, apply_revocation_file
from edge_agent.stations.layout import Entries, file_entries, layout_entries, resolve_layout
from edge_agent.stations.layout_file import clear_layout, layout_path, read_tables, write_layout
from edgeline.core.protocol.remote_config import ConfigReason
from edgeline.core.protocol.signing import TrustStore
from firmware_configs.loader import load_config
from firmware_configs.schema import DeviceConfig
from firmware_configs.stations import derive_stations, device_tables

log = logging.getLogger(__name__)


@dataclass
class LayoutBoot:
    device: DeviceConfig
    #: the file's tables, as read
    tables: dict[str, Any]
    #: the stations in force and their list (the file's when ``version`` is 0)
    stations: dict[str, DeviceConfig]
    entries: Entries
    version: int


def identity_of(device: DeviceConfig) -> DeviceIdentity:
    d = device.device
    return DeviceIdentity(d.id, d.hardware_class, tuple(d.groups))


def layout_trust(device: DeviceConfig, stations: dict[str, DeviceConfig]) -> TrustStore:
    """The device's trust store, with every revocation list the device's or a station's updater
    accepted from the fleet (the supervisor runs no updater of its own)."""
    trust = TrustStore.load(Path(device.trust_file))
    for state_dir in (device.updater.state_dir, *(cfg.updater.state_dir for cfg in stations.values())):
        apply_revocation_file(trust, Path(state_dir) / REVOCATIONS_FILE)
    return trust


def boot_layout(config_path: Path, now: float | None = None) -> LayoutBoot:
    from edge_agent.remote_config.verify import verify_document
    from edgeline.core.protocol.signing import parse_envelope

    device = load_config(config_path)
    tables = read_tables(config_path)
    own = derive_stations(device_tables(tables), device, str(config_path)) if device.station else {}
    boot = LayoutBoot(device, tables, own, file_entries(tables), 0)
    path = layout_path(device)
    if not device.station or not device.remote_config.enabled:
        clear_layout(path)
        return boot
    store = ConfigStore(state_dir_of(device))
    t = time.time() if now is None else now
    try:
        rec = store.load()
    except EdgelineError as exc:
        log.error("station layout record not used, the file's own stations serve: %s", exc)
        clear_layout(path)
        return boot
    if rec.trial is not None:
        v = rec.trial.version
        rec.roll_back(ConfigReason.CRASHED, f"the supervisor stopped while station layout version {v} was on trial", t)
        log.warning("station layout version %d rolled back: the supervisor stopped during its trial", v)
        _save(store, rec)
    applied = rec.committed
    if applied is None:
        clear_layout(path)
        return boot
    try:
        doc = verify_document(
            parse_envelope(applied.envelope), layout_trust(device, own), identity_of(device), t, check_expiry=False
        )
        entries = layout_entries(doc.config, tables)
        stations = resolve_layout(tables, entries, f"{config_path} with station layout version {doc.version}")
    except EdgelineError as exc:
        log.error("station layout version %d cannot be used, the file's own stations serve: %s", applied.version, exc)
        clear_layout(path)
        return boot
    if entries == boot.entries:
        clear_layout(path)
    else:
        write_layout(path, doc.version, entries)
    return LayoutBoot(device, tables, stations, entries, doc.version)


def _save(store: ConfigStore, rec: ConfigRecord) -> None:
    try:
        store.save(rec)
    except OSError as exc:
        log.error("station layout record not saved: %s", exc)
