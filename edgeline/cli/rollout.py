"""``edgeline deploy``, ``edgeline rollout status|pause|resume|abort|run`` and ``edgeline rollback``."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cloud_registry import rollout as ro
from cloud_registry.fleet import FleetWatcher
from cloud_registry.publisher import Publisher
from cloud_registry.registry import Registry
from cloud_registry.rollout_runner import RUNNER_ALIVE_S, RolloutRunner, request, runner_alive
from converters.keys import load_signing_key
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
from edgeline.cli.target_help import UNITS_HELP

TERMINAL_EXIT = {"completed": 0, "aborted": 1}


def parse_pct(value: str) -> float:
    try:
        pct = float(value.rstrip("%"))
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a percentage (e.g. 10%)") from exc
    if not 0 <= pct <= 100:
        raise click.BadParameter("must be between 0% and 100%")
    return pct


@contextmanager
def _runner(reg: Registry, broker: BrokerOptions, keys_dir: Path) -> Iterator[RolloutRunner]:
    signer = load_signing_key(keys_dir)
    link = connect(broker, f"edgeline-registry-{os.getpid()}")
    try:
        fleet = FleetWatcher(link, broker.topics, book=reg.store)
        yield RolloutRunner(reg, Publisher(link, broker.topics, signer), fleet)
    finally:
        link.stop()


def _summary(r: ro.Rollout) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for t in r.devices.values():
        counts[t.status.value] = counts.get(t.status.value, 0) + 1
    return {
        "id": r.plan.id,
        "model": f"{r.plan.model.name}@{r.plan.model.version}",
        "target": r.plan.target,
        "status": r.status.value,
        "wave": r.wave + 1,
        "waves": len(r.plan.waves),
        "devices": len(r.devices),
        "counts": counts,
        "reason": r.reason,
    }


def _device_table(r: ro.Rollout) -> Table:
    table = Table("device", "wave", "status", "previous", "reason", title=f"rollout {r.plan.id}: {r.status.value}")
    for t in sorted(r.devices.values(), key=lambda t: (t.wave, t.device_id)):
        prev = f"v{t.previous.version}" if t.previous else "-"
        table.add_row(t.device_id, str(t.wave + 1), t.status.value, prev, t.reason)
    return table


def _watch(runner: RolloutRunner, rollout_id: str, timeout: float | None, as_json: bool) -> ro.Rollout:
    """Drive the rollout with a live progress bar (Ctrl-C stops watching; the rollout goes on)."""
    r = runner.load(rollout_id)
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=as_json, transient=False) as progress:
        task = progress.add_task("committed", total=len(r.devices))

        def show(x: ro.Rollout) -> None:
            desc = f"{x.plan.model.name} v{x.plan.model.version}  wave {x.wave + 1}/{len(x.plan.waves)}  {x.status}"
            failed = x.count(ro.DeviceStatus.FAILED)
            if failed:
                desc += f"  failed {failed}"
            progress.update(task, completed=x.count(ro.DeviceStatus.COMMITTED), description=desc)

        show(r)
        try:
            r = runner.run(rollout_id, on_update=show, timeout_s=timeout)
        except KeyboardInterrupt:
            console.print(f"stopped watching; continue with: edgeline rollout run {rollout_id}")
            r = runner.load(rollout_id)
        show(r)
    return r


def _finish(r: ro.Rollout, as_json: bool) -> None:
    if as_json:
        echo_json(_summary(r) | {"devices": {d: t.status.value for d, t in r.devices.items()}})
    else:
        Console().print(_device_table(r))
    if r.status == ro.RolloutStatus.ABORTED:
        raise click.ClickException(f"rollout {r.plan.id} aborted: {r.reason}")
    if r.status != ro.RolloutStatus.COMPLETED:
        raise click.ClickException(f"rollout {r.plan.id} is still {r.status} (edgeline rollout run {r.plan.id})")


@click.command()
@click.argument("ref", required=False)
@click.option("--to", "target", required=True, help="Where to: " + UNITS_HELP + ".")
@click.option(
    "--shadow",
    is_flag=True,
    help="Run REF as a challenger beside the serving model (verdicts never acted on; only the comparison's "
    "counts reach telemetry). No waves: every device of --to gets it; the serving model is not touched.",
)
@click.option("--stop-shadow", is_flag=True, help="Stop the challenger on the devices of --to (no REF).")
@click.option(
    "--canary",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Devices in a first, canary wave: any failure there aborts the rollout.",
)
@click.option(
    "--waves",
    default="100%",
    show_default=True,
    help="Cumulative wave sizes after the canary: '10%,50%,100%' or '1,5,all'.",
)
@click.option(
    "--max-failures",
    default="0%",
    show_default=True,
    help="Abort (and roll back) when more than this share of devices failed.",
)
@click.option("--allow-downgrade", is_flag=True, help="Authorise going to a lower version (a rollback).")
@click.option("--detach", is_flag=True, help="Publish the first wave and return; drive later with 'rollout run'.")
@click.option("--timeout", type=float, default=None, help="Stop watching after this many seconds.")
@registry_options
@broker_options
@keys_option
@json_option
def deploy(
    ref: str | None,
    target: str,
    shadow: bool,
    stop_shadow: bool,
    canary: int,
    waves: str,
    max_failures: str,
    allow_downgrade: bool,
    detach: bool,
    timeout: float | None,
    home: Path,
    store_url: str | None,
    artifacts_url: str | None,
    broker: BrokerOptions,
    keys_dir: Path,
    as_json: bool,
) -> None:
    """Roll REF (NAME@VERSION, NAME@production, ...) out to devices, in waves, with live progress.

    Each wave waits for its devices to COMMIT; crossing --max-failures (or any canary failure) halts
    the rollout and sends the devices already updated back to their previous model. Deployments are
    retained on the broker: devices that are offline converge when they return, even with no
    registry running. Exits 1 when the rollout was aborted.

    With --shadow, REF goes to every device's shadow slot instead, beside the model it serves, and
    the command waits until each device runs it or refused it (exit 1 if any refused or did not
    answer within --timeout, 60 s by default); --stop-shadow stops the challengers. See
    'edgeline shadow report' and 'edgeline shadow promote'."""
    if shadow or stop_shadow:
        from edgeline.cli.shadow import deploy_shadow

        if shadow == stop_shadow or (ref is None) != stop_shadow:
            raise click.UsageError("use REF --shadow to start a challenger, or --stop-shadow without REF")
        deploy_shadow(ref, target, timeout or 60.0, (home, store_url, artifacts_url), broker, keys_dir, as_json)
        return
    if ref is None:
        raise click.UsageError("missing REF (NAME@VERSION, NAME@ALIAS)")
    pct = parse_pct(max_failures)
    opts = dict(canary=canary, waves=waves, max_failure_pct=pct, allow_downgrade=allow_downgrade)
    _roll_out(ref, target, opts, (home, store_url, artifacts_url), broker, keys_dir, detach, timeout, as_json)


def _roll_out(
    ref: str,
    target: str,
    plan: dict[str, Any],
    store: tuple[Path, str | None, str | None],
    broker: BrokerOptions,
    keys_dir: Path,
    detach: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    """Create the rollout of REF to TARGET (``plan``: the runner's options), then return at once
    (``detach``) or watch it to the end; what ``deploy`` and ``rollback MODEL@VERSION`` share."""
    with open_registry(*store) as reg, _runner(reg, broker, keys_dir) as runner:
        runner.fleet.settle()
        r = runner.create(ref, target, **plan)
        if detach:
            runner.release(r)
            if as_json:
                echo_json(_summary(r))
            else:
                click.echo(r.plan.id)
            return
        r = _watch(runner, r.plan.id, timeout, as_json)
    _finish(r, as_json)


@click.group()
def rollout() -> None:
    """Rollouts: status, pause, resume, abort, or keep driving one ('run')."""


@rollout.command("status")
@click.argument("rollout_id", required=False)
@registry_options
@json_option
def status(rollout_id: str | None, home: Path, store_url: str | None, artifacts_url: str | None, as_json: bool) -> None:
    """Without ROLLOUT_ID: the recent rollouts. With it: every device of that rollout."""
    with open_registry(home, store_url, artifacts_url) as reg:
        rows = [reg.store.get_rollout(rollout_id)] if rollout_id else reg.store.list_rollouts()
    rollouts = [ro.Rollout.from_dict(row.doc) for row in rows]
    if as_json:
        docs = [_summary(r) | {"runner_alive": runner_alive(row)} for r, row in zip(rollouts, rows, strict=True)]
        if rollout_id:
            docs[0]["devices"] = {
                d: {"status": t.status.value, "reason": t.reason} for d, t in rollouts[0].devices.items()
            }
        echo_json(docs[0] if rollout_id else docs)
        return
    if rollout_id:
        Console().print(_device_table(rollouts[0]))
        if rollouts[0].reason:
            click.echo(f"reason: {rollouts[0].reason}")
        return
    table = Table("id", "model", "target", "status", "wave", "committed", "failed", "created")
    for r, row in zip(rollouts, rows, strict=True):
        table.add_row(
            r.plan.id,
            f"{r.plan.model.name}@{r.plan.model.version}",
            r.plan.target,
            r.status.value,
            f"{r.wave + 1}/{len(r.plan.waves)}",
            f"{r.count(ro.DeviceStatus.COMMITTED)}/{len(r.devices)}",
            str(r.count(ro.DeviceStatus.FAILED)),
            time.strftime("%m-%d %H:%M", time.localtime(row.created_at)),
        )
    Console().print(table)


def _control(
    rollout_id: str,
    control: str,
    home: Path,
    store_url: str | None,
    artifacts_url: str | None,
    broker: BrokerOptions,
    keys_dir: Path,
) -> None:
    """Hand the request to the runner driving the rollout; with none alive, carry it out here."""
    with open_registry(home, store_url, artifacts_url) as reg:
        row = reg.store.get_rollout(rollout_id)
        request(reg, rollout_id, control)
        if runner_alive(row):
            deadline = time.monotonic() + 2 * RUNNER_ALIVE_S
            while time.monotonic() < deadline:
                if reg.store.get_rollout(rollout_id).control is None:
                    click.echo(f"{control}: taken by the running rollout runner")
                    return
                time.sleep(0.1)
        control_now = reg.store.take_control(rollout_id)
        if control_now is None:
            return
        with _runner(reg, broker, keys_dir) as runner:
            r = runner.apply_control(runner.load(rollout_id), control_now)
            reg.store.save_rollout(rollout_id, r.status.value, r.to_dict())
    click.echo(f"rollout {rollout_id}: {r.status.value}" + (f" ({r.reason})" if r.reason else ""))


def _control_command(name: str, help_text: str) -> click.Command:
    @rollout.command(name, help=help_text)
    @click.argument("rollout_id")
    @registry_options
    @broker_options
    @keys_option
    def cmd(
        rollout_id: str,
        home: Path,
        store_url: str | None,
        artifacts_url: str | None,
        broker: BrokerOptions,
        keys_dir: Path,
    ) -> None:
        _control(rollout_id, name, home, store_url, artifacts_url, broker, keys_dir)

    return cmd


_control_command("pause", "Dispatch no further wave (devices already updating carry on).")
_control_command("resume", "Continue a paused rollout.")
_control_command("abort", "Stop the rollout and send every device already dispatched back to its previous model.")


@rollout.command("run")
@click.argument("rollout_id")
@click.option("--timeout", type=float, default=None, help="Stop after this many seconds.")
@registry_options
@broker_options
@keys_option
@json_option
def run(
    rollout_id: str,
    timeout: float | None,
    home: Path,
    store_url: str | None,
    artifacts_url: str | None,
    broker: BrokerOptions,
    keys_dir: Path,
    as_json: bool,
) -> None:
    """Drive ROLLOUT_ID (again) until it completes or is aborted: after --detach, a Ctrl-C, or a restart."""
    with open_registry(home, store_url, artifacts_url) as reg, _runner(reg, broker, keys_dir) as runner:
        r = _watch(runner, rollout_id, timeout, as_json)
    _finish(r, as_json)


@click.command()
@click.argument("what")
@click.option("--to", "target", default=None, help="With a MODEL@VERSION, where to: " + UNITS_HELP + ".")
@click.option("--timeout", type=float, default=None, help="Stop watching after this many seconds.")
@registry_options
@broker_options
@keys_option
@json_option
def rollback(
    what: str,
    target: str | None,
    timeout: float | None,
    home: Path,
    store_url: str | None,
    artifacts_url: str | None,
    broker: BrokerOptions,
    keys_dir: Path,
    as_json: bool,
) -> None:
    """Send devices back to a previous version.

    WHAT is a rollout id (every device it updated goes back to the model it ran before), or
    MODEL@VERSION with --to (an authorised downgrade to that version, rolled out like any deployment)."""
    if "@" not in what:
        if target is not None:
            raise click.UsageError("--to goes with MODEL@VERSION, not with a rollout id")
        _control(what, "rollback", home, store_url, artifacts_url, broker, keys_dir)
        return
    if target is None:
        raise click.UsageError("MODEL@VERSION needs --to group:NAME or device:ID")
    plan = {"allow_downgrade": True, "max_failure_pct": 100.0}
    _roll_out(what, target, plan, (home, store_url, artifacts_url), broker, keys_dir, False, timeout, as_json)
