"""Every command and subcommand of ``edgeline`` answers ``--help`` with real text."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from edgeline.cli.main import COMMANDS, cli


def walk(cmd: click.Command, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    out = [path]
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None, f"{' '.join(path)} lists {name} but cannot load it"
            out += walk(sub, (*path, name))
    return out


def all_paths() -> list[tuple[str, ...]]:
    ctx = click.Context(cli)
    paths: list[tuple[str, ...]] = []
    for name in sorted(COMMANDS):
        cmd = cli.get_command(ctx, name)
        assert cmd is not None
        paths += walk(cmd, (name,))
    return paths


PATHS = all_paths()


def test_root_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) for p in PATHS])
def test_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    # a help text beyond the usage line: the command says what it does
    body = result.output.split("\n", 2)[-1].strip()
    assert len(body) > 40, f"'edgeline {' '.join(path)} --help' says almost nothing: {result.output!r}"


def test_unknown_command_is_a_clear_error() -> None:
    result = CliRunner().invoke(cli, ["frobnicate"])
    assert result.exit_code != 0
    assert "No such command" in result.output
