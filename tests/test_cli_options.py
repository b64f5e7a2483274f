"""One spelling per option across every command, and the project's errors mapped once.

The shared groups live in :mod:`edgeline.cli.options`; the root group maps every
:class:`~edgeline.core.errors.EdgelineError` to exit code 1 (or one JSON object with ``--json``)."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cloud_registry.errors import RegistryError
from cloud_registry.security.errors import SecurityError
from converters.errors import ConverterError
from edge_agent.errors import EdgeAgentError
from edgeline.cli import options
from edgeline.cli.main import cli
from edgeline.core.errors import EdgelineError
from edgeline.demo.errors import DemoError
from firmware_configs.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
#: spellings replaced by the shared groups; still accepted where they were, hidden from --help
#: (``--broker HOST:PORT`` is the shared group's broker list now)
RETIRED = {"--host", "--port", "--dir", "--ca", "--cert", "--key", "--key-dir"}
#: the one command where a retired spelling means something else: a host name written into a certificate
OTHER_MEANING = {("broker cert issue", "--host")}


def commands(group: click.Group = cli, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None
        path = f"{prefix}{name}"
        if isinstance(cmd, click.Group):
            yield from commands(cmd, f"{path} ")
        else:
            yield path, cmd


COMMANDS = dict(commands())


def visible_options(cmd: click.Command) -> Iterator[click.Option]:
    for p in cmd.params:
        if isinstance(p, click.Option) and not p.hidden:
            yield p


def test_the_walk_sees_every_command() -> None:
    assert {"train", "deploy", "keys publish-revocations", "broker cert issue", "agent run"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_retired_spelling_is_offered(name: str) -> None:
    offered = {o for p in visible_options(COMMANDS[name]) for o in p.opts}
    bad = {o for o in offered & RETIRED if (name, o) not in OTHER_MEANING}
    assert not bad, f"'edgeline {name}' offers {sorted(bad)}: use the shared option group of edgeline.cli.options"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_json_and_keys_options_are_the_shared_ones(name: str) -> None:
    for p in visible_options(COMMANDS[name]):
        if "--json" in p.opts:
            assert p.callback is options._remember_json, f"'edgeline {name} --json' is a home-made option"
        if "--keys" in p.opts:
            assert p.envvar == "EDGELINE_KEYS", f"'edgeline {name} --keys' is a home-made option"
        assert not any(o.endswith(("-keys-dir", "-key-dir")) for o in p.opts), (name, p.opts)


def test_a_retired_spelling_still_works(tmp_path: Path) -> None:
    runner = CliRunner()
    keys = tmp_path / "keys"
    assert runner.invoke(cli, ["keys", "init", "--keys", str(keys)]).exit_code == 0
    new = runner.invoke(cli, ["keys", "show", "--keys", str(keys)])
    old = runner.invoke(cli, ["keys", "show", "--dir", str(keys)])
    assert new.exit_code == old.exit_code == 0
    assert json.loads(new.output) == json.loads(old.output)


def test_every_package_root_derives_from_the_project_root() -> None:
    for root in (RegistryError, ConverterError, ConfigError, EdgeAgentError, DemoError, SecurityError):
        assert issubclass(root, EdgelineError), root
        assert root("x").reason == root.default_reason != EdgelineError.default_reason


def test_a_project_error_is_printed_once_without_a_traceback(tmp_path: Path) -> None:
    home = ["--home", str(tmp_path)]
    runner = CliRunner()
    assert runner.invoke(cli, ["registry", "list", *home]).exit_code == 0  # creates the registry
    text = runner.invoke(cli, ["registry", "show", "nosuch@1", *home])
    assert text.exit_code == 1
    assert text.output.count("nosuch") == 1 and text.output.startswith("Error: ")
    assert "Traceback" not in text.output
    as_json = runner.invoke(cli, ["registry", "show", "nosuch@1", *home, "--json"])
    assert as_json.exit_code == 1
    doc = json.loads(as_json.output)
    assert doc["ok"] is False and doc["kind"] == "NotFound" and doc["reason"] == "not_found"
    assert "nosuch" in doc["error"]


def _converts_project_errors(handler: ast.ExceptHandler) -> bool:
    """``except <project error> as exc: raise click.ClickException(str(exc))``: a second mapping."""
    if handler.type is None or len(handler.body) != 1 or not isinstance(handler.body[0], ast.Raise):
        return False
    raised = handler.body[0].exc
    if raised is None or ast.unparse(raised) != "click.ClickException(str(exc))":
        return False
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(ast.unparse(n).endswith("Error") and ast.unparse(n) != "ValueError" for n in names)


def test_no_command_maps_project_errors_itself() -> None:
    found = []
    for path in sorted((ROOT / "edgeline" / "cli").glob("*.py")):
        tree = ast.parse(path.read_text("utf-8"))
        found += [
            f"{path.relative_to(ROOT)}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.ExceptHandler) and _converts_project_errors(node)
        ]
    assert found == [], f"let the root group map these: {found}"
