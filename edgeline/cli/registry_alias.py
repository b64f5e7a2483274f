"""``edgeline registry alias set|delete|list``: MLflow-style aliases over versions, every move recorded."""

from __future__ import annotations

import getpass
import os
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from cloud_registry.errors import RegistryError
from edgeline.cli.options import echo_json, json_option, registry_options
from edgeline.cli.registry_access import open_registry

by_option = click.option(
    "--by",
    "actor",
    default=None,
    help="Who moves the alias, as recorded (default: $EDGELINE_USER, else the login name).",
)
note_option = click.option("--note", default="", help="Why, kept with the move.")


def actor_name(given: str | None) -> str:
    if given:
        return given
    env = os.environ.get("EDGELINE_USER")
    if env:
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return "unknown"


def _name_only(name: str) -> str:
    if "@" in name:
        raise click.BadParameter("give the model NAME (without @)", param_hint="NAME")
    return name


@click.group("alias")
def alias() -> None:
    """Names for versions (champion, challenger, staging, production, any name): deploy and rollback
    take NAME@ALIAS; every move is recorded with who and when (`alias list --history`)."""


@alias.command("set")
@click.argument("ref")
@click.argument("alias_name", metavar="ALIAS")
@by_option
@note_option
@registry_options
@json_option
def set_alias(
    ref: str,
    alias_name: str,
    actor: str | None,
    note: str,
    home: Path,
    store_url: str | None,
    artifacts_url: str | None,
    as_json: bool,
) -> None:
    """Point ALIAS at REF (NAME@VERSION, or NAME@ANOTHER_ALIAS to copy it)."""
    who = actor_name(actor)
    with open_registry(home, store_url, artifacts_url) as reg:
        v = reg.resolve(ref)
        previous = reg.set_alias(v.name, alias_name, v.version, who, note)
    doc = {"name": v.name, "alias": alias_name, "version": v.version, "previous": previous, "by": who}
    if as_json:
        echo_json(doc)
        return
    was = f" (was v{previous})" if previous is not None else ""
    click.echo(f"{v.name}@{alias_name} -> v{v.version}{was}, by {who}")


@alias.command("delete")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@by_option
@note_option
@registry_options
@json_option
def delete_alias(
    name: str,
    alias_name: str,
    actor: str | None,
    note: str,
    home: Path,
    store_url: str | None,
    artifacts_url: str | None,
    as_json: bool,
) -> None:
    """Remove ALIAS from model NAME (recorded like a move)."""
    who = actor_name(actor)
    with open_registry(home, store_url, artifacts_url) as reg:
        previous = reg.delete_alias(_name_only(name), alias_name, who, note)
    if as_json:
        echo_json({"name": name, "alias": alias_name, "version": None, "previous": previous, "by": who})
        return
    click.echo(f"{name}@{alias_name} removed (was v{previous}), by {who}")


@alias.command("list")
@click.argument("name")
@click.option("--history", is_flag=True, help="Also every move of each alias, oldest first.")
@registry_options
@json_option
def list_aliases(
    name: str, history: bool, home: Path, store_url: str | None, artifacts_url: str | None, as_json: bool
) -> None:
    """The aliases of model NAME (and, with --history, who moved them when)."""
    with open_registry(home, store_url, artifacts_url) as reg:
        name = _name_only(name)
        if not reg.store.list_versions(name):
            raise RegistryError(f"model {name} is not registered", reason="not_found")
        current = reg.store.aliases(name)
        moves = reg.alias_moves(name) if history else []
    if as_json:
        doc: dict[str, object] = {"name": name, "aliases": current}
        if history:
            doc["history"] = [m.__dict__ for m in moves]
        echo_json(doc)
        return
    table = Table("alias", "version")
    for a, v in sorted(current.items()):
        table.add_row(a, f"v{v}")
    console = Console()
    console.print(table if current else f"model {name} has no aliases")
    if history:
        h = Table("when", "alias", "move", "by", "note")
        for m in moves:
            move = f"v{m.previous or '-'} -> " + ("removed" if m.version is None else f"v{m.version}")
            h.add_row(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.at)), m.alias, move, m.actor, m.note)
        console.print(h)
