"""The configuration ``edgeline agent run`` starts with: the device's own file, with the committed
remote document over it, or the document on trial when the agent restarted to try it. A trial the
agent did not finish (it stopped or died with it) is rolled back here, before anything starts: the
previous configuration serves again. Anything unreadable falls back to the device's own file."""

from __future__ import annotations

import logging
import time
import tomllib
from dataclasses import replace
from pathlib import Path

from edge_agent.errors import EdgelineError
from edge_agent.identity import DeviceIdentity
from edge_agent.remote_config.overlay import merge
from edge_agent.remote_config.store import Applied, ConfigStore, state_dir_of
from edge_agent.remote_config.verify import verify_document
from edge_agent.stations.layout_file import station_in_force
from edge_agent.updater.link import load_trust
from edge_agent.updater.slots import SlotDisk
from edgeline.core.protocol.remote_config import ConfigReason
from edgeline.core.protocol.signing import parse_envelope
from firmware_configs.loader import load_config, parse_config
from firmware_configs.schema import DeviceConfig

log = logging.getLogger(__name__)


def _file_config(path: Path, station: str | None) -> DeviceConfig:
    """The file, or one station of the station layout in force (the file's, or one set remotely)."""
    return load_config(path) if station is None else station_in_force(path, station)[0]


def effective_config(path: Path, now: float | None = None, station: str | None = None) -> DeviceConfig:
    """``station``: one station of a device file with ``[[station]]`` tables (its own remote config)."""
    base_cfg = _file_config(path, station)
    if not base_cfg.remote_config.enabled:
        return base_cfg
    # the tables the file (or the station) was validated from: what a document is laid over
    base = tomllib.loads(Path(path).read_text("utf-8")) if station is None else station_in_force(path, station)[1]
    store = ConfigStore(state_dir_of(base_cfg))
    t = time.time() if now is None else now
    try:
        store.save_base(base)
        rec = store.load()
    except (EdgelineError, OSError) as exc:
        log.error("remote config not used: %s", exc)
        return base_cfg
    applied: Applied | None = rec.committed
    if rec.trial is not None:
        if rec.trial.restart and rec.trial.boots == 0:
            rec.trial = replace(rec.trial, boots=1)
            applied = rec.trial
            log.info("starting with config version %d on trial", rec.trial.version)
        else:
            v = rec.trial.version
            rec.roll_back(ConfigReason.CRASHED, f"the agent stopped while config version {v} was on trial", t)
            log.warning("config version %d rolled back: the agent stopped during its trial", v)
        store.save(rec)
    if applied is None:
        return base_cfg
    try:
        dev = base_cfg.device
        trust = load_trust(Path(base_cfg.trust_file), SlotDisk(Path(base_cfg.updater.state_dir)))
        doc = verify_document(
            parse_envelope(applied.envelope),
            trust,
            DeviceIdentity(dev.id, dev.hardware_class, tuple(dev.groups)),
            t,
            check_expiry=False,
        )
        return parse_config(merge(base, doc.config), f"{path} with config version {doc.version}")
    except EdgelineError as exc:
        log.error("config version %d cannot be used with %s, running the file alone: %s", applied.version, path, exc)
        if rec.trial is not None:
            rec.roll_back(ConfigReason.INVALID, str(exc), t)
            store.save(rec)
        return base_cfg


def abandon_trial(path: Path, detail: str, now: float | None = None, station: str | None = None) -> bool:
    """The agent could not even be built with the config on trial (a sink, the source, a plugin
    refused it): roll the trial back now. True when there was one (start again: the previous config)."""
    try:
        base_cfg = _file_config(path, station)
        if not base_cfg.remote_config.enabled:
            return False
        store = ConfigStore(state_dir_of(base_cfg))
        rec = store.load()
        if rec.trial is None or rec.trial.boots < 1:
            return False
        v = rec.trial.version
        rec.roll_back(
            ConfigReason.TRIAL_FAILED, f"the agent cannot start with it: {detail}", time.time() if now is None else now
        )
        store.save(rec)
    except (EdgelineError, OSError) as exc:
        log.error("could not roll the config on trial back: %s", exc)
        return False
    log.warning("config version %d rolled back: the agent cannot start with it: %s", v, detail)
    return True
