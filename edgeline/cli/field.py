"""``edgeline field report``: how a model fares in production, from operator feedback and without it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from edgeline.cli.options import json_option, registry_options
from edgeline.cli.telemetry_common import DB, telemetry_exists, telemetry_url

if TYPE_CHECKING:
    from cloud_registry.telemetry.field_report import FieldReport

SCOPE_CHOICES = ("version", "group", "line", "shift", "light")


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise click.BadParameter(f"{what} must be numbers separated by commas, got {text!r}") from exc


@click.group()
def field() -> None:
    """Field escape and false-reject rates: measured from operator feedback, estimated without labels."""


@field.command()
@click.option("--model", "-m", required=True, help="Model name.")
@click.option("--version", "-V", type=click.IntRange(min=1), default=None, help="One version (default: all).")
@click.option("--group", default=None, help="Only the windows of this device group.")
@registry_options
@DB
@click.option("--hours", type=click.FloatRange(min=0, min_open=True), default=None, help="Only the last N hours.")
@click.option(
    "--reference-hours",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Learn the estimates' calibration from the feedback of windows older than N hours only.",
)
@click.option(
    "--by",
    "scopes",
    multiple=True,
    type=click.Choice(SCOPE_CHOICES),
    help="Rows per version, group, line, shift, lighting band (repeatable; default: all).",
)
@click.option("--min-parts", type=click.IntRange(min=1), default=30, show_default=True, help="Fewest parts per rate.")
@click.option("--escape-limit", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None)
@click.option("--false-reject-limit", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None)
@click.option("--shifts", default="6,14,22", show_default=True, help="Hours at which shifts start.")
@click.option("--utc-offset", type=click.FloatRange(-14, 14), default=0.0, show_default=True, help="Of the shifts.")
@click.option(
    "--light-edges", default="0.35,0.65", show_default=True, help="Mean brightness of dark | normal | bright."
)
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write a PNG.")
@json_option
def report(
    model: str,
    version: int | None,
    group: str | None,
    home: Path,
    store_url: str | None,
    artifacts_url: str | None,
    db: str | None,
    hours: float | None,
    reference_hours: float | None,
    scopes: tuple[str, ...],
    min_parts: int,
    escape_limit: float | None,
    false_reject_limit: float | None,
    shifts: str,
    utc_offset: float,
    light_edges: str,
    png: Path | None,
    as_json: bool,
) -> None:
    """Field report of MODEL: per version (and group, line, shift, lighting band), the field escape
    and false-reject rates measured from operator feedback with 95% intervals ("too little feedback
    to tell" below --min-parts parts), beside the estimates without labels from the defect-score
    histograms, and the slices significantly worse than the others (docs/drift.md)."""
    from cloud_registry.telemetry.field_report import SCOPES, FieldSettings, table_rows
    from cloud_registry.telemetry.field_slices import SliceSettings
    from cloud_registry.telemetry.field_store import field_report
    from cloud_registry.telemetry.store import open_telemetry_store

    hours_list = _floats(shifts, "--shifts")
    edges = _floats(light_edges, "--light-edges")
    if len(edges) != 2 or any(h != int(h) for h in hours_list):
        raise click.BadParameter("--light-edges takes two numbers and --shifts whole hours")
    try:
        slices = SliceSettings(
            shifts=tuple(int(h) for h in hours_list),
            utc_offset_h=utc_offset,
            light_edges=(edges[0], edges[1]),
            min_parts=min_parts,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    settings = FieldSettings(
        min_parts=min_parts, escape_limit=escape_limit, false_reject_limit=false_reject_limit, slices=slices
    )
    url = telemetry_url(home, db, store_url)
    if not telemetry_exists(url):
        raise click.ClickException(f"no telemetry database at {url} (run 'edgeline ingest' first, or pass --db)")
    store = open_telemetry_store(url)
    try:
        now = time.time()
        rep = field_report(
            store,
            model,
            settings,
            version=version,
            group=group,
            since=now - hours * 3600 if hours else None,
            reference_until=now - reference_hours * 3600 if reference_hours else None,
            reference_since=now - hours * 3600 if hours and reference_hours else None,
            scopes=scopes or SCOPES,
        )
    finally:
        store.close()
    if not rep.rows:
        raise click.ClickException(f"no windows of {model}" + (f" v{version}" if version else "") + " in the store")
    out_png = None
    if png is not None:
        from cloud_registry.telemetry.field_plot import render_field_png

        out_png = render_field_png(rep, png)
    if as_json:
        click.echo(json.dumps(rep.to_dict() | {"png": str(out_png) if out_png else None}))
        return
    _print(rep, table_rows(rep))
    if out_png is not None:
        click.echo(f"plot: {out_png}")


def _print(rep: FieldReport, rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    from cloud_registry.telemetry.field_report import TABLE_HEADER

    table = Table(title=f"field rates of {rep.model}")
    for col in TABLE_HEADER:
        table.add_column(col, justify="right" if col in ("frames", "feedback") else "left")
    for row in rows:
        table.add_row(*row)
    console = Console(width=200)
    console.print(table)
    for a in rep.slice_alerts:
        console.print(f"[red]worse slice[/red] {a.text()}")
    for r in rep.rows:
        if r.scope == "version":
            if (warning := r.totals.sampling_warning()) is not None:
                console.print(f"[yellow]v{r.version}[/yellow]: {warning}")
            for name, agrees in r.agreement().items():
                if agrees is False:
                    console.print(
                        f"[yellow]v{r.version}[/yellow]: the {name.replace('_', ' ')} estimate without labels lies "
                        "outside the interval measured from feedback: the calibration does not hold here"
                    )
            for rate in (r.escape, r.false_reject):
                if rate.status != "measured":
                    console.print(f"v{r.version} {rate.name.replace('_', ' ')}: {rate.text()}")
                if r.estimate is not None and r.estimate.status(rate.name) == "noisy":
                    what = rate.name.replace("_", " ")
                    console.print(f"v{r.version} {what} estimate without labels: {r.estimate.text(rate.name)}")
