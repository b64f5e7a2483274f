"""``edgeline fleet``: every device, online or not, its model, slot, updater state, last event and error."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from cloud_registry.fleet import FleetWatcher
from edgeline.cli.options import BrokerOptions, broker_options, connect, echo_json, json_option, registry_options
from edgeline.cli.registry_access import optional_registry


def _ago(ts: float, now: float) -> str:
    if ts <= 0:
        return "never"
    d = max(0.0, now - ts)
    return f"{d:.0f}s" if d < 120 else f"{d / 60:.0f}m" if d < 7200 else f"{d / 3600:.0f}h"


@click.command()
@broker_options
@registry_options
@click.option("--group", default=None, help="Only devices (and stations) of this group.")
@click.option("--device", "device_id", default=None, help="Only this device and its stations.")
@click.option(
    "--wait", type=float, default=2.0, show_default=True, help="Seconds to collect the retained device states."
)
@json_option
def fleet(
    broker: BrokerOptions,
    home: Path,
    store_url: str | None,
    artifacts_url: str | None,
    group: str | None,
    device_id: str | None,
    wait: float,
    as_json: bool,
) -> None:
    """Devices and their stations (docs/stations.md) from their retained birth/state/presence
    messages: online, offline (Last Will or clean goodbye) or stale (no heartbeat for three
    intervals), with model, slot, updater state, last event and error. With a registry (under
    --home, or --store) it starts from the devices the registry knows, reads their exact topics
    (brokers that keep retained messages from wildcards, such as RabbitMQ, still answer those) and
    records what it hears."""
    with optional_registry(home, store_url, artifacts_url) as reg:
        link = connect(broker, f"edgeline-fleet-{os.getpid()}")
        try:
            watcher = FleetWatcher(link, broker.topics, book=reg.store if reg is not None else None)
            watcher.settle(quiet_s=min(0.5, wait), max_s=wait)
            now = time.time()
            rows = [
                r
                for r in watcher.view.rows(now)
                if (group is None or (r.state and group in r.state.groups))
                and (device_id is None or r.device == device_id)
            ]
        finally:
            link.stop()
    if as_json:
        echo_json([r.to_dict() for r in rows])
        return
    table = Table(
        "device",
        "station",
        "status",
        "model",
        "slot",
        "updater",
        "last event",
        "last error",
        "seen",
        "hardware",
        "agent",
    )
    colour = {"online": "green", "offline": "red", "stale": "yellow"}
    for r in rows:
        d = r.to_dict()
        model = f"{d['model']['name']} v{d['model']['version']}" if d["model"] else "-"
        ev = d["last_event"]
        last = f"{ev['kind']}" + (f" ({ev['reason']})" if ev and ev.get("reason") else "") if ev else "-"
        table.add_row(
            r.device,
            r.station or "-",
            f"[{colour[r.status]}]{r.status}[/]",
            model,
            d["slot"] or "-",
            d["updater"] or "-",
            last,
            (d["last_error"] or "-")[:60],
            _ago(r.last_seen, now),
            d["hardware_class"] or "-",
            d["agent_version"] or "-",
        )
    console = Console()
    console.print(table)
    online = sum(1 for r in rows if r.online)
    stations = sum(1 for r in rows if r.station)
    devices = len({r.device for r in rows})
    if stations:
        console.print(f"{devices} devices with {stations} stations: {len(rows)} units, {online} online")
    else:
        console.print(f"{len(rows)} devices, {online} online")
