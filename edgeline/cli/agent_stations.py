"""``edgeline agent run`` on a device file with ``[[station]]`` tables: a supervisor that runs each
station as its own agent process (``edgeline agent run --config FILE --station NAME``), restarts one
that dies with a backoff and leaves the others alone (docs/stations.md)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edge_agent.stations.liveness import LivenessPolicy
from edge_agent.stations.supervisor import SUPERVISOR_FILE, Supervisor
from firmware_configs.schema import DeviceConfig
from firmware_configs.stations import STATIONS_DIR

log = logging.getLogger(__name__)


def station_argv(
    config_path: Path, station: str, extra_plugins: tuple[str, ...], no_default_plugins: bool
) -> list[str]:
    """The command line of one station's agent process (this interpreter, the same options)."""
    argv = [
        sys.executable,
        "-m",
        "edgeline.cli.main",
        "agent",
        "run",
        "--config",
        str(config_path),
        "--station",
        station,
    ]
    for plugin in extra_plugins:
        argv += ["--plugin", plugin]
    if no_default_plugins:
        argv.append("--no-default-plugins")
    return argv


def supervisor_path(device: DeviceConfig) -> Path:
    """``<updater.state_dir>/stations/supervisor.json``: the stations' pids, states and restarts."""
    return Path(device.updater.state_dir) / STATIONS_DIR / SUPERVISOR_FILE


def stations_of(config_path: Path) -> tuple[DeviceConfig, dict[str, DeviceConfig]]:
    """The device file and the stations in force (the file's, or a layout set remotely)."""
    from edge_agent.stations.layout_file import layout_in_force

    device, _tables, stations, _version = layout_in_force(config_path)
    return device, stations


def reader_grace_s(cfg: DeviceConfig) -> float:
    """How long one camera call of the station may block before its hang watch counts it."""
    return max(cfg.source.open_timeout_ms, cfg.source.read_timeout_ms) / 1000.0


def run_supervisor(
    config_path: Path,
    device: DeviceConfig,
    stations: dict[str, DeviceConfig],
    extra_plugins: tuple[str, ...],
    no_default_plugins: bool,
) -> None:
    """Run every station until SIGTERM/SIGINT, or until each finished; exits 0. With ``[remote_config]``
    on, the supervisor also receives the device's station layout (docs/stations.md)."""
    if device.remote_config.enabled:  # the layout in force (a trial the supervisor did not finish rolled back)
        from edge_agent.stations.layout_boot import boot_layout

        boot = boot_layout(config_path)
        stations = boot.stations

    def argv_of(name: str) -> list[str]:
        return station_argv(config_path.resolve(), name, extra_plugins, no_default_plugins)

    children = {name: (cfg.device.id, argv_of(name)) for name, cfg in stations.items()}
    hang = device.supervisor
    watch = {name: (Path(cfg.status.path), reader_grace_s(cfg)) for name, cfg in stations.items()}
    sup = Supervisor(
        children,
        supervisor_path(device),
        liveness=LivenessPolicy(hang.hang_timeout_s, hang.start_timeout_s, hang.kill_after_s),
        watch=watch,
    )
    remote = None
    if device.remote_config.enabled:  # signed station layouts: the supervisor's own small fleet link
        from edge_agent.stations.layout_apply import LayoutApplier
        from edge_agent.stations.layout_remote import start_layout_config

        remote = start_layout_config(boot, LayoutApplier(sup, argv_of, grace_of=reader_grace_s))

    def stop_all() -> None:
        if remote is not None:
            remote.stop()  # a layout being applied is applied to the end first
        sup.stop()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping every station", signum)
        threading.Thread(target=stop_all, name="stopper", daemon=True).start()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    click.echo(f"{device.device.id}: {len(stations)} stations: {', '.join(children)}", err=True)
    try:
        rc = sup.run()
    finally:
        if remote is not None:
            remote.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for c in sup.children.values():
        line = f"{c.unit}: {c.state}  restarts {c.restart.restarts}  hangs {c.hangs}  last exit {c.last_exit}"
        click.echo(line, err=True)
    raise SystemExit(rc)


def show_stations(
    device: DeviceConfig,
    stations: dict[str, DeviceConfig],
    as_json: bool,
    print_status: Callable[[dict[str, Any], float, bool], None],
) -> None:
    """``edgeline agent status`` of a device with stations: the supervisor's view of each station
    (pid, state, restarts, last exit) and each station's own status file."""
    from edge_agent.stations.supervisor import read_supervisor
    from edge_agent.status import StatusError, read_status

    sup = (read_supervisor(supervisor_path(device)).get("stations") or {}) if stations else {}
    docs: dict[str, dict[str, Any] | None] = {}
    errors: dict[str, str] = {}
    for name, cfg in stations.items():
        try:
            docs[name] = read_status(Path(cfg.status.path))
        except StatusError as exc:
            docs[name], errors[name] = None, str(exc)
    if as_json:
        out = {
            name: {"unit": cfg.device.id, "process": sup.get(name), "status": docs[name], "error": errors.get(name)}
            for name, cfg in stations.items()
        }
        click.echo(json.dumps({"device": device.device.id, "stations": out}, indent=1, sort_keys=True))
        return
    for name, cfg in stations.items():
        proc = sup.get(name) or {}
        click.echo(
            f"station {name} ({cfg.device.id}): process {proc.get('state', 'not started')}"
            f"  pid {proc.get('pid') or '-'}  restarts {proc.get('restarts', 0)}  hangs {proc.get('hangs', 0)}"
            f"  last exit {proc.get('last_exit')}"
        )
        doc = docs[name]
        if doc is None:
            click.echo(f"  {errors[name]}")
            continue
        age = time.time() - float(doc.get("updated_at", 0))
        stale = doc.get("state") not in ("STOPPED", "FAILED") and age > 3 * cfg.status.interval_s
        print_status(doc, age, stale)
