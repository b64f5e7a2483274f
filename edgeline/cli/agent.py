"""``edgeline agent``: run the device agent, check a config, show status, simulate a fleet."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from edge_agent.plugin_loader import DEFAULT_PLUGINS, load_plugins
from edge_agent.status import prometheus_text, read_status
from edgeline.cli.options import json_option
from edgeline.core.errors import EdgelineError
from edgeline.core.protocol.topics import station_unit
from firmware_configs.errors import ConfigError
from firmware_configs.loader import load_config
from firmware_configs.schema import DeviceConfig

log = logging.getLogger(__name__)


def _load(path: Path) -> DeviceConfig:
    return load_config(path)


@click.group()
def agent() -> None:
    """The device agent: offline inference on camera frames, verdicts to the line, hot-swapped models."""


@agent.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Device configuration (TOML), e.g. /etc/edgeline/agent.toml.",
)
@click.option(
    "--plugin",
    "extra_plugins",
    multiple=True,
    metavar="MODULE:FACTORY",
    help="Load an extra plugin factory (called with the config). Repeatable.",
)
@click.option("--no-default-plugins", is_flag=True, help="Run without the updater and telemetry plugins.")
@click.option(
    "--station",
    default=None,
    metavar="NAME",
    help="Run only this station of a file with [[station]] tables (what the station supervisor starts).",
)
def run(config_path: Path, extra_plugins: tuple[str, ...], no_default_plugins: bool, station: str | None) -> None:
    """Run the agent with the device configuration FILE until stopped (SIGTERM/SIGINT) or, for a video
    file or image folder, until the last frame. Exits 1 when the camera source failed for good.

    A FILE with [[station]] tables runs each station as its own agent process under a supervisor,
    which starts a station again (with a backoff) when its process dies; see docs/stations.md."""
    if station is None:  # a supervisor of stations never imports the runtime (ONNX Runtime, OpenCV)
        from edgeline.cli.agent_stations import run_supervisor, stations_of

        device, stations = stations_of(config_path)
        if stations:
            run_supervisor(config_path, device, stations, extra_plugins, no_default_plugins)
    from edge_agent.remote_config.boot import abandon_trial, effective_config
    from edge_agent.runtime import Agent

    # the file (or its station), with the committed (or trial) remote config over it
    cfg = effective_config(config_path, station=station)
    if station is not None:  # the stations of one device share a journal: say whose line it is
        fmt = logging.Formatter(f"%(asctime)s %(levelname)s [{cfg.device.id}] %(name)s: %(message)s")
        for log_handler in logging.getLogger().handlers:
            log_handler.setFormatter(fmt)
    plugins: list[Any] = []
    try:
        plugins = [] if no_default_plugins else load_plugins(cfg, DEFAULT_PLUGINS, required=False)
        plugins += load_plugins(cfg, extra_plugins, required=True)
        the_agent = Agent(cfg, plugins=plugins)
    except EdgelineError as exc:
        if abandon_trial(config_path, str(exc), station=station):  # a remote config on trial it cannot even start with
            _restart(f"the config on trial was refused at start: {exc}", plugins)
        raise

    signalled: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        signalled.append(signum)  # a stop asked for wins over a restart a remote config asked for
        threading.Thread(target=the_agent.stop, name="stopper", daemon=True).start()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        rc = the_agent.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if the_agent.restart_requested and not signalled:
        _restart(the_agent.restart_requested, plugins)
    c = the_agent.counters()
    click.echo(
        f"{cfg.device.id}: {c['state']}  frames {c['frames']['in']}  inspected {c['frames']['inspected']}  "
        f"dropped {sum(c['dropped'].values())}",
        err=True,
    )
    raise SystemExit(rc)


def _restart(reason: str, plugins: list[Any]) -> None:
    """Start this command again in this process (same pid, same arguments): a controlled restart
    that a remote config asked for. The fleet link says goodbye first."""
    from edge_agent.assembly import cloud_link_of

    log.warning("restarting: %s", reason)
    link = cloud_link_of(plugins)
    if link is not None:
        link.stop()
    logging.shutdown()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def _deep_checks(cfg: DeviceConfig) -> list[str]:
    """Things a valid config may still get wrong on this machine. Warnings, not errors: on first boot
    the bundle may not exist yet, and a camera may be plugged in later."""
    from edge_agent.inference import load_and_check
    from edgeline.core.protocol.signing import TrustStore

    warnings: list[str] = []
    src = cfg.source
    if src.kind == "file" and not Path(str(src.path)).is_file():
        warnings.append(f"source.path = {src.path!r}: no such video file")
    if src.kind == "folder" and not Path(str(src.path)).is_dir():
        warnings.append(f"source.path = {src.path!r}: no such image folder")
    if cfg.model.bundle:
        if not Path(cfg.model.bundle, "manifest.json").is_file():
            warnings.append(f"model.bundle = {cfg.model.bundle!r}: no bundle there (the agent starts without a model)")
        else:
            try:
                load_and_check(cfg.model.bundle, TrustStore.load(Path(cfg.trust_file)), check_expiry=False)
            except EdgelineError as exc:
                warnings.append(f"model.bundle = {cfg.model.bundle!r}: refused: {exc}")
    if cfg.sinks.jsonl is not None:
        parent = Path(cfg.sinks.jsonl.path).parent
        if not parent.exists():
            warnings.append(f"sinks.jsonl.path = {cfg.sinks.jsonl.path!r}: directory {parent} does not exist yet")
    return warnings


@agent.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--deep", is_flag=True, help="Also check this machine: source path, bundle (verified), log dirs.")
@click.option("--strict", is_flag=True, help="With --deep: treat warnings as errors.")
@json_option
def check_config(file: Path, deep: bool, strict: bool, as_json: bool) -> None:
    """Validate a device configuration FILE. Every bad key is reported with its value; exits 1 on any."""
    try:
        cfg = load_config(file)
    except ConfigError as exc:
        if as_json:
            problems = [str(p) for p in getattr(exc, "problems", [])] or [str(exc)]
            click.echo(json.dumps({"ok": False, "file": str(file), "problems": problems}))
            raise SystemExit(1) from exc
        raise click.ClickException(str(exc)) from exc
    warnings = _deep_checks(cfg) if deep and not cfg.station else []
    if deep and cfg.station:  # each station on this machine: its own source, bundle and sink dirs
        from firmware_configs.stations import load_stations

        for name, station_cfg in load_stations(str(file))[1].items():
            warnings += [f"station[{name}] {w}" for w in _deep_checks(station_cfg)]
    ok = not (strict and warnings)
    sinks = [name for name in ("jsonl", "mqtt", "webhook", "command") if getattr(cfg.sinks, name) is not None]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": ok,
                    "file": str(file),
                    "device": cfg.device.id,
                    "source": cfg.source.kind,
                    "queue_policy": cfg.source.policy,
                    "sinks": sinks,
                    "warnings": warnings,
                    "stations": {st.name: station_unit(cfg.device.id, st.name) for st in cfg.station},
                }
            )
        )
    else:
        click.echo(
            f"{file}: OK  device {cfg.device.id} ({cfg.device.hardware_class})  source {cfg.source.kind} "
            f"[{cfg.source.policy}]  sinks {', '.join(sinks) or 'none'}  api "
            f"{'on ' + cfg.api.host + ':' + str(cfg.api.port) if cfg.api.enabled else 'off'}"
        )
        if cfg.station:
            units = ", ".join(f"{st.name} ({station_unit(cfg.device.id, st.name)})" for st in cfg.station)
            click.echo(f"  stations {units}")
        for w in warnings:
            click.echo(f"  warning: {w}", err=True)
    if not ok:
        raise SystemExit(1)


@agent.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="Device config.")
@click.option("--file", "status_file", type=click.Path(dir_okay=False, path_type=Path), help="Status file path.")
@json_option
@click.option("--prometheus", is_flag=True, help="Print the Prometheus text exposition.")
@click.option("--station", default=None, metavar="NAME", help="Only this station of a file with [[station]] tables.")
def status(
    config_path: Path | None, status_file: Path | None, as_json: bool, prometheus: bool, station: str | None
) -> None:
    """Show the agent's status file: state, camera, model, frames, drops, verdicts, latency, sinks.
    For a device with stations: each station's process (pid, restarts) and status."""
    if status_file is None:
        if config_path is None:
            raise click.ClickException("give --config FILE or --file STATUS_FILE")
        from edgeline.cli.agent_stations import show_stations, stations_of

        device, stations = stations_of(config_path)
        if stations and station is None:
            if prometheus:
                raise click.ClickException("a device with stations: give --station NAME for its Prometheus text")
            show_stations(device, stations, as_json, _print_status)
            return
        if station is not None and station not in stations:
            raise click.ClickException(
                f"{config_path}: no station {station!r}; stations: {', '.join(stations) or 'none'}"
            )
        cfg = stations[station] if station is not None else device
        status_file = Path(cfg.status.path)
        interval = cfg.status.interval_s
    else:
        interval = 2.0
    doc = read_status(status_file)
    if as_json:
        click.echo(json.dumps(doc, indent=1, sort_keys=True))
        return
    if prometheus:
        click.echo(prometheus_text(doc), nl=False)
        return
    age = time.time() - float(doc.get("updated_at", 0))
    stale = doc.get("state") not in ("STOPPED", "FAILED") and age > 3 * interval
    _print_status(doc, age, stale)


