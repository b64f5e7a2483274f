"""The registry's record of config pushes on SQLite and on the real PostgreSQL server (throwaway
schema): appended, newest first, per target, never two pushes with one version."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_registry.errors import Conflict, RegistryError
from cloud_registry.remote_config import ConfigTarget, overlay_from_toml
from cloud_registry.store import RegistryStore, open_store
from cloud_registry.store.config_pushes import ConfigPush
from tests.delivery.test_registry_store import PG_URL, _pg_available


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryStore]:
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'reg.db'}")
        yield s
        s.close()
        return
    if not _pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL}")
    s = open_store(f"{PG_URL}?schema=edgeline_test_{uuid.uuid4().hex[:10]}")
    try:
        yield s
    finally:
        s.drop_schema()  # type: ignore[attr-defined]
        s.close()


def push(version: int, target: str, actor: str = "alice") -> ConfigPush:
    env = {"body": {"version": version, "config": {"decision": {"threshold": 0.4}}}, "signature": {}}
    return ConfigPush(version, target, actor, 1000.0 + version, f"note {version}", env)


def test_pushes_are_recorded_with_who_and_when(store: RegistryStore) -> None:
    v1, v2, v3 = (store.next_sequence() for _ in range(3))
    store.record_config_push(push(v1, "device:cam-1"))
    store.record_config_push(push(v2, "group:line-a", actor="bob"))
    store.record_config_push(push(v3, "device:cam-1"))
    assert [p.version for p in store.config_pushes()] == [v3, v2, v1]
    assert [p.version for p in store.config_pushes("device:cam-1")] == [v3, v1]
    (last,) = store.config_pushes("device:cam-1", limit=1)
    assert (last.actor, last.at, last.note, last.overlay) == (
        "alice",
        1000.0 + v3,
        f"note {v3}",
        {"decision": {"threshold": 0.4}},
    )
    assert store.config_pushes("group:line-a")[0].actor == "bob"
    assert store.config_pushes("device:nobody") == []
    with pytest.raises(Conflict, match="already recorded"):  # a version is pushed once
        store.record_config_push(push(v1, "device:cam-2"))
    assert len(store.config_pushes()) == 3


def test_targets_and_files_are_checked_before_signing() -> None:
    assert str(ConfigTarget.parse("cam-1")) == "device:cam-1"
    assert str(ConfigTarget.parse("group:line-a")) == "group:line-a"
    for bad in ("rack:1", "group:", "device:a/b", "group:a+b", "x" * 65):
        with pytest.raises(RegistryError):
            ConfigTarget.parse(bad)
    assert overlay_from_toml("[telemetry]\nwindow_s = 5.0\n") == {"telemetry": {"window_s": 5.0}}
    for text, message in [
        ("", "no table"),
        ("[a\n", "not valid TOML"),
        ("x = 1\n", "holds tables"),
        ("[sinks.webhook]\nurl = '" + "a" * 2000 + "'\n", "at most 1024"),
        ("# " + "x" * 40_000, "larger than"),
    ]:
        with pytest.raises(RegistryError, match=message):
            overlay_from_toml(text)
