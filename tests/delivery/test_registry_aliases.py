"""Aliases over versions (MLflow-style): set, move, delete, every move recorded with who and when, on
SQLite and the real PostgreSQL; resolved by NAME@ALIAS; the CLI; deploy and rollback by alias against a
real broker and in-process devices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cloud_registry.errors import NotFound, RegistryError
from cloud_registry.registry import Registry
from cloud_registry.store import RegistryStore
from edgeline.cli.main import cli
from tests.delivery.conftest import BuiltBundle, Cloud, wait_for
from tests.delivery.test_cli import Edgeline
from tests.delivery.test_registry_store import store, version  # noqa: F401  (the two-backend fixture)


def test_aliases_move_and_every_move_is_recorded(store: RegistryStore) -> None:  # noqa: F811
    for v in (1, 2, 3):
        store.add_version(version(v))
    assert store.set_alias("m", "champion", 1, "ana") is None
    assert store.set_alias("m", "challenger", 2, "ben", "first field trial") is None
    assert store.set_alias("m", "champion", 2, "ana", "promoted on field evidence") == 1
    assert store.aliases("m") == {"champion": 2, "challenger": 2}
    assert store.delete_alias("m", "challenger", "ben") == 2
    store.set_stage("m", "production", 3, "ci")  # a stage is an alias, its move recorded too
    assert store.aliases("m") == {"champion": 2, "production": 3} == store.stages("m")
    moves = store.alias_moves("m")
    assert [(m.alias, m.previous, m.version, m.actor) for m in moves] == [
        ("champion", None, 1, "ana"),
        ("challenger", None, 2, "ben"),
        ("champion", 1, 2, "ana"),
        ("challenger", 2, None, "ben"),
        ("production", None, 3, "ci"),
    ]
    assert moves[2].note == "promoted on field evidence" and all(m.at > 0 for m in moves)
    assert [m.version for m in store.alias_moves("m", "champion")] == [1, 2]
    assert store.list_models()[0].stages == {"champion": 2, "production": 3}


@pytest.mark.parametrize("bad", ["", "Champion", "1st", "latest", "a b", "x" * 33, "ch@mp", "../x", "a.b"])
def test_bad_alias_names_are_refused(store: RegistryStore, bad: str) -> None:  # noqa: F811
    store.add_version(version(1))
    with pytest.raises(RegistryError, match="bad alias") as info:
        store.set_alias("m", bad, 1)
    assert info.value.reason == "bad_alias"
    assert store.aliases("m") == {} and store.alias_moves("m") == []


def test_an_alias_needs_a_registered_version_and_an_existing_alias_to_delete(store: RegistryStore) -> None:  # noqa: F811
    store.add_version(version(1))
    with pytest.raises(NotFound):
        store.set_alias("m", "champion", 7)
    with pytest.raises(NotFound, match="no alias 'champion'"):
        store.delete_alias("m", "champion")
    assert store.alias_moves("m") == []


def test_resolve_by_alias(tmp_path: Path, bundles: dict[int, BuiltBundle], trust: Any) -> None:
    reg = Registry.open(f"sqlite:///{tmp_path / 'r.db'}", f"file://{tmp_path / 'art'}")
    reg.add_bundle(bundles[1].path, trust)
    reg.add_bundle(bundles[2].path, trust)
    reg.set_alias("tiny", "champion", 2, "ana")
    assert reg.resolve("tiny@champion").version == 2
    with pytest.raises(NotFound, match="alias set tiny@N challenger"):
        reg.resolve("tiny@challenger")
    reg.close()


def _cli(*args: str) -> Any:
    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return res


def test_alias_commands(tmp_path: Path, bundles: dict[int, BuiltBundle], key_dir: Path) -> None:
    home = ["--home", str(tmp_path / "home")]
    trust = ["--trust", str(key_dir / "trust.json")]
    for v in (1, 2):
        assert _cli("registry", "add", str(bundles[v].path), *home, *trust).exit_code == 0
    out = _cli("registry", "alias", "set", "tiny@1", "champion", "--by", "ana", *home)
    assert out.exit_code == 0 and "tiny@champion -> v1, by ana" in out.output
    moved = json.loads(_cli("registry", "alias", "set", "tiny@2", "champion", "--by", "ana", *home, "--json").output)
    assert moved == {"name": "tiny", "alias": "champion", "version": 2, "previous": 1, "by": "ana"}
    # copy one alias onto another
    assert _cli("registry", "alias", "set", "tiny@champion", "challenger", "--by", "ben", *home).exit_code == 0
    listed = json.loads(_cli("registry", "alias", "list", "tiny", "--history", *home, "--json").output)
    assert listed["aliases"] == {"champion": 2, "challenger": 2}
    assert [(h["alias"], h["version"], h["actor"]) for h in listed["history"]] == [
        ("champion", 1, "ana"),
        ("champion", 2, "ana"),
        ("challenger", 2, "ben"),
    ]
    shown = json.loads(_cli("registry", "show", "tiny@challenger", *home, "--json").output)
    assert shown["version"] == 2 and shown["stages"] == ["challenger", "champion"]
    gone = _cli("registry", "alias", "delete", "tiny", "challenger", "--by", "ben", *home)
    assert gone.exit_code == 0 and "removed (was v2)" in gone.output
    table = _cli("registry", "alias", "list", "tiny", "--history", *home).output
    assert "champion" in table and "removed" in table and "ben" in table
    # bad input: one clear line, exit 1 (or 2 for usage)
    bad = _cli("registry", "alias", "set", "tiny@1", "Bad Name", *home)
    assert bad.exit_code == 1 and "bad alias" in bad.output
    assert _cli("registry", "alias", "delete", "tiny", "nosuch", *home).exit_code == 1
    assert _cli("registry", "alias", "list", "nosuch", *home).exit_code == 1
    assert _cli("registry", "alias", "list", "tiny@1", *home).exit_code == 2
    # who, when no --by: $EDGELINE_USER
    res = CliRunner().invoke(cli, ["registry", "alias", "set", "tiny@1", "old", *home], env={"EDGELINE_USER": "cy"})
    assert res.exit_code == 0 and "by cy" in res.output


def test_deploy_and_rollback_by_alias(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any], tmp_path: Path
) -> None:
    e = Edgeline(cloud, tmp_path / "home")
    for v in (1, 2):
        e("registry", "add", str(bundles[v].path), *e.common, *e.trust)
    e("registry", "alias", "set", "tiny@1", "champion", "--by", "ana", *e.common)
    e("registry", "alias", "set", "tiny@2", "challenger", "--by", "ana", *e.common)
    devs = [cloud.device(d, groups=("line-7",), frames=frames) for d in ("a-1", "a-2")]
    done = e.json("deploy", "tiny@champion", "--to", "group:line-7", *e.common, *e.broker, *e.keys)
    assert done["status"] == "completed" and wait_for(lambda: [d.version() for d in devs] == [1, 1])
    assert e.json("deploy", "tiny@challenger", "--to", "group:line-7", *e.common, *e.broker, *e.keys)["status"] == (
        "completed"
    )
    assert wait_for(lambda: [d.version() for d in devs] == [2, 2])
    back = e.json("rollback", "tiny@champion", "--to", "group:line-7", *e.common, *e.broker, *e.keys)
    assert back["status"] == "completed" and wait_for(lambda: [d.version() for d in devs] == [1, 1])
