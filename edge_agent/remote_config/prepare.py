"""From a verified document to a configuration ready to apply, pure but for the path and source
probes: allowed keys, hostile values, the merged configuration validated by the device's schema
(``firmware_configs``), a working station, and the plan (what changes, hot or by restart)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edge_agent.remote_config.errors import ConfigRefused
from edge_agent.remote_config.overlay import (
    Plan,
    allowed_hosts,
    allowed_roots,
    check_allowed,
    check_hostile,
    check_hosts,
    classify,
    diff,
    merge,
)
from edge_agent.remote_config.station import station_problem
from edgeline.core.protocol.remote_config import ConfigDocument, ConfigReason
from firmware_configs.errors import ConfigError
from firmware_configs.loader import parse_config
from firmware_configs.schema import DeviceConfig


@dataclass(frozen=True)
class Prepared:
    doc: ConfigDocument
    config: DeviceConfig
    merged: dict[str, Any]
    #: what changes from the configuration the agent runs now
    plan: Plan
    #: dotted keys the document changes from the device's own file (reported in the status)
    changed: tuple[str, ...]


def protected_paths(cfg: DeviceConfig, state_dir: str) -> list[str]:
    """Files and directories no document may point a path into: the updater's state (slots, record,
    outboxes), the config record, the trust store."""
    return [cfg.updater.state_dir, state_dir, cfg.trust_file, cfg.updater.trust_file]


def prepare(
    doc: ConfigDocument,
    base: Mapping[str, Any],
    running: Mapping[str, Any],
    spec_cfg: DeviceConfig,
    protected: Iterable[str],
) -> Prepared:
    """``base``: the device's own file (parsed); ``running``: what the agent runs now (``base`` with
    the committed document over it); ``spec_cfg``: the running configuration (its ``[remote_config]``
    rules apply). Raises :class:`ConfigRefused` with the first reason found."""
    v = doc.version
    spec = spec_cfg.remote_config
    try:
        check_allowed(doc.config)
        check_hostile(doc.config, allowed_roots(base, spec.allowed_dirs), protected)
        check_hosts(doc.config, allowed_hosts(base, spec.allowed_hosts))
    except ConfigRefused as exc:
        raise ConfigRefused(exc.reason, exc.detail, v) from exc
    merged = merge(base, doc.config)
    try:
        cfg = parse_config(merged, f"config version {v}")
    except ConfigError as exc:
        raise ConfigRefused(ConfigReason.INVALID, str(exc), v) from exc
    plan = classify(c.key for c in diff(running, merged))
    problem = station_problem(cfg, any(k.startswith("source.") or k == "source" for k in plan.keys))
    if problem is not None:
        raise ConfigRefused(ConfigReason.NO_STATION, problem, v)
    if plan.needs_restart and not spec.allow_restart:
        raise ConfigRefused(
            ConfigReason.FORBIDDEN,
            f"{', '.join(plan.restart)} need a restart, and remote_config.allow_restart is off",
            v,
        )
    return Prepared(doc, cfg, merged, plan, tuple(c.key for c in diff(base, merged)))
