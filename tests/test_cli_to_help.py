"""Every command that takes ``--to`` names the station forms in its help the same way
(``station:DEV/ST`` and ``DEV~ST``, docs/stations.md), and each form it names is one the resolver
takes."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from cloud_registry.remote_config import ConfigTarget
from cloud_registry.station_targets import resolve_units
from edgeline.cli.main import cli
from edgeline.cli.target_help import CONFIG_TARGET_HELP, UNITS_HELP
from tests.test_cli_help import PATHS


def _command(path: tuple[str, ...]) -> click.Command:
    cmd: click.Command = cli
    for name in path:
        assert isinstance(cmd, click.Group)
        sub = cmd.get_command(click.Context(cmd), name)
        assert sub is not None
        cmd = sub
    return cmd


TAKES_TO = [p for p in PATHS if any("--to" in getattr(o, "opts", ()) for o in _command(p).params)]


def test_the_commands_that_take_to_are_found() -> None:
    names = {" ".join(p) for p in TAKES_TO}
    assert {"deploy", "rollback", "shadow promote", "config push", "config diff"} <= names


@pytest.mark.parametrize("path", TAKES_TO, ids=[" ".join(p) for p in TAKES_TO])
def test_the_to_help_names_the_station_forms(path: tuple[str, ...]) -> None:
    opt = next(o for o in _command(path).params if "--to" in getattr(o, "opts", ()))
    text = str(getattr(opt, "help", ""))
    assert "station:DEV/ST" in text and "DEV~ST" in text, text
    assert UNITS_HELP in text or CONFIG_TARGET_HELP in text, text  # one wording, not a paraphrase
    out = CliRunner().invoke(cli, [*path, "--help"], terminal_width=200).output
    assert "station:DEV/ST or DEV~ST" in out, out


def test_every_form_the_help_names_resolves() -> None:
    known = ["cell~a", "cell~b", "solo"]
    for target, units in {
        "station:cell/a": ["cell~a"],
        "cell~a": ["cell~a"],  # a bare address, as config push takes it
        "cell/a": ["cell~a"],
        "station:cell/a,cell/b": ["cell~a", "cell~b"],
        "device:cell": ["cell~a", "cell~b"],
        "device:solo,cell": ["solo", "cell~a", "cell~b"],
    }.items():
        assert resolve_units(target, known, lambda g: []) == units, target
    assert resolve_units("group:line", known, lambda g: ["solo"]) == ["solo"]
    for bad, message in {"cell~": "bad station 'cell~'", "~a": "bad station '~a'", "cell": "DEVICE~STATION"}.items():
        with pytest.raises(ValueError, match=message):
            resolve_units(bad, known, lambda g: [])
    for text in ("station:cell/a", "cell~a", "device:cell~a"):
        assert str(ConfigTarget.parse(text)) == "device:cell~a"
    assert str(ConfigTarget.parse("group:line")) == "group:line"
