"""``edgeline registry add|list|show|promote|alias``: models, versions, stages, aliases and lineage."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from cloud_registry.errors import RegistryError
from cloud_registry.store import STAGES, ModelVersion
from edgeline.cli.options import echo_json, json_option, registry_options
from edgeline.cli.registry_access import open_registry
from edgeline.cli.registry_alias import actor_name, alias
from edgeline.core.protocol.manifest import Manifest
from edgeline.core.protocol.signing import TrustStore


def _row(v: ModelVersion, stages: dict[str, int]) -> dict[str, Any]:
    return {
        "name": v.name,
        "version": v.version,
        "sha256": v.sha256,
        "size": v.size,
        "created_at": v.created_at,
        "parent": v.parent,
        "stages": sorted(s for s, n in stages.items() if n == v.version),
        "metrics": v.metrics,
        "note": v.note,
        "artifact": v.artifact_uri,
    }


@click.group()
def registry() -> None:
    """The model registry: signed bundles as versions that only go up, staging/production stages,
    lineage. Metadata in SQLite (or PostgreSQL), artifacts in a content-addressed directory."""


@registry.command("add")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@registry_options
@click.option(
    "--trust",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("keys/trust.json"),
    show_default=True,
    help="Trust store to verify the bundle's signature with.",
)
@click.option("--parent", type=int, default=None, help="Version this one was derived from (default: from lineage).")
@click.option("--note", default="", help="Free text kept with the version.")
@click.option("--no-selftest", is_flag=True, help="Skip loading the model and running its self-test.")
@json_option
def add(
    bundle: Path,
    home: Path,
    store_url: str | None,
    artifacts_url: str | None,
    trust: Path,
    parent: int | None,
    note: str,
    no_selftest: bool,
    as_json: bool,
) -> None:
    """Verify BUNDLE (signature, hashes, load and self-test) and register it as a new version."""
    store = TrustStore.load(trust)
    with open_registry(home, store_url, artifacts_url) as reg:
        v = reg.add_bundle(bundle, store, note=note, parent=parent, selftest=not no_selftest)
        row = _row(v, reg.store.stages(v.name))
    if as_json:
        echo_json(row)
    else:
        click.echo(f"registered {v.name} v{v.version}  sha256 {v.sha256[:12]}  {v.size} bytes")


@registry.command("list")
@registry_options
@json_option
def list_(home: Path, store_url: str | None, artifacts_url: str | None, as_json: bool) -> None:
    """Every model with its number of versions, latest version and stages."""
    with open_registry(home, store_url, artifacts_url) as reg:
        models = reg.store.list_models()
    if as_json:
        echo_json([{"name": m.name, "versions": m.versions, "latest": m.latest, "stages": m.stages} for m in models])
        return
    table = Table("model", "versions", "latest", *STAGES)
    for m in models:
        table.add_row(m.name, str(m.versions), str(m.latest), *(str(m.stages.get(s, "-")) for s in STAGES))
    Console().print(table)


@registry.command("show")
@click.argument("ref")
@registry_options
@json_option
def show(ref: str, home: Path, store_url: str | None, artifacts_url: str | None, as_json: bool) -> None:
    """REF is NAME (all versions) or NAME@VERSION|latest|ALIAS (one version and its lineage)."""
    with open_registry(home, store_url, artifacts_url) as reg:
        if "@" not in ref:
            stages = reg.store.stages(ref)
            rows = [_row(v, stages) for v in reg.store.list_versions(ref)]
            if not rows:
                raise RegistryError(f"model {ref} is not registered")
            lineage = None
        else:
            v = reg.resolve(ref)
            rows = [_row(v, reg.store.stages(v.name))]
            lineage = reg.lineage(v.name, v.version)
            m = reg.manifest(v)
            rows[0]["labels"] = list(m.labels)
            rows[0]["quantization"] = m.quantization.mode
            rows[0]["signed_by"] = v.envelope.get("signature", {}).get("key_id")
            rows[0]["line"] = _line_figures(m)
    if as_json:
        echo_json(rows[0] | {"lineage": lineage} if lineage is not None else rows)
        return
    table = Table("version", "sha256", "size", "created", "parent", "stages", "note")
    for r in rows:
        table.add_row(
            str(r["version"]),
            str(r["sha256"])[:12],
            str(r["size"]),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(float(r["created_at"]))),
            str(r["parent"] or "-"),
            ",".join(r["stages"]) or "-",
            str(r["note"]),
        )
    console = Console()
    line = rows[0].get("line") if len(rows) == 1 else None
    if isinstance(line, dict):
        for text in line["summary"]:
            console.print(text)
    console.print(table)
    if lineage is not None:
        console.print(f"lineage: ancestors {lineage['ancestors'] or '-'}, children {lineage['children'] or '-'}")
        if lineage["recorded"]:
            console.print_json(data=lineage["recorded"])


@registry.command("promote")
@click.argument("ref")
@click.option("--stage", type=click.Choice(STAGES), required=True, help="Stage (alias) to point at this version.")
@registry_options
def promote(ref: str, stage: str, home: Path, store_url: str | None, artifacts_url: str | None) -> None:
    """Point STAGE at REF (NAME@VERSION). Deploy it later with 'edgeline deploy NAME@STAGE'. A stage is
    an alias like any other ('edgeline registry alias')."""
    with open_registry(home, store_url, artifacts_url) as reg:
        v = reg.resolve(ref)
        reg.promote(v.name, v.version, stage, actor_name(None))
    click.echo(f"{v.name}@{stage} -> v{v.version}")


def _line_figures(m: Manifest) -> dict[str, object]:
    """Escape and false reject first: the figures a line engineer judges a model by."""
    met = m.metrics
    lines: list[str] = []
    status = "UNVERIFIED (forced past the gate)" if m.unverified else "verified by the line gate"
    if m.operating_point is None:
        status = "no operating point (gated on int8 fidelity only)"
    lines.append(f"[bold]{m.name} v{m.version}: {status}[/bold]")
    for key, what in (("false_reject", "false reject"), ("escape", "escape")):
        n = int(met.get(f"{key}_n", 0))
        if key in met and n:
            lines.append(
                f"{what}: {100 * met[key]:.2f}% of {n} held-out parts (95% upper bound {100 * met[f'{key}_high']:.2f}%)"
            )
        elif m.operating_point is not None:
            lines.append(f"{what}: UNMEASURED (no {'good' if key == 'false_reject' else 'defect'} examples)")
    if m.operating_point is not None:
        op = m.operating_point
        lines.append(f"operating point: defect score >= {op.threshold:.4f} ({op.target} {100 * op.target_value:g}%)")
    lines += [f"[red]unverified: {why}[/red]" for why in m.unverified]
    return {
        "summary": lines,
        "unverified": list(m.unverified),
        "operating_point": m.operating_point.model_dump() if m.operating_point else None,
    }


registry.add_command(alias)
