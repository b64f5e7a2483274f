"""Fuzz tests of what the device reads back from its own disk after a crash or a corrupt write (the
updater record, a saved offer, a bundle's manifest, the trust store, the revocation list, the status
file, the pseudonym secret), of the chunk handler that takes artifact bytes off the broker, and of the
fleet view's handlers on the cloud side. Only the packages' own errors may come out; a chunk is
never taken unless it matches its signed hash."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_registry.fleet import FleetWatcher
from converters.keys import KeyPaths
from edge_agent.bundle import open_bundle
from edge_agent.errors import EdgelineError
from edge_agent.status import StatusError, read_status
from edge_agent.telemetry.privacy import PrivacyError, load_secret
from edge_agent.updater.download import ChunkDownload
from edge_agent.updater.link import load_trust
from edge_agent.updater.machine import Pending, Record, SlotInfo
from edge_agent.updater.slots import SlotDisk
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.delivery import EventKind, LastEvent, UpdaterState
from edgeline.core.protocol.manifest import artifact_for
from edgeline.core.protocol.signing import TrustStore
from edgeline.core.protocol.topics import Topics
from tests.fuzz.conftest import fuzz_settings, json_values, mutated, payloads

TOPICS = Topics()


def record_doc() -> dict[str, Any]:
    info = SlotInfo("tiny", 2, "ab" * 32, 7)
    rec = Record(
        state=UpdaterState.TRIAL,
        active="A",
        slots={"A": info, "B": SlotInfo("tiny", 3, "cd" * 32, 8)},
        pending=Pending(8, "tiny", 3, "cd" * 32, 4096, "B", started_at=1.0, trial_started_at=2.0),
        sequence=8,
        last=LastEvent(kind=EventKind.ACTIVATED, sequence=8, ts=2.0),
    )
    return rec.to_dict()


@fuzz_settings()
@given(st.data())
def test_updater_records_load_or_raise_edge_agent_errors(data: st.DataObject) -> None:
    doc = data.draw(mutated(record_doc(), max_mutations=3))
    try:
        rec = Record.from_dict(doc) if isinstance(doc, dict) else Record.from_dict({"schema": doc})
    except EdgelineError:
        return
    assert Record.from_dict(rec.to_dict()) == rec


@fuzz_settings()
@given(payloads)
def test_updater_record_files_with_any_bytes(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    disk = SlotDisk(tmp_path_factory.mktemp("state"))
    disk.record_path.write_bytes(raw)
    with contextlib.suppress(EdgelineError):
        disk.load_record()


@fuzz_settings()
@given(st.data())
def test_bundles_with_a_corrupt_manifest(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path, key_dir: Path, data: st.DataObject
) -> None:
    env = json.loads((tiny_bundle / "manifest.json").read_text())
    doc = data.draw(mutated(env, max_mutations=2) | json_values)
    raw = data.draw(st.sampled_from([json.dumps(doc).encode()]) | payloads)
    d = tmp_path_factory.mktemp("bundle")
    (d / "model.onnx").write_bytes((tiny_bundle / "model.onnx").read_bytes())
    (d / "manifest.json").write_bytes(raw)
    trust = TrustStore.load(KeyPaths(key_dir).trust)
    try:
        bundle = open_bundle(d, trust, check_expiry=False)
    except EdgelineError:
        return
    assert bundle.manifest.to_body() == env["body"] or json.loads(raw) == env  # only the signed manifest opens


@fuzz_settings()
@given(payloads)
def test_trust_and_revocation_files_with_any_bytes(
    tmp_path_factory: pytest.TempPathFactory, key_dir: Path, raw: bytes
) -> None:
    d = tmp_path_factory.mktemp("trust")
    (d / "trust.json").write_bytes(raw)
    with contextlib.suppress(EdgelineError):
        TrustStore.load(d / "trust.json")
    disk = SlotDisk(d)
    disk.revocations_path.write_bytes(raw)  # a corrupt revocation list is ignored, never fatal
    store = load_trust(KeyPaths(key_dir).trust, disk)
    assert store.revocation_serial == -1 and not store.revoked


@fuzz_settings()
@given(payloads)
def test_status_files_and_secrets_with_any_bytes(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    d = tmp_path_factory.mktemp("misc")
    (d / "status.json").write_bytes(raw)
    with contextlib.suppress(StatusError):
        read_status(d / "status.json")
    (d / "secret").write_bytes(raw)
    try:
        secret = load_secret(d / "secret")
    except PrivacyError:
        return
    assert len(secret) >= 16


# -- chunks off the broker ------------------------------------------------------------------------------
class FakeSubscriber:
    """Records (un)subscriptions; a pure stand-in for the MQTT link, not the thing under test."""

    def __init__(self) -> None:
        self.subscribed: set[str] = set()

    def subscribe(self, topic_filter: str, handler: Any, qos: int = 1) -> None:
        self.subscribed.add(topic_filter)

    def unsubscribe(self, topic_filter: str) -> None:
        self.subscribed.discard(topic_filter)

    def subscribe_many(self, topic_filters: list[str], handler: Any, qos: int = 1) -> None:
        self.subscribed.update(topic_filters)

    def unsubscribe_many(self, topic_filters: list[str]) -> None:
        self.subscribed.difference_update(topic_filters)


ARTIFACT_DATA = os.urandom(5 * 1024 + 300)
ARTIFACT = artifact_for(ARTIFACT_DATA, chunk_size=1024)


def chunk(i: int) -> bytes:
    return ARTIFACT_DATA[i * 1024 : (i + 1) * 1024]


message = st.one_of(
    st.integers(0, ARTIFACT.chunk_count - 1).map(lambda i: (TOPICS.artifact_chunk(ARTIFACT.sha256, i), chunk(i))),
    st.tuples(st.integers(0, ARTIFACT.chunk_count + 2), payloads).map(
        lambda t: (TOPICS.artifact_chunk(ARTIFACT.sha256, t[0]), t[1])
    ),
    st.tuples(st.text(max_size=60), payloads),
    st.tuples(st.integers(0, 3), st.binary(max_size=1024)).map(
        lambda t: (TOPICS.artifact_chunk("cd" * 32, t[0]), t[1])
    ),
)


@fuzz_settings()
@given(st.lists(message, max_size=25))
def test_the_chunk_handler_takes_only_verified_bytes(
    tmp_path_factory: pytest.TempPathFactory, messages: list[tuple[str, bytes]]
) -> None:
    outcome: dict[str, Any] = {}
    dl = ChunkDownload(
        part=tmp_path_factory.mktemp("dl") / "x.part",
        artifact=ARTIFACT,
        topics=TOPICS,
        sub=FakeSubscriber(),
        window=3,
        on_done=lambda: outcome.setdefault("done", True),
        on_fail=lambda reason, detail: outcome.setdefault("failed", reason),
    )
    dl.scan()
    dl.start()
    for topic, payload in messages:
        dl._on_chunk(topic, payload, True)  # a handler on paho's thread: must never raise
    if "failed" in outcome:
        assert outcome["failed"] in ("hash_mismatch", "length_mismatch")
    if outcome.get("done"):
        assert hashlib.sha256(dl.part.read_bytes()).hexdigest() == ARTIFACT.sha256
    dl.cancel()


# -- the cloud's fleet view --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fleet() -> FleetWatcher:
    return FleetWatcher(MqttLink(LinkSettings(client_id="fuzz-fleet")), TOPICS)  # never connected


@fuzz_settings()
@given(
    st.sampled_from([TOPICS.device_state("dev-1"), TOPICS.device_events("dev-1")]) | st.text(max_size=50),
    payloads | json_values.map(lambda v: json.dumps(v).encode()),
)
def test_the_fleet_view_handlers_never_raise(fleet: FleetWatcher, topic: str, payload: bytes) -> None:
    before = fleet.received + fleet.malformed
    fleet._on_state(topic, payload, True)
    fleet._on_event(topic, payload, False)
    assert fleet.received + fleet.malformed >= before
