"""The registry store on SQLite and on the real PostgreSQL server (throwaway schema), the artifact
store, and the registry facade over both."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_registry.artifacts import FileArtifactStore, open_artifacts
from cloud_registry.errors import BackendError, Conflict, NotFound, RegistryError
from cloud_registry.registry import Registry
from cloud_registry.store import ModelVersion, RegistryStore, RolloutRow, open_store
from edgeline.core.protocol.signing import TrustStore
from tests.delivery.conftest import BuiltBundle

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryStore]:
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'reg.db'}")
        yield s
        s.close()
        return
    if not _pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL}")
    schema = f"edgeline_test_{uuid.uuid4().hex[:10]}"
    s = open_store(f"{PG_URL}?schema={schema}")
    try:
        yield s
    finally:
        s.drop_schema()  # type: ignore[attr-defined]
        s.close()


def version(v: int, name: str = "m", parent: int | None = None) -> ModelVersion:
    return ModelVersion(
        name, v, f"{v:064x}", 10 * v, {"body": {"v": v}}, f"file:///x/{v}", 1.0 * v, parent, {"data": "d"}, {"acc": 0.9}
    )


def test_versions_stages_sequence(store: RegistryStore) -> None:
    store.add_version(version(1))
    store.add_version(version(2, parent=1))
    with pytest.raises(Conflict, match="not above"):
        store.add_version(version(2))
    with pytest.raises(Conflict):
        store.add_version(version(1))
    assert store.get_version("m", 2).parent == 1
    assert store.get_version("m", 2).envelope == {"body": {"v": 2}}
    with pytest.raises(NotFound):
        store.get_version("m", 9)
    store.set_stage("m", "production", 1)
    store.set_stage("m", "staging", 2)
    store.set_stage("m", "production", 2)
    assert store.stages("m") == {"production": 2, "staging": 2}
    with pytest.raises(Conflict):
        store.set_stage("m", "canary", 1)
    with pytest.raises(NotFound):
        store.set_stage("m", "staging", 7)
    [summary] = store.list_models()
    assert (summary.name, summary.versions, summary.latest) == ("m", 2, 2)
    seqs = [store.next_sequence() for _ in range(5)]
    assert seqs == sorted(set(seqs)) and seqs[0] > 1_600_000_000_000  # clock-floored: survives a lost DB


def test_rollouts_and_controls(store: RegistryStore) -> None:
    store.put_rollout(RolloutRow("r1", "running", {"a": 1}, 1.0, 1.0))
    with pytest.raises(Conflict):
        store.put_rollout(RolloutRow("r1", "running", {}, 1.0, 1.0))
    store.save_rollout("r1", "paused", {"a": 2}, runner_seen=5.0)
    row = store.get_rollout("r1")
    assert (row.status, row.doc, row.runner_seen) == ("paused", {"a": 2}, 5.0)
    assert store.take_control("r1") is None
    store.request_control("r1", "abort")
    assert store.take_control("r1") == "abort"
    assert store.take_control("r1") is None
    with pytest.raises(NotFound):
        store.request_control("nope", "pause")
    assert [r.id for r in store.list_rollouts()] == ["r1"]


def test_devices(store: RegistryStore) -> None:
    store.record_event("d1", {"kind": "committed"})
    store.upsert_device("d1", {"online": True}, 5.0)
    store.upsert_device("d2", {"online": False}, 6.0)
    rows = {r.device_id: r for r in store.list_devices()}
    assert rows["d1"].last_event == {"kind": "committed"} and rows["d1"].state == {"online": True}
    assert rows["d2"].last_seen == 6.0


def test_bad_urls() -> None:
    with pytest.raises(BackendError, match="unsupported"):
        open_store("mysql://x")
    with pytest.raises(BackendError, match="schema"):
        open_store(f"{PG_URL}?schema=Robert'); DROP TABLE x;--")
    with pytest.raises(BackendError, match="not implemented"):
        open_artifacts("s3://bucket")
    with pytest.raises(BackendError, match="unsupported"):
        open_artifacts("ftp://x")


def test_artifact_store_is_content_addressed_and_verified(tmp_path: Path) -> None:
    a = FileArtifactStore(tmp_path / "art")
    uri = a.put(b"hello model")
    sha = uri.rsplit("/", 1)[1]
    assert a.get(sha) == b"hello model" and a.exists(sha)
    assert a.put(b"hello model") == uri  # idempotent
    (tmp_path / "art" / sha[:2] / sha).write_bytes(b"tampered")
    with pytest.raises(BackendError, match="corrupt"):
        a.get(sha)
    with pytest.raises(NotFound):
        a.get("0" * 64)
    with pytest.raises(BackendError, match="invalid"):
        a.get("../../etc/passwd")


def test_registry_facade(tmp_path: Path, bundles: dict[int, BuiltBundle], trust: TrustStore) -> None:
    reg = Registry.open(f"sqlite:///{tmp_path / 'r.db'}", f"file://{tmp_path / 'art'}")
    v1 = reg.add_bundle(bundles[1].path, trust)
    reg.add_bundle(bundles[2].path, trust, parent=1, note="retrained on drift")
    with pytest.raises(Conflict):
        reg.add_bundle(bundles[1].path, trust)
    assert reg.artifact(v1) == bundles[1].data
    assert reg.manifest(v1) == bundles[1].manifest
    reg.promote("tiny", 1, "production")
    assert reg.resolve("tiny@production").version == 1
    assert reg.resolve("tiny@latest").version == 2
    assert reg.resolve("tiny@2").note == "retrained on drift"
    assert reg.lineage("tiny", 2)["ancestors"] == [1] and reg.lineage("tiny", 1)["children"] == [2]
    for bad in ("tiny", "tiny@x", "../x@1"):
        with pytest.raises(RegistryError):
            reg.resolve(bad)
    with pytest.raises(NotFound):
        reg.resolve("tiny@staging")
    # a tampered bundle is refused before anything is stored
    evil = tmp_path / "evil"
    shutil.copytree(bundles[3].path, evil)
    (evil / "model.onnx").write_bytes(bundles[3].data[:-1] + b"\x00")
    with pytest.raises(RegistryError, match="refused"):
        reg.add_bundle(evil, trust)
    assert [v.version for v in reg.store.list_versions("tiny")] == [1, 2]
    reg.close()