def _print_status(doc: dict[str, Any], age: float, stale: bool) -> None:
    console = Console()
    model = doc.get("model")
    t = Table(title=f"edgeline agent {doc['device']['id']}", show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    t.add_row("state", f"{doc['state']}" + (f"  [red](stale: updated {age:.0f}s ago)[/red]" if stale else ""))
    cam = doc["camera"]
    t.add_row("camera", f"{cam['state']}  {cam['source']}  reconnects {cam['reconnects']}  {cam['last_error']}")
    t.add_row("model", f"{model['name']} v{model['version']}  {model['sha256'][:12]}" if model else "none")
    fr = doc["frames"]
    t.add_row("frames", f"in {fr['in']}  inspected {fr['inspected']}  queued {fr['queued']}")
    t.add_row("dropped", ", ".join(f"{k} {v}" for k, v in doc["dropped"].items()) or "0")
    v = doc["verdicts"]
    t.add_row("verdicts", ", ".join(f"{k} {n}" for k, n in sorted(v["by_verdict"].items())) or "none")
    t.add_row("classes", ", ".join(f"{k} {n}" for k, n in sorted(v["by_class"].items())) or "none")
    lat = doc["latency"]
    if "p50_ms" in lat:
        t.add_row("latency", f"p50 {lat['p50_ms']:.2f} ms  p90 {lat['p90_ms']:.2f} ms  p99 {lat['p99_ms']:.2f} ms")
    for name, s in doc.get("sinks", {}).items():
        t.add_row(f"sink {name}", f"delivered {s['delivered']}  errors {s['errors']}  dropped {s['dropped']}")
    if doc.get("plugin_errors"):
        t.add_row("plugin errors", ", ".join(f"{k} {n}" for k, n in doc["plugin_errors"].items()))
    models = doc.get("models", {})
    t.add_row("models", f"activated {models.get('activated', 0)}  rejected {models.get('rejected', 0)}")
    if doc.get("api"):
        t.add_row("api", str(doc["api"]["url"]))
    console.print(t)


@agent.command()
@click.option("--devices", type=click.IntRange(1, 1000), default=4, show_default=True, help="Agents to run.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="Base device config.")
@click.option("--bundle", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Model bundle.")
@click.option("--trust", type=click.Path(dir_okay=False, path_type=Path), help="Trust store for --bundle.")
@click.option(
    "--frames",
    type=click.IntRange(1, 1_000_000),
    default=300,
    show_default=True,
    help="Synthetic frames per device (when the config's source is not used).",
)
@click.option("--use-source", is_flag=True, help="Read the config's source in every agent instead of synthetic frames.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), help="Status files and logs.")
@json_option
def simulate(
    devices: int,
    config_path: Path | None,
    bundle: Path | None,
    trust: Path | None,
    frames: int,
    use_source: bool,
    workdir: Path | None,
    as_json: bool,
) -> None:
    """Run N complete agents in this one process (load test): each has its own id, source, queue,
    counters, sinks and status file, and they share the loaded model. Prints throughput per device."""
    from edge_agent.inference import load_and_check
    from edge_agent.simulate import simulate as run_simulation
    from edge_agent.simulate import synthetic_frames
    from edgeline.core.protocol.signing import TrustStore
    from firmware_configs.loader import parse_config

    if use_source and config_path is None:
        raise click.ClickException("--use-source needs --config (the source to read)")
    if config_path is not None:
        base = _load(config_path)
    else:
        base = parse_config({"device": {"id": "sim"}, "source": {"kind": "folder", "path": "."}}, "simulation")
    model = None
    if bundle is not None:
        trust_path = trust or Path(base.trust_file)
        try:
            model = load_and_check(bundle, TrustStore.load(trust_path), check_expiry=False)
        except EdgelineError as exc:
            raise click.ClickException(f"{bundle}: {exc}") from exc
    synthetic = None if use_source else synthetic_frames(frames)
    wd = workdir or Path(tempfile.mkdtemp(prefix="edgeline-sim-"))
    report = run_simulation(base, devices, wd, frames=synthetic, model=model)
    doc = report.to_dict()
    if as_json:
        click.echo(json.dumps(doc, indent=1))
        return
    t = Table(
        title=f"{devices} simulated agents, {doc['inspected']} frames in {doc['wall_s']} s "
        f"({doc['frames_per_s']} frames/s); status files in {wd}"
    )
    for col in ("device", "state", "frames in", "inspected", "dropped", "p50 ms", "p99 ms"):
        t.add_column(col)
    for d in doc["per_device"]:
        t.add_row(
            d["device"],
            d["state"],
            str(d["frames_in"]),
            str(d["inspected"]),
            str(sum(d["dropped"].values())),
            f"{d['p50_ms'] or 0:.2f}",
            f"{d['p99_ms'] or 0:.2f}",
        )
    Console().print(t)
