"""``edgeline ingest``, ``edgeline drift`` and ``edgeline retrain`` (in :mod:`.telemetry_retrain`): the
cloud half of the telemetry loop."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shlex
import signal
import threading
import time
from pathlib import Path
from typing import Any

import click

from cloud_registry.errors import RegistryError
from cloud_registry.telemetry.alerts import AlertEngine, AlertSink, CommandSink, WebhookSink
from cloud_registry.telemetry.store import open_telemetry_store
from edgeline.cli.options import BrokerOptions, broker_options, json_option, registry_options
from edgeline.cli.registry_access import optional_registry
from edgeline.cli.telemetry_common import DB, telemetry_exists, telemetry_url
from edgeline.core.protocol.manifest import Reference

log = logging.getLogger(__name__)
#: how often the ingest applies --retention-days (a scan or a partition drop: not per tick)
RETENTION_EVERY_S = 3600.0
#: how often the ingest checks the field rates against --field-*-limit
FIELD_EVERY_S = 60.0


# -- ingest --------------------------------------------------------------------------------------------
@click.command()
@registry_options
@DB
@broker_options
@click.option("--host", "legacy_host", default=None, hidden=True, help="Old name of --broker-host.")
@click.option("--port", "legacy_port", type=click.IntRange(1, 65535), default=None, hidden=True)
@click.option("--client-id", default="edgeline-ingest-1", show_default=True, help="Unique per worker.")
@click.option("--share-group", default="ingest", show_default=True, help="Shared-subscription group (MQTT 5).")
@click.option("--no-shared", is_flag=True, help="Plain subscriptions even on MQTT 5.")
@click.option(
    "--partitions",
    type=click.IntRange(0, 4096),
    default=0,
    show_default=True,
    help="Telemetry topic partitions, as the devices' [telemetry] partitions (0: unpartitioned topic only).",
)
@click.option("--workers", type=click.IntRange(1, 4096), default=1, show_default=True, help="Workers splitting them.")
@click.option("--worker-index", type=click.IntRange(min=0), default=0, show_default=True, help="This worker, 0-based.")
@click.option("--max-batch", type=click.IntRange(1, 100_000), default=1000, show_default=True, help="Per transaction.")
@click.option(
    "--sessions",
    type=click.Choice(["auto", "one", "per-filter"]),
    default="auto",
    show_default=True,
    help="MQTT sessions: one per telemetry filter (auto: when partitioned; needed on NATS) or one for all.",
)
@click.option(
    "--retention-days",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Drop windows older than this (applied hourly; older windows are refused). Default: keep all.",
)
@click.option("--webhook", "webhooks", multiple=True, metavar="URL", help="POST alerts here (repeatable).")
@click.option("--command", "commands", multiple=True, metavar="CMD", help="Run CMD with each alert on stdin.")
@click.option("--silent-budget", type=float, default=90.0, show_default=True, help="Seconds before a device is silent.")
@click.option("--duration", type=float, default=0.0, help="Stop after this many seconds (0: until SIGTERM/Ctrl-C).")
@click.option(
    "--field-escape-limit",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Alert when a version's, group's or line's field escape rate (measured or estimated) is above this share.",
)
@click.option(
    "--field-false-reject-limit",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="The same for the field false-reject rate.",
)
@click.option(
    "--field-hours",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Evidence of the field alerts: the last N hours of windows (checked every minute).",
)
@json_option
def ingest(
    home: Path,
    store_url: str | None,
    artifacts_url: str | None,
    db: str | None,
    broker: BrokerOptions,
    legacy_host: str | None,
    legacy_port: int | None,
    client_id: str,
    share_group: str,
    no_shared: bool,
    partitions: int,
    workers: int,
    worker_index: int,
    max_batch: int,
    sessions: str,
    retention_days: float | None,
    webhooks: tuple[str, ...],
    commands: tuple[str, ...],
    silent_budget: float,
    duration: float,
    field_escape_limit: float | None,
    field_false_reject_limit: float | None,
    field_hours: float,
    as_json: bool,
) -> None:
    """Run the telemetry ingest service: subscribe to the devices' telemetry (this worker's partitions
    with --partitions/--workers/--worker-index on any broker; shared subscriptions on MQTT 5, so
    several workers with different --client-id split the load), validate each window against the
    strict schema, store each batch in one transaction before acknowledging it (to the broker and to
    the device), once per idempotency key, and fire alerts (webhook or command)
    once per episode of sustained drift, label drift, a device silent past --silent-budget (from the
    devices' state heartbeats) or an aborted rollout (from the registry under HOME); and, with
    --field-escape-limit / --field-false-reject-limit, once per episode of a field rate above its
    limit or a line, shift or lighting band significantly worse than the others (docs/drift.md)."""
    import dataclasses

    from cloud_registry.fleet import FleetWatcher
    from cloud_registry.telemetry.ingest import Ingestor, IngestService

    if legacy_host is not None or legacy_port is not None:
        broker = dataclasses.replace(broker, host=legacy_host or broker.host, port=legacy_port or broker.port)
    try:
        topics = broker.topics
        if worker_index >= workers:
            raise click.BadParameter(f"--worker-index {worker_index} with --workers {workers}")
        retention_s = retention_days * 86400 if retention_days is not None else None
        store = open_telemetry_store(telemetry_url(home, db, store_url), retention_s=retention_s)
        sinks: list[AlertSink] = [WebhookSink(u) for u in webhooks]
        sinks += [CommandSink(shlex.split(c)) for c in commands]
    except ValueError as exc:  # a bad alert sink URL or command
        raise click.ClickException(str(exc)) from exc
    engine = AlertEngine(store, sinks, silent_budget_s=silent_budget)
    field_monitor = None
    if field_escape_limit is not None or field_false_reject_limit is not None:
        from cloud_registry.telemetry.field_alerts import FieldLimits, FieldMonitor

        limits = FieldLimits(escape=field_escape_limit, false_reject=field_false_reject_limit)
        field_monitor = FieldMonitor(engine, limits, lookback_s=field_hours * 3600.0)
    settings = broker.link_settings(client_id)
    ingestor = Ingestor(store, topics, listeners=[engine.on_window])
    service = IngestService(
        ingestor,
        settings,
        shared=False if no_shared else None,
        share_group=share_group,
        partitions=partitions,
        workers=workers,
        index=worker_index,
        max_batch=max_batch,
        sessions=sessions.replace("-", "_"),
    )
    # heartbeats for the silent-device alert: the devices' states on the same link; with a registry,
    # the fleet it knows (exact retained reads: RabbitMQ keeps retained messages from wildcards)
    book = contextlib.ExitStack()
    reg_for_book = book.enter_context(optional_registry(home, store_url, artifacts_url))
    fleet_view = FleetWatcher(service.link, topics, book=reg_for_book.store if reg_for_book else None).view
    service.start()
    where = store.url.split("@")[-1]
    click.echo(f"ingesting {service.topic_filter} from {broker.host}:{broker.port} into {where}", err=True)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    if duration > 0:
        threading.Timer(duration, stop.set).start()

    retained = [0.0]
    field_checked = [0.0]

    def periodic() -> None:
        now = time.time()
        if retention_s is not None and now - retained[0] >= RETENTION_EVERY_S:
            retained[0] = now
            if removed := store.retain(now):
                log.info("retention: %d windows older than %s days removed", removed, retention_days)
        engine.check_silent(((r.device_id, r.last_seen) for r in fleet_view.rows(now) if r.state), now)
        if field_monitor is not None and now - field_checked[0] >= FIELD_EVERY_S:
            field_checked[0] = now
            field_monitor.check(now)
        with optional_registry(home, store_url, artifacts_url) as reg:
            if reg is not None:
                rollouts = reg.store.list_rollouts(200)
                engine.check_rollouts((r.id, r.status, str(r.doc.get("reason", ""))) for r in rollouts)

    try:
        service.run(stop, every_s=min(5.0, max(0.5, duration / 4)) if duration else 5.0, on_tick=periodic)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        book.close()
    stats = service.ingestor.stats.as_dict() | {"alerts": len(engine.sent), "alert_failures": engine.failures}
    click.echo(json.dumps(stats) if as_json else f"stopped: {stats}")


# -- drift ---------------------------------------------------------------------------------------------
def _reference_from_bundle(bundle: Path) -> Reference:
    from edge_agent.bundle import read_envelope
    from edgeline.core.protocol.manifest import parse_manifest

    env = read_envelope(bundle)
    return parse_manifest(env.get("body")).reference


@click.command()
@click.option("--model", "-m", required=True, help="Model name.")
@click.option("--version", "-V", type=click.IntRange(min=1), default=None, help="One version (default: all).")
@registry_options
@DB
@click.option("--by-group", is_flag=True, help="One row per group.")
@click.option("--hours", type=float, default=None, help="Only the last N hours of windows.")
@click.option(
    "--bundle",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Take the reference histograms from this bundle instead of the registry.",
)
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), default=None, help="PNG path.")
@json_option
def drift(
    model: str,
    version: int | None,
    home: Path,
    store_url: str | None,
    artifacts_url: str | None,
    db: str | None,
    by_group: bool,
    hours: float | None,
    bundle: Path | None,
    png: Path | None,
    as_json: bool,
) -> None:
    """Drift report for MODEL: per version, the field's input statistics against the reference the
    model shipped with (means, pooled PSI and its calibrated threshold, earth mover's distance, windows
    the devices flagged), as a table and a PNG (reference vs field histograms, drift over time)."""
    from cloud_registry.telemetry.drift_report import build_report, render_png

    url = telemetry_url(home, db, store_url)
    if not telemetry_exists(url):
        raise click.ClickException(f"no telemetry database at {url} (run 'edgeline ingest' first, or pass --db)")
    store = open_telemetry_store(url)
    with optional_registry(home, store_url, artifacts_url) as reg:
        fixed = _reference_from_bundle(bundle) if bundle is not None else None

        def reference_for(name: str, ver: int) -> Reference | None:
            if fixed is not None:
                return fixed
            if reg is None:
                return None
            try:
                return reg.manifest(reg.resolve(f"{name}@{ver}")).reference
            except RegistryError:
                return None

        since = time.time() - hours * 3600 if hours else None
        reports = build_report(
            store, model, version=version, by_group=by_group, since=since, reference_for=reference_for
        )
    out_png = render_png(reports, png or Path(f"drift-{model}.png"))
    field = _field_rates(store, model, version, since)
    if as_json:
        doc = {"png": str(out_png), "versions": [r.to_dict() for r in reports], "field": field}
        click.echo(json.dumps(doc, default=str))
        return
    _print_table(reports)
    for f in field:
        click.echo(
            f"field rates v{f['version']}: escape measured {f['escape']['text']}, estimated {_pct(f['escape_est'])}; "
            f"false reject measured {f['false_reject']['text']}, estimated {_pct(f['false_reject_est'])}"
        )
    click.echo(f"plot: {out_png}")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _field_rates(store: Any, model: str, version: int | None, since: float | None) -> list[dict[str, Any]]:
    """Per version, the field rates measured from feedback beside the estimates without labels."""
    from cloud_registry.telemetry.field_store import field_report

    rep = field_report(store, model, version=version, since=since, scopes=("version",))
    out = []
    for r in rep.rows:
        est = r.estimate
        out.append(
            {
                "version": r.version,
                "escape": r.escape.to_dict(),
                "escape_est": est.escape if est is not None else None,
                "false_reject": r.false_reject.to_dict(),
                "false_reject_est": est.false_reject if est is not None else None,
            }
        )
    return out


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _print_table(reports: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"drift of {reports[0].model}")
    for col in ("version", "group", "windows", "frames", "devices", "statistic", "ref mean", "field mean"):
        table.add_column(col)
    for col in ("PSI", "threshold", "EMD", "windows drifted"):
        table.add_column(col, justify="right")
    for r in reports:
        for i, s in enumerate(r.stats):
            first = i == 0
            verdict = "[red]DRIFT[/red] " if s.drifted else ""
            table.add_row(
                f"v{r.version}" if first else "",
                (r.group or "-") if first else "",
                str(r.windows) if first else "",
                str(r.frames) if first else "",
                str(r.devices) if first else "",
                s.name,
                _fmt(s.ref_mean),
                _fmt(s.field_mean),
                verdict + _fmt(s.psi),
                _fmt(s.threshold),
                _fmt(s.emd),
                f"{s.windows_drifted}/{s.windows}",
            )
    Console(width=int(os.environ.get("COLUMNS", "160"))).print(table)


__all__ = ["drift", "ingest"]
