"""``edgeline shadow report|promote`` and the shadow side of ``edgeline deploy`` (``--shadow``,
``--stop-shadow``): a challenger beside the serving model, the field evidence it gathers, and its
promotion through the normal rollout when the evidence meets a stated policy."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from cloud_registry import rollout as ro
from cloud_registry import shadow_deploy
from cloud_registry.telemetry.shadow_policy import Decision, PromotionPolicy, judge
from cloud_registry.telemetry.shadow_report import Evidence, ShadowReport, build_report
from cloud_registry.telemetry.store import open_telemetry_store
from edgeline.cli.options import (
    BrokerOptions,
    broker_options,
    echo_json,
    json_option,
    keys_option,
    registry_options,
)
from edgeline.cli.registry_access import open_registry
from edgeline.cli.rollout import _runner, _summary, _watch, parse_pct
from edgeline.cli.target_help import UNITS_HELP
from edgeline.cli.telemetry_common import DB, telemetry_exists, telemetry_url

VERDICT_COLS = ("ok", "defect", "unknown")


def deploy_shadow(
    ref: str | None,
    target: str,
    timeout: float,
    store: tuple[Path, str | None, str | None],
    broker: BrokerOptions,
    keys_dir: Path,
    as_json: bool,
) -> None:
    """Start REF as the challenger on TARGET's devices (``ref`` None: stop their challengers), and
    wait until each device answered."""
    with open_registry(*store) as reg, _runner(reg, broker, keys_dir) as runner:
        runner.fleet.settle()
        if ref is None:
            devices = shadow_deploy.stop(runner.publisher, runner.fleet, target)
            plan: dict[str, int | None] = dict.fromkeys(devices)
            sha = None
            what = "stop"
        else:
            sp = shadow_deploy.deploy(reg, runner.publisher, runner.fleet, ref, target)
            plan = dict(sp.sequences)
            sha = sp.model.sha256
            what = f"{sp.model.name}@{sp.model.version}"
        outcomes = shadow_deploy.wait(runner.fleet, plan, sha, timeout)
    _outcomes(what, outcomes, as_json)


def _outcomes(what: str, outcomes: dict[str, shadow_deploy.Outcome], as_json: bool) -> None:
    if as_json:
        echo_json(
            {
                "shadow": what,
                "devices": {
                    d: {"status": o.status, "reason": o.reason, "detail": o.detail} for d, o in outcomes.items()
                },
            }
        )
    else:
        table = Table("device", "shadow", "reason", title=f"shadow {what}")
        for d, o in sorted(outcomes.items()):
            table.add_row(d, o.status, f"{o.reason}: {o.detail}" if o.reason else "")
        Console().print(table)
    bad = [d for d, o in outcomes.items() if o.status in ("refused", "waiting")]
    if bad:
        raise click.ClickException(f"shadow {what}: {len(bad)} of {len(outcomes)} devices refused or did not answer")


@click.group()
def shadow() -> None:
    """Shadow deployments (started with 'edgeline deploy REF --to ... --shadow'): the challenger's
    field evidence, and its promotion to champion."""


def _windows(url: str, model: str, hours: float | None) -> list[Any]:
    if not telemetry_exists(url):
        raise click.ClickException(f"no telemetry database at {url} (run 'edgeline ingest' first, or pass --db)")
    store = open_telemetry_store(url)
    try:
        since = time.time() - hours * 3600 if hours else None
        return [sw.window for sw in store.windows(model, since=since)]
    finally:
        store.close()


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _agree(ev: Evidence) -> str:
    """The agreement rate; with its 95% range when the windows were noised (docs/privacy.md)."""
    if not ev.noised_windows or ev.agreement_rate is None:
        return _pct(ev.agreement_rate)
    return f"{_pct(ev.agreement_rate)} ({_pct(ev.agreement_low)}-{_pct(ev.agreement_high)}, noised)"


def _row(name: str, group: str | None, ev: Evidence) -> list[str]:
    pairs = ", ".join(f"{a}->{b} {n}" for a, b, n in ev.top_disagreements(2)) or "-"
    lat = "-" if ev.latency_p99_max is None else f"{ev.latency_p99_max:.2f}"
    drift = f"{ev.drifted_windows}/{ev.drift_run}"
    return [
        name,
        group or "-",
        str(ev.windows),
        str(ev.compared),
        str(ev.skipped),
        _agree(ev),
        pairs,
        drift,
        lat,
    ]


#: columns of the evidence tables; "drift": windows whose challenger drift was flagged / longest run
COLUMNS = ("line", "group", "win", "compared", "skipped", "agree", "disagree", "drift", "p99 ms")


def _evidence_tables(report: ShadowReport) -> list[Table]:
    lines = Table(*COLUMNS, title=f"{report.challenger} v{report.version} as a shadow, per line")
    for line, ev in sorted(report.lines.items()):
        lines.add_row(*_row(line[:8], report.line_group.get(line), ev))
    groups = Table(*COLUMNS, title="per group (line: how many)")
    for g, ev in sorted(report.groups().items()):
        n = sum(1 for k in report.lines if (report.line_group.get(k) or "-") == g)
        groups.add_row(*_row(str(n), g, ev))
    total = report.total()
    matrix = Table("champion \\ challenger", *VERDICT_COLS, title=f"verdicts, all lines ({total.compared} frames)")
    for a in VERDICT_COLS:
        matrix.add_row(a, *(str(total.agreement[a][b]) for b in VERDICT_COLS))
    return [lines, groups, matrix]


def _resolve(ref: str, store: tuple[Path, str | None, str | None]) -> tuple[str, int]:
    with open_registry(*store) as reg:
        mv = reg.resolve(ref)
    return mv.name, mv.version


@shadow.command("report")
@click.argument("ref")
@click.option("--group", default=None, help="Only the windows of this group.")
@click.option("--hours", type=float, default=None, help="Only the last N hours of windows.")
@click.option("--champion-model", default=None, help="Model name of the champion's windows (default: REF's name).")
@registry_options
@DB
@json_option
def report(
    ref: str,
    group: str | None,
    hours: float | None,
    champion_model: str | None,
    home: Path,
    store_url: str | None,
    artifacts_url: str | None,
    db: str | None,
    as_json: bool,
) -> None:
    """The field evidence of challenger REF (NAME@VERSION, NAME@ALIAS) from the telemetry windows,
    per line (device pseudonym) and per group: frames compared and skipped, verdict agreement,
    where the two disagree (class pairs), the challenger's drift against its own reference (windows
    flagged, longest run in a row), its worst p99 latency, and the verdict matrix over all lines."""
    name, version = _resolve(ref, (home, store_url, artifacts_url))
    windows = _windows(telemetry_url(home, db, store_url), champion_model or name, hours)
    rep = build_report(windows, name, version, group=group)
    if as_json:
        echo_json(rep.to_dict())
        return
    if not rep.lines:
        raise click.ClickException(f"no telemetry window carries a comparison with {name} v{version} yet")
    console = Console()
    for t in _evidence_tables(rep):
        console.print(t)
    console.print("drift: windows whose challenger drift was flagged / longest run of them in a row")


@shadow.command("promote")
@click.argument("ref")
@click.option("--to", "target", required=True, help="The shadow's units: " + UNITS_HELP + ".")
@click.option(
    "--min-frames", type=click.IntRange(1), default=500, show_default=True, help="Frames compared per line, at least."
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0.0, 1.0),
    default=0.95,
    show_default=True,
    help="Verdict agreement per line, at least (0-1).",
)
@click.option(
    "--max-drift-run",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Refuse when a line flagged the challenger's drift in this many windows in a row.",
)
@click.option(
    "--min-lines",
    type=click.IntRange(1),
    default=None,
    help="Lines with evidence, at least (default: the devices of --to).",
)
@click.option("--hours", type=float, default=None, help="Only the last N hours of windows.")
@click.option("--champion-model", default=None, help="Model name of the champion's windows (default: REF's name).")
@click.option("--canary", type=click.IntRange(0), default=1, show_default=True, help="Devices in a canary wave.")
@click.option("--waves", default="50%,100%", show_default=True, help="Cumulative wave sizes after the canary.")
@click.option("--max-failures", default="0%", show_default=True, help="Abort (and roll back) above this share.")
@click.option("--keep-shadow", is_flag=True, help="Leave the challengers running after the rollout completed.")
@click.option("--timeout", type=float, default=None, help="Stop watching the rollout after this many seconds.")
@registry_options
@DB
@broker_options
@keys_option
@json_option
def promote(
    ref: str,
    target: str,
    min_frames: int,
    min_agreement: float,
    max_drift_run: int,
    min_lines: int | None,
    hours: float | None,
    champion_model: str | None,
    canary: int,
    waves: str,
    max_failures: str,
    keep_shadow: bool,
    timeout: float | None,
    home: Path,
    store_url: str | None,
    artifacts_url: str | None,
    db: str | None,
    broker: BrokerOptions,
    keys_dir: Path,
    as_json: bool,
) -> None:
    """Make challenger REF the champion of TARGET's devices through the normal rollout (canary,
    waves, abort and roll back), but only if its field evidence meets the policy, which is printed
    with the evidence: at least --min-lines lines with evidence, and per line at least --min-frames
    frames compared, verdict agreement >= --min-agreement, and no challenger drift flagged in
    --max-drift-run windows in a row. Refused: exit 1 and no rollout. Once the rollout completed the
    devices' challengers are stopped (the champion is that model now) unless --keep-shadow."""
    pct = parse_pct(max_failures)
    store = (home, store_url, artifacts_url)
    name, version = _resolve(ref, store)
    windows = _windows(telemetry_url(home, db, store_url), champion_model or name, hours)
    with open_registry(*store) as reg, _runner(reg, broker, keys_dir) as runner:
        runner.fleet.settle()
        devices = shadow_deploy.targets(runner.fleet, target)
        kind, _, value = target.partition(":")
        rep = build_report(windows, name, version, group=value if kind == "group" else None)
        policy = PromotionPolicy(min_frames, min_agreement, max_drift_run, min_lines or len(devices))
        decision = judge(rep, policy)
        doc: dict[str, Any] = {"policy": policy.describe(), "decision": decision.to_dict(), "evidence": rep.to_dict()}
        if not as_json:
            _print_decision(rep, decision)
        if not decision.accepted:
            if as_json:
                echo_json(doc)
            raise click.ClickException(f"promotion of {name} v{version} refused: {'; '.join(decision.reasons)}")
        r = runner.create(ref, target, canary=canary, waves=waves, max_failure_pct=pct)
        r = _watch(runner, r.plan.id, timeout, as_json)
        stopped: list[str] = []
        if r.status == ro.RolloutStatus.COMPLETED and not keep_shadow:
            stopped = shadow_deploy.stop(runner.publisher, runner.fleet, target)
    doc["rollout"] = _summary(r)
    doc["shadow_stopped"] = stopped
    if as_json:
        echo_json(doc)
    else:
        click.echo(f"rollout {r.plan.id}: {r.status.value}" + (f" ({r.reason})" if r.reason else ""))
    if r.status != ro.RolloutStatus.COMPLETED:
        raise click.ClickException(f"rollout {r.plan.id} {r.status.value}: {r.reason}")


def _print_decision(rep: ShadowReport, decision: Decision) -> None:
    console = Console()
    console.print(f"policy: {decision.policy.describe()}")
    for t in _evidence_tables(rep):
        console.print(t)
    console.print("drift: windows whose challenger drift was flagged / longest run of them in a row")
    for line, why in sorted(decision.failing_lines.items()):
        console.print(f"line {line[:8]} below the policy: {'; '.join(why)}")
    verdict = "meets the policy" if decision.accepted else "REFUSED: " + "; ".join(decision.reasons)
    console.print(f"evidence of {rep.challenger} v{rep.version}: {verdict}")
