"""``edgeline config push|status|diff|history``: signed remote configuration (docs/remote-config.md)."""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from cloud_registry.remote_config import DEFAULT_VALID_DAYS, ConfigPusher, ConfigTarget, overlay_from_toml
from converters.keys import load_signing_key
from edge_agent.remote_config.errors import ConfigRefused
from edge_agent.remote_config.overlay import Change, check_allowed, diff, is_hot
from edge_agent.stations.layout import file_entries, layout_diff, layout_entries
from edgeline.cli.options import (
    BrokerOptions,
    broker_options,
    connect,
    echo_json,
    json_option,
    keys_option,
    registry_options,
)
from edgeline.cli.registry_access import open_registry
from edgeline.cli.registry_alias import actor_name
from edgeline.cli.target_help import CONFIG_TARGET_HELP
from edgeline.core.errors import EdgelineError
from edgeline.core.protocol.remote_config import LAYOUT_KEY, ConfigState, parse_config_state
from edgeline.core.protocol.topics import STATION_SEPARATOR

to_option = click.option(
    "--to",
    "to",
    default=None,
    metavar="TARGET",
    help="Target instead of DEVICE: " + CONFIG_TARGET_HELP + ". A station layout ([[station]] tables) goes to "
    "device:DEV.",
)


def _check_layout(target: ConfigTarget, overlay: dict[str, Any]) -> None:
    """A station layout goes to a device with stations (its supervisor applies it), never to a station
    or a group, and carries nothing but the station list; each station's keys are judged by the
    device against its own file."""
    if target.kind != "device" or STATION_SEPARATOR in target.name:
        raise ConfigRefused("forbidden", f"a station layout goes to a device (device:ID), not to {target}")
    layout_entries(overlay, {})


def _target_and_file(args: tuple[str, ...], to: str | None) -> tuple[ConfigTarget, Path]:
    want = 1 if to else 2
    if len(args) != want:
        raise click.UsageError("give DEVICE FILE, or --to group:G FILE")
    target = ConfigTarget.parse(to if to else args[0])
    return target, Path(args[-1])


