"""Every parser that reads from the network or from the device's disk, at bulk counts: 100,000 examples
each with ``--full`` (300 in CI), from the seeded mutation fuzzer in :mod:`tests.fuzz.bulk`. The same
two properties as the property tests: only the package's own errors come out, and nothing altered is
accepted (what is accepted is exactly the valid document, or round-trips)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import paho.mqtt.client as mqtt
import pytest

from cloud_registry.fleet import FleetWatcher
from cloud_registry.telemetry.ingest import Ingestor
from cloud_registry.telemetry.store import TelemetryStore
from converters.keys import KeyPaths, RootKey, load_private
from edge_agent.bundle import open_bundle
from edge_agent.errors import EdgelineError, ProtocolError
from edge_agent.onnx_guard import ExternalDataError, check_no_external_data
from edge_agent.status import StatusError, read_status
from edge_agent.telemetry.privacy import MinFrames, PrivacyError, load_secret
from edge_agent.updater import machine as m
from edge_agent.updater.download import ChunkDownload
from edge_agent.updater.link import load_trust, parse_revocations
from edge_agent.updater.offer import Candidate, triage
from edge_agent.updater.slots import SlotDisk
from edgeline.core.mqtt_link import LinkSettings, MqttLink, filter_matches
from edgeline.core.protocol.canonical import parse_json
from edgeline.core.protocol.delivery import parse_desired, parse_event, parse_meta, parse_state
from edgeline.core.protocol.manifest import parse_manifest
from edgeline.core.protocol.signing import TrustStore, parse_envelope
from edgeline.core.protocol.telemetry import parse_window
from edgeline.core.protocol.topics import Topics
from firmware_configs.errors import ConfigError
from firmware_configs.loader import parse_config, parse_toml
from tests.fuzz import bulk
from tests.fuzz.conftest import _FULL
from tests.fuzz.test_config_fuzz import profiles, to_toml
from tests.fuzz.test_disk_and_chunk_fuzz import ARTIFACT, ARTIFACT_DATA, FakeSubscriber, record_doc
from tests.fuzz.test_onnx_guard_fuzz import SEEDS as ONNX_SEEDS
from tests.fuzz.test_onnx_guard_fuzz import tensors
from tests.fuzz.test_protocol_fuzz import _event, _meta, _state
from tests.fuzz.test_telemetry_fuzz import RESTORE_CAUGHT, _pending_state, window_body

TOPICS = Topics()
FULL_EXAMPLES = 100_000
CI_EXAMPLES = 300


@dataclass
class Ctx:
    envelope: dict[str, Any]
    trust: TrustStore
    key_dir: Path
    tmp: Path
    model: bytes
    revocation: dict[str, Any]


@pytest.fixture(scope="module")
def ctx(tiny_bundle: Path, key_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    root = RootKey(load_private(KeyPaths(key_dir).root_key))
    return Ctx(
        envelope=json.loads((tiny_bundle / "manifest.json").read_text()),
        trust=TrustStore.load(KeyPaths(key_dir).trust),
        key_dir=key_dir,
        tmp=tmp_path_factory.mktemp("bulk"),
        model=(tiny_bundle / "model.onnx").read_bytes(),
        revocation=root.revoke(["0123456789abcdef"], serial=7).model_dump(),
    )


def refused(fn: Callable[[], Any], *errors: type[BaseException]) -> str:
    try:
        fn()
    except errors:
        return "refused"
    return "accepted"


# -- network ------------------------------------------------------------------------------------------
def t_canonical_json(c: Ctx) -> bulk.Target:
    return lambda mu: refused(lambda: parse_json(mu.payload(c.envelope)), ProtocolError)


def t_manifest(c: Ctx) -> bulk.Target:
    def one(mu: bulk.Mutator) -> str:
        doc = mu.doc(c.envelope["body"], 4)
        try:
            man = parse_manifest(doc)
        except ProtocolError:
            return "refused"
        assert parse_manifest(man.to_body()) == man
        return "accepted"

    return one


def t_envelope_verify(c: Ctx) -> bulk.Target:
    def one(mu: bulk.Mutator) -> str:
        doc = mu.doc(c.envelope, 3)
        try:
            body = c.trust.verify(parse_envelope(doc), check_expiry=False)
        except ProtocolError:
            return "refused"
        assert body == c.envelope["body"]  # a verified body is exactly the signed one
        return "accepted"

    return one


def t_triage(c: Ctx) -> bulk.Target:
    me = m.Identity("dev-1", "generic", frozenset())
    original = parse_envelope(c.envelope)

    def one(mu: bulk.Mutator) -> str:
        payload = mu.payload(c.envelope)
        got = triage(payload, mu.r.random() < 0.5, m.Record(), c.trust, me, time.time())
        if isinstance(got, Candidate):
            assert got.envelope == original, "a changed offer was accepted"
            return "accepted"
        return "refused" if got is not None else "nothing"

    return one


def t_revocations(c: Ctx) -> bulk.Target:
    def one(mu: bulk.Mutator) -> str:
        store = TrustStore.load(KeyPaths(c.key_dir).trust)
        try:
            applied = store.apply_revocations(parse_revocations(mu.payload(c.revocation)))
        except ProtocolError:
            assert store.revocation_serial == -1 and not store.revoked
            return "refused"
        assert applied and store.revoked == {"0123456789abcdef"}
        return "accepted"

    return one


def t_delivery_messages(c: Ctx) -> bulk.Target:
    kinds = [(parse_state, _state()), (parse_event, _event()), (parse_meta, _meta())]

    def one(mu: bulk.Mutator) -> str:
        parse, valid = mu.r.choice(kinds)
        if mu.r.random() < 0.2:
            return refused(lambda: parse_desired(mu.payload(c.envelope)), ProtocolError)
        return refused(lambda: parse(mu.payload(valid)), ProtocolError)

    return one


def t_topics(c: Ctx) -> bulk.Target:
    base = [TOPICS.artifact_chunk("ab" * 32, 17), TOPICS.device_state("dev-1"), TOPICS.device_events("d_1-x")]

    def one(mu: bulk.Mutator) -> str:
        raw = mu.r.choice(base)
        if mu.r.random() < 0.9:
            raw = mu.bytes_(raw.encode()).decode("utf-8", "replace")
        try:
            sha, index = TOPICS.chunk_index_from(raw)
            assert TOPICS.artifact_chunk(sha, index) == raw  # one spelling per chunk
            return "chunk"
        except ProtocolError:
            pass
        try:
            dev = TOPICS.device_id_from(raw)
            assert raw.startswith(f"{TOPICS.base}/devices/{dev}/")
            return "device"
        except ProtocolError:
            return "refused"

    return one


def t_topic_filters(c: Ctx) -> bulk.Target:
    levels = ["", "a", "b", "edgeline", "chunks", "0", "17", "$SYS", "$x", "é"]

    def one(mu: bulk.Mutator) -> str:
        r = mu.r
        filt = [r.choice([*levels, "+"]) for _ in range(r.randint(1, 6))] + (["#"] if r.random() < 0.3 else [])
        topic = "/".join(r.choice(levels) for _ in range(r.randint(1, 6)))
        f = "/".join(filt)
        got = filter_matches(f, topic)
        assert got == mqtt.topic_matches_sub(f, topic), (f, topic)
        return str(got)

    return one


def t_chunk_handler(c: Ctx) -> bulk.Target:
    part = c.tmp / "bulk.part"

    def one(mu: bulk.Mutator) -> str:
        part.unlink(missing_ok=True)
        outcome: dict[str, Any] = {}
        dl = ChunkDownload(
            part=part,
            artifact=ARTIFACT,
            topics=TOPICS,
            sub=FakeSubscriber(),
            window=3,
            on_done=lambda: outcome.setdefault("done", True),
            on_fail=lambda reason, detail: outcome.setdefault("failed", reason),
        )
        dl.scan()
        dl.start()
        for _ in range(mu.r.randint(1, 12)):
            i = mu.r.randrange(ARTIFACT.chunk_count + 2)
            good = ARTIFACT_DATA[i * 1024 : (i + 1) * 1024]
            pick = mu.r.random()
            payload = good if pick < 0.6 else (mu.bytes_(good, 2) if pick < 0.9 else mu.noise())
            sha = ARTIFACT.sha256 if mu.r.random() < 0.9 else "cd" * 32
            topic = TOPICS.artifact_chunk(sha, i)
            if mu.r.random() < 0.1:
                topic = mu.bytes_(topic.encode()).decode("utf-8", "replace")
            dl._on_chunk(topic, payload, True)
        dl.cancel()
        if outcome.get("done"):
            assert hashlib.sha256(part.read_bytes()).hexdigest() == ARTIFACT.sha256
            return "done"
        if "failed" in outcome:
            assert outcome["failed"] in ("hash_mismatch", "length_mismatch")
            return "failed"
        return "partial"

    return one


@contextlib.contextmanager
def ingestor(c: Ctx) -> Iterator[Ingestor]:
    store = TelemetryStore(c.tmp / "ingest.db")
    try:
        yield Ingestor(store, TOPICS)
    finally:
        store.close()


def t_telemetry(c: Ctx, ing: Ingestor) -> bulk.Target:
    topic = TOPICS.device_telemetry("dev-1")

    def one(mu: bulk.Mutator) -> str:
        payload = mu.payload(window_body())
        try:
            w = parse_window(payload)
        except ProtocolError:
            w = None
        outcome = ing.handle(topic, payload, False)
        if w is None:
            assert outcome.startswith("rejected: "), outcome
            return "refused"
        assert outcome in ("stored", "duplicate") or "exceeds" in outcome, outcome
        return "accepted"

    return one


def t_fleet(c: Ctx) -> bulk.Target:
    fleet = FleetWatcher(MqttLink(LinkSettings(client_id="bulk-fleet")), TOPICS)
    topics = [TOPICS.device_state("dev-1"), TOPICS.device_events("dev-1"), "x/y"]

    def one(mu: bulk.Mutator) -> str:
        topic = mu.r.choice(topics)
        fleet._on_state(topic, mu.payload(_state()), True)
        fleet._on_event(topic, mu.payload(_event()), False)
        return "handled"

    return one


def t_onnx_guard(c: Ctx) -> bulk.Target:
    def one(mu: bulk.Mutator) -> str:
        data = mu.bytes_(mu.r.choice(ONNX_SEEDS)) if mu.r.random() < 0.95 else mu.noise()
        try:
            check_no_external_data(data)
        except ExternalDataError:
            return "refused"
        try:
            model = onnx.load_from_string(data)
        except Exception:
            return "accepted, not onnx"
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data) for t in tensors(model))
        return "accepted"

    return one


# -- disk -----------------------------------------------------------------------------------------------
def t_config(c: Ctx) -> bulk.Target:
    docs = profiles()

    def one(mu: bulk.Mutator) -> str:
        doc = mu.doc(mu.r.choice(docs), 4)
        if mu.r.random() < 0.5:
            return refused(lambda: parse_config(doc, "fuzz.toml"), ConfigError)
        text = to_toml(doc) if isinstance(doc, dict) else str(doc)
        if mu.r.random() < 0.3:
            text = mu.bytes_(text.encode()).decode("utf-8", "replace")
        return refused(lambda: parse_toml(text, "fuzz.toml"), ConfigError)

    return one


def t_record(c: Ctx) -> bulk.Target:
    disk = SlotDisk(c.tmp / "record")
    disk.state_dir.mkdir(exist_ok=True)

    def one(mu: bulk.Mutator) -> str:
        if mu.r.random() < 0.5:
            doc = mu.doc(record_doc(), 3)
            try:
                rec = m.Record.from_dict(doc) if isinstance(doc, dict) else m.Record.from_dict({"schema": doc})
            except EdgelineError:
                return "refused"
            assert m.Record.from_dict(rec.to_dict()) == rec
            return "accepted"
        disk.record_path.write_bytes(mu.payload(record_doc()))
        return refused(disk.load_record, EdgelineError)

    return one


def t_bundle_manifest(c: Ctx) -> bulk.Target:
    d = c.tmp / "bundle"
    d.mkdir(exist_ok=True)
    (d / "model.onnx").write_bytes(c.model)

    def one(mu: bulk.Mutator) -> str:
        raw = mu.payload(c.envelope)
        (d / "manifest.json").write_bytes(raw)
        try:
            b = open_bundle(d, c.trust, check_expiry=False)
        except EdgelineError:
            return "refused"
        assert b.manifest.to_body() == c.envelope["body"]  # only the signed manifest opens
        return "accepted"

    return one


def t_trust_files(c: Ctx) -> bulk.Target:
    d = c.tmp / "trust"
    d.mkdir(exist_ok=True)
    disk = SlotDisk(d)
    valid = json.loads(KeyPaths(c.key_dir).trust.read_text())

    def one(mu: bulk.Mutator) -> str:
        raw = mu.payload(valid)
        (d / "trust.json").write_bytes(raw)
        outcome = refused(lambda: TrustStore.load(d / "trust.json"), EdgelineError)
        disk.revocations_path.write_bytes(mu.payload(c.revocation))
        store = load_trust(KeyPaths(c.key_dir).trust, disk)  # a bad revocation file is ignored, never fatal
        assert store.revoked <= {"0123456789abcdef"}
        return outcome

    return one


def t_status_and_secret(c: Ctx) -> bulk.Target:
    d = c.tmp / "misc"
    d.mkdir(exist_ok=True)
    status = {"schema": "edgeline.agent-status/1", "pid": 1, "state": "RUNNING", "model": None}

    def one(mu: bulk.Mutator) -> str:
        (d / "status.json").write_bytes(mu.payload(status))
        a = refused(lambda: read_status(d / "status.json"), StatusError)
        (d / "secret").write_bytes(mu.bytes_(b"5eed" * 8) if mu.r.random() < 0.7 else mu.noise(64))
        try:
            assert len(load_secret(d / "secret")) >= 16
        except PrivacyError:
            return f"status {a}, secret refused"
        return f"status {a}, secret accepted"

    return one


def t_telemetry_state(c: Ctx) -> bulk.Target:
    from edge_agent.telemetry.windows import RawWindow

    valid = [RawWindow.from_state(_pending_state()).to_state()]
    return lambda mu: refused(lambda: MinFrames(5).restore(mu.doc(valid, 3)), *RESTORE_CAUGHT)


NETWORK = {
    "canonical JSON": t_canonical_json,
    "manifest": t_manifest,
    "signed envelope + verify": t_envelope_verify,
    "desired-state triage": t_triage,
    "revocation list": t_revocations,
    "state/event/meta/desired": t_delivery_messages,
    "topic parsing": t_topics,
    "topic-filter matcher": t_topic_filters,
    "chunk handler": t_chunk_handler,
    "fleet view handlers": t_fleet,
    "ONNX external-data guard": t_onnx_guard,
}
DISK = {
    "device config": t_config,
    "updater record": t_record,
    "bundle manifest.json": t_bundle_manifest,
    "trust.json + revocations.json": t_trust_files,
    "status file + pseudonym secret": t_status_and_secret,
    "telemetry pending windows": t_telemetry_state,
}


def examples() -> int:
    return int(os.environ.get("EDGELINE_BULK_EXAMPLES", FULL_EXAMPLES if _FULL["on"] else CI_EXAMPLES))


@pytest.mark.parametrize("name", [*NETWORK, *DISK])
def test_bulk(ctx: Ctx, name: str) -> None:
    build = {**NETWORK, **DISK}[name]
    res = bulk.run(name, build(ctx), examples())
    assert sum(res.outcomes.values()) == res.examples


def test_bulk_telemetry_window_and_ingest(ctx: Ctx) -> None:
    with ingestor(ctx) as ing:
        res = bulk.run("telemetry window + ingest", t_telemetry(ctx, ing), examples())
    assert sum(res.outcomes.values()) == res.examples
