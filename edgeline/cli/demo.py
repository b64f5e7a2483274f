"""``edgeline demo``: the whole cycle on a synthetic inspection line, in one command."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from edgeline.cli.options import json_option, renamed_option


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: stop the stage, clean up, write what happened."""


def _on_sigterm(_signum: int, _frame: Any) -> None:
    raise _Terminated()


def _log_to_file(path: Path, verbose: int) -> list[logging.Handler]:
    """While the live display runs, log lines go to the workspace log instead of the terminal."""
    root = logging.getLogger()
    saved = root.handlers[:]
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers = [handler]
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    logging.captureWarnings(True)
    return saved


@click.command()
@click.option("--devices", type=click.IntRange(3, 12), default=3, show_default=True, help="Devices (lines) to run.")
@click.option("--quick", is_flag=True, help="A smaller, faster run for CI (less training data, shorter phases).")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Workspace directory (empty, or a previous demo workspace, which is cleared). Default: a new temp dir.",
)
@json_option
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the synthetic data and the line.")
@renamed_option("--broker", "broker")
@click.option(
    "--broker-kind",
    "broker",
    type=click.Choice(["auto", "mosquitto", "amqtt"]),
    default="auto",
    show_default=True,
    help="auto: Mosquitto when installed, else the in-process amqtt broker (MQTT 3.1.1).",
)
@click.option(
    "--scenario",
    type=click.Choice(["story", "triggered"]),
    default="story",
    show_default=True,
    help="story: the whole MLOps cycle on a fleet; triggered: one triggered station driven by a simulated "
    "PLC over Modbus TCP (needs the line extra).",
)
@click.option(
    "--parts",
    type=click.IntRange(1, 100_000),
    help="Parts the PLC triggers in the triggered scenario. Default: 300 (--quick: 120).",
)
@click.pass_context
def demo(
    ctx: click.Context,
    devices: int,
    quick: bool,
    workdir: Path | None,
    as_json: bool,
    seed: int,
    broker: str,
    scenario: str,
    parts: int | None,
) -> None:
    """Run the whole edgeline cycle on a synthetic inspection line, with an HTML report.

    \b
    It starts a broker (Mosquitto, or an in-process MQTT broker), a camera simulator and DEVICES agent
    processes (`edgeline agent run`), then: builds and registers v1; deploys it as a canary, then to
    all; lets the devices inspect their streams; darkens one line's lighting; waits until telemetry
    shows drift on that line only; retrains v2 from the drift evidence; deploys v2 as a canary on that
    line, then to all; rolls out v3, an inspection model (good-part model + classifier), and shows one
    line a defect kind no training image has (cracks), which v3 must reject or send to review; pushes
    a tampered update that every device must refuse while it keeps inspecting; and scores the
    devices' verdicts against the camera's ground truth.

    \b
    --scenario triggered runs one station in trigger mode instead: a simulated PLC writes each part's
    number and sets the trigger coil over Modbus TCP, reads the verdict registers, and the run reports
    escapes and false rejects against the camera's truth and the trigger-to-verdict time (docs/line.md).

    \b
    Progress goes to stderr; the summary table (or, with --json, the JSON summary) to stdout; the
    report path is printed at the end. Exit status 1 when any stage failed, 130 when interrupted.
    About 75-90 s on 2 cores (--quick: about 50-55 s); see docs/demo.md for measured times.
    """
    if parts is not None and scenario != "triggered":
        raise click.UsageError("--parts applies to --scenario triggered only")
    from edgeline.demo.workspace import Workspace

    ws = Workspace.create(workdir)

    from edgeline.demo.run import run_demo
    from edgeline.demo.settings import DemoSettings
    from edgeline.demo.summary import field_table, summary_table

    err = Console(stderr=True)
    settings = DemoSettings.make(quick=quick, devices=devices, seed=seed, broker=broker)
    verbose = int((ctx.parent.params.get("verbose") if ctx.parent else 0) or 0)
    saved = _log_to_file(ws.root / "logs" / "demo.log", verbose)
    if scenario == "triggered":
        _triggered(ws, settings, err, quick, parts, as_json, saved)
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        result = run_demo(settings, ws, err)
    finally:
        signal.signal(signal.SIGTERM, previous)
        logging.getLogger().handlers = saved
    summary = result.summary
    if as_json:
        click.echo(json.dumps(summary, indent=1, default=str))
        err.print(summary_table(summary))
        if (fields := field_table(summary)) is not None:
            err.print(fields)
        err.print(f"report: {summary['report']}", highlight=False, soft_wrap=True)
    else:
        Console().print(summary_table(summary))
        if (fields := field_table(summary)) is not None:
            Console().print(fields)
        click.echo(f"report: {summary['report']}")
    if result.interrupted:
        sys.exit(130)
    if not summary["ok"]:
        sys.exit(1)


def _triggered(
    ws: Any, settings: Any, err: Console, quick: bool, parts: int | None, as_json: bool, saved: list[logging.Handler]
) -> None:
    from edgeline.demo.triggered import TriggeredPlan, run_triggered, triggered_table

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        summary = run_triggered(settings, ws, err, TriggeredPlan.make(quick=quick, parts=parts))
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)
        logging.getLogger().handlers = saved
    if as_json:
        click.echo(json.dumps(summary, indent=1, default=str))
    else:
        Console().print(triggered_table(summary))
    click.echo(f"summary: {ws.summary_path}", err=as_json)
    if not summary["ok"]:
        sys.exit(1)