def _overlay(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{path}: cannot read: {exc}") from exc
    return overlay_from_toml(text, str(path))


@click.group("config")
def config() -> None:
    """Signed remote configuration: push tables of a device config over MQTT, see what devices run."""


@config.command("push")
@click.argument("args", nargs=-1, metavar="DEVICE|--to group:G FILE.toml")
@to_option
@click.option("--reset", is_flag=True, help="Instead of FILE: an empty document (the device's own file alone).")
@click.option("--note", default="", help="Why, kept with the push.")
@click.option("--by", "actor", default=None, help="Who pushes, as recorded (default: $EDGELINE_USER, else the login).")
@click.option(
    "--valid-days",
    type=click.FloatRange(min=0.01, max=3650),
    default=DEFAULT_VALID_DAYS,
    show_default=True,
    help="A device offline longer than this refuses the document as expired.",
)
@registry_options
@broker_options
@keys_option
@json_option
def push(
    args: tuple[str, ...],
    to: str | None,
    reset: bool,
    note: str,
    actor: str | None,
    valid_days: float,
    home: Path,
    store_url: str | None,
    artifacts_url: str | None,
    broker: BrokerOptions,
    keys_dir: Path,
    as_json: bool,
) -> None:
    """Sign the tables of FILE.toml as the next config version and publish it (retained) to DEVICE or
    the group. Each push is absolute: the device runs its own file with this document over it. Keys a
    device refuses whatever the document says (identity, fleet link, trust, commands) are refused here
    first. Devices answer on their config state (edgeline config status). ``--reset`` pushes an empty
    document: the devices go back to their own file alone.

    For a device with stations, FILE.toml may hold its whole station layout ([[station]] tables, as
    the device file writes them) and nothing else: pushed to DEVICE, it adds, removes or changes
    stations; the device restarts only the stations that change and goes back to its previous layout
    when a new or changed station cannot run (docs/stations.md)."""
    if reset:
        if len(args) != (0 if to else 1):
            raise click.UsageError("--reset takes DEVICE or --to group:G, and no FILE")
        target, path, overlay = ConfigTarget.parse(to if to else args[0]), Path("--reset"), {}
    else:
        target, path = _target_and_file(args, to)
        overlay = _overlay(path)
    try:
        if LAYOUT_KEY in overlay:
            _check_layout(target, overlay)
        else:
            check_allowed(overlay)
    except ConfigRefused as exc:
        raise click.ClickException(f"{path}: a device would refuse it: {exc}") from exc
    signer = load_signing_key(keys_dir)
    who = actor_name(actor)
    with open_registry(home, store_url, artifacts_url) as reg:
        link = connect(broker, f"edgeline-config-{os.getpid()}")
        try:
            done = ConfigPusher(link, broker.topics, signer, reg.store).push(
                target, overlay, actor=who, note=note, valid_days=valid_days
            )
        finally:
            link.stop()
    if as_json:
        echo_json({"version": done.version, "target": done.target, "by": done.actor, "at": done.at})
    else:
        click.echo(f"config version {done.version} pushed to {done.target} by {done.actor}")


def _collect(broker: BrokerOptions, devices: list[str], wait_s: float) -> dict[str, ConfigState]:
    link = connect(broker, f"edgeline-config-status-{os.getpid()}")
    got: dict[str, ConfigState] = {}
    topics = broker.topics

    def on_state(topic: str, payload: bytes, retained: bool) -> None:
        if not payload:
            return
        try:
            state = parse_config_state(payload)
        except EdgelineError:
            return
        got[state.device_id] = state

    try:
        filters = [topics.device_config_state(d) for d in devices] or [topics.all_device_config_states()]
        link.subscribe_many(filters, on_state, 1)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not (devices and set(devices) <= set(got)):
            time.sleep(0.05)
    finally:
        link.stop()
    return got


def _outcome(o: Any) -> str:
    return f"v{o.version} {o.reason}: {o.detail}" if o is not None else "-"


@config.command("status")
@click.argument("devices", nargs=-1)
@click.option("--wait", "wait_s", type=click.FloatRange(0.1, 60), default=2.0, show_default=True, help="Seconds.")
@registry_options
@broker_options
@json_option
def status(
    devices: tuple[str, ...],
    wait_s: float,
    home: Path,
    store_url: str | None,
    artifacts_url: str | None,
    broker: BrokerOptions,
    as_json: bool,
) -> None:
    """The config version each device runs (or DEVICES), the one on trial, and the last refusal and
    rollback with their reasons, from the devices' retained config state, beside the last push."""
    with open_registry(home, store_url, artifacts_url) as reg:
        ids = list(devices) or sorted({d.device_id for d in reg.store.list_devices()})
        pushes = {p.target: p for p in reversed(reg.store.config_pushes(limit=500))}
    states = _collect(broker, list(devices) or ids, wait_s)
    if not devices:
        ids = sorted(set(ids) | set(states))
    rows = []
    for d in ids:
        s = states.get(d)
        pushed = pushes.get(f"device:{d}")
        rows.append(
            {
                "device": d,
                "version": s.version if s else None,
                "trial": s.trial if s else None,
                "changed": list(s.changed) if s else [],
                "last_refusal": s.last_refusal.model_dump() if s and s.last_refusal else None,
                "last_rollback": s.last_rollback.model_dump() if s and s.last_rollback else None,
                "pushed_to_device": pushed.version if pushed else None,
            }
        )
    if as_json:
        echo_json(rows)
        return
    table = Table("device", "runs", "trial", "last refusal", "last rollback", title="remote config")
    for d in ids:
        s = states.get(d)
        table.add_row(
            d,
            "no answer" if s is None else f"v{s.version}" if s.version else "own file",
            f"v{s.trial}" if s and s.trial else "-",
            _outcome(s.last_refusal if s else None),
            _outcome(s.last_rollback if s else None),
        )
    Console().print(table)


def _mark(c: Change) -> str:
    if c.key.startswith(f"{LAYOUT_KEY}["):  # a station layout: what happens to that station's process
        name, whole = c.key[len(LAYOUT_KEY) + 1 : c.key.index("]")], c.key.endswith("]")
        if whole and not c.had_old:
            return f"start station {name}"
        if whole and not c.had_new:
            return f"stop station {name}"
        return f"restart station {name}"
    try:
        check_allowed(_nest(c.key))
    except ConfigRefused as exc:
        return f"refused ({exc.detail.split(': ', 1)[-1]})"
    return "hot" if is_hot(c.key) else "restart"


def _nest(key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = None
    return out


@config.command("diff")
@click.argument("args", nargs=-1, metavar="DEVICE|--to group:G FILE.toml")
@to_option
@registry_options
@json_option
def diff_cmd(
    args: tuple[str, ...], to: str | None, home: Path, store_url: str | None, artifacts_url: str | None, as_json: bool
) -> None:
    """What pushing FILE.toml to DEVICE (or the group) would change against the last config pushed to
    it, key by key, and how a device applies each key: hot (no restart), restart, or refused. A station
    layout is compared station by station: start, stop, or restart of that station alone."""
    target, path = _target_and_file(args, to)
    new = _overlay(path)
    with open_registry(home, store_url, artifacts_url) as reg:
        pushes = reg.store.config_pushes(str(target), limit=1)
    old = pushes[0].overlay if pushes else {}
    if LAYOUT_KEY in old or LAYOUT_KEY in new:
        changes = layout_diff(file_entries(old), file_entries(new))
    else:
        changes = diff(old, new)
    if as_json:
        echo_json(
            {
                "target": str(target),
                "against": pushes[0].version if pushes else None,
                "changes": [
                    {"key": c.key, "old": c.old if c.had_old else None, "new": c.new if c.had_new else None}
                    | {"applied": _mark(c)}
                    for c in changes
                ],
            }
        )
        return
    against = f"config version {pushes[0].version}" if pushes else "nothing pushed yet"
    click.echo(f"{target}: {path} against {against}")
    for c in changes:
        sign = "+" if not c.had_old else "-" if not c.had_new else "~"
        value = f"{c.old!r} -> {c.new!r}" if c.had_old and c.had_new else repr(c.new if c.had_new else c.old)
        click.echo(f"  {sign} {c.key} = {value}  [{_mark(c)}]")
    if not changes:
        click.echo("  no change")


@config.command("history")
@click.argument("target", required=False)
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True, help="Newest pushes shown.")
@registry_options
@json_option
def history(
    target: str | None, limit: int, home: Path, store_url: str | None, artifacts_url: str | None, as_json: bool
) -> None:
    """Every config pushed (to TARGET: DEVICE, device:ID or group:G), newest first: who and when."""
    t = str(ConfigTarget.parse(target)) if target else None
    with open_registry(home, store_url, artifacts_url) as reg:
        pushes = reg.store.config_pushes(t, limit=limit)
    if as_json:
        echo_json(
            [{"version": p.version, "target": p.target, "by": p.actor, "at": p.at, "note": p.note} for p in pushes]
        )
        return
    table = Table("version", "target", "by", "when (UTC)", "note", "tables", title="config pushes")
    for p in pushes:
        when = datetime.datetime.fromtimestamp(p.at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(str(p.version), p.target, p.actor, when, p.note, ", ".join(sorted(p.overlay)))
    Console().print(table)


__all__ = ["config"]
