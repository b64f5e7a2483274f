"""Property and fuzz tests of every protocol parser that reads from the network: canonical JSON, the
manifest, the signed envelope and its verification, the desired-state triage of the updater, device
state / events / artifact meta, revocation lists, trust stores and topic parsing.

Two properties everywhere:
* nothing escapes a parser but the package's own error types (``EdgelineError`` subclasses);
* nothing altered is ever accepted: a verified envelope returns exactly the body that was signed.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from converters.keys import KeyPaths, RootKey, load_private
from edge_agent.errors import EdgelineError, ManifestError, ProtocolError, SignatureError
from edge_agent.updater import machine as m
from edge_agent.updater.link import parse_revocations
from edge_agent.updater.offer import Candidate, Refusal, triage
from edgeline.core.protocol.canonical import canonical_json, parse_json
from edgeline.core.protocol.delivery import (
    ArtifactMeta,
    DeviceEvent,
    DeviceState,
    EventKind,
    ModelRef,
    UpdaterState,
    envelope_bytes,
    parse_desired,
    parse_event,
    parse_meta,
    parse_state,
)
from edgeline.core.protocol.manifest import Manifest, parse_manifest
from edgeline.core.protocol.signing import RevocationList, TrustStore, b64e, parse_envelope
from edgeline.core.protocol.topics import Topics
from tests.fuzz.conftest import fuzz_settings, json_texts, json_values, mutated, payloads

TOPICS = Topics()
SHA = "ab" * 32


@pytest.fixture(scope="module")
def envelope(tiny_bundle: Path) -> dict[str, Any]:
    """A real signed envelope (the tiny bundle's manifest.json) as a JSON object."""
    data: dict[str, Any] = json.loads((tiny_bundle / "manifest.json").read_text())
    return data


@pytest.fixture(scope="module")
def trust_store(key_dir: Path) -> TrustStore:
    return TrustStore.load(KeyPaths(key_dir).trust)


# -- canonical JSON ---------------------------------------------------------------------------------
@fuzz_settings()
@given(payloads | json_texts)
def test_parse_json_raises_only_protocol_errors(payload: bytes | str) -> None:
    with contextlib.suppress(ProtocolError):
        parse_json(payload)


@fuzz_settings()
@given(st.integers(1, 20_000), st.sampled_from(["[", '{"a":']))
@example(990, "[")  # parses, but is too deep to encode again from a deeper call stack
@example(990, '{"a":')
def test_deep_nesting_is_refused_or_parsed_and_then_encodable(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    try:
        value = parse_json(opener * depth + "0" + closer * depth if opener != "[" else "[" * depth + "]" * depth)
    except ProtocolError:
        return
    # what parses must also encode (or be refused cleanly): signatures are over the encoding
    with contextlib.suppress(ProtocolError):
        canonical_json(value)


@fuzz_settings()
@given(json_values)
def test_canonical_json_is_a_fixed_point(value: Any) -> None:
    once = canonical_json(value)
    assert canonical_json(parse_json(once)) == once


@fuzz_settings()
@given(st.binary(max_size=64))
def test_oversized_payloads_are_refused_before_parsing(extra: bytes) -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        parse_json(b"[" + b"0," * 600 + extra, max_bytes=1000)


# -- manifest -------------------------------------------------------------------------------------------
@fuzz_settings()
@given(st.data())
def test_mutated_manifests_validate_or_raise_manifest_error(envelope: dict[str, Any], data: st.DataObject) -> None:
    body = data.draw(mutated(envelope["body"]))
    try:
        man = parse_manifest(body)
    except ManifestError:
        return
    assert isinstance(man, Manifest)
    assert parse_manifest(man.to_body()) == man  # what is accepted round-trips


@fuzz_settings()
@given(json_values)
def test_arbitrary_json_is_not_a_manifest(value: Any) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(value)


# -- signed envelope ---------------------------------------------------------------------------------
@fuzz_settings()
@given(json_values)
def test_parse_envelope_raises_only_signature_errors(value: Any) -> None:
    with pytest.raises(SignatureError):
        parse_envelope(value)


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def test_a_document_too_deep_to_encode_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        canonical_json({"lineage": nested(5000)})


def test_a_signed_body_too_deep_to_encode_is_refused_not_crashed(
    envelope: dict[str, Any], trust_store: TrustStore
) -> None:
    """json.loads accepts a nesting depth that json.dumps, called a few frames deeper, may not:
    verification must refuse such a body with a SignatureError (the updater's triage maps that to a
    refusal), never let a RecursionError out."""
    env = parse_envelope(envelope)
    deep = env.model_copy(update={"body": {**env.body, "lineage": nested(5000)}})
    with pytest.raises(SignatureError):
        trust_store.verify(deep)


def signature_mutated(envelope: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Mutations of the signature and the certificate only (the body is most of the document, so
    plain mutations rarely reach these few fields)."""
    wrapper = {k: v for k, v in envelope.items() if k != "body"}
    return mutated(wrapper).map(lambda w: {**w, "body": envelope["body"]} if isinstance(w, dict) else w)


@fuzz_settings()
@given(st.data())
def test_a_tampered_envelope_never_verifies(
    envelope: dict[str, Any], trust_store: TrustStore, data: st.DataObject
) -> None:
    doc = data.draw(mutated(envelope) | signature_mutated(envelope))
    try:
        body = trust_store.verify(doc) if isinstance(doc, dict) else trust_store.verify(parse_envelope(doc))
    except SignatureError:
        return
    except ProtocolError:  # e.g. a body that cannot be canonicalised
        return
    assert canonical_json(body) == canonical_json(envelope["body"]), "an altered document was accepted"


@fuzz_settings()
@given(st.data())
def test_the_updater_triage_never_raises_and_never_accepts_a_tampered_offer(
    envelope: dict[str, Any], trust_store: TrustStore, data: st.DataObject
) -> None:
    doc = data.draw(mutated(envelope) | signature_mutated(envelope) | json_values)
    payload = data.draw(st.sampled_from([json.dumps(doc).encode(), canonical_json(doc) if doc is not None else b""]))
    me = m.Identity("dev-1", "generic", frozenset())
    got = triage(payload, data.draw(st.booleans()), m.Record(), trust_store, me, time.time())
    assert got is None or isinstance(got, Candidate | Refusal)
    if isinstance(got, Candidate):
        assert canonical_json(got.manifest.to_body()) == canonical_json(envelope["body"])


SIGNED_FIELDS = [
    ("signature", "alg"),
    ("signature", "key_id"),
    ("signature", "sig"),
    ("certificate", "key_id"),
    ("certificate", "public_key"),
    ("certificate", "issued_at"),
    ("certificate", "expires_at"),
    ("certificate", "root_key_id"),
    ("certificate", "signature"),
]


@fuzz_settings()
@given(st.sampled_from(SIGNED_FIELDS), json_values | st.text(max_size=90) | st.binary(max_size=40).map(b64e))
@example(("certificate", "issued_at"), "INFINITY")  # found at --full: read as float('inf'), not encodable
def test_any_change_to_the_signature_or_certificate_is_refused_by_the_updater(
    envelope: dict[str, Any], trust_store: TrustStore, where: tuple[str, str], value: Any
) -> None:
    doc = json.loads(json.dumps(envelope))
    doc[where[0]][where[1]] = value
    me = m.Identity("dev-1", "generic", frozenset())
    got = triage(json.dumps(doc).encode(), False, m.Record(), trust_store, me, time.time())
    if isinstance(got, Candidate):  # only when the "change" kept the signed meaning
        assert parse_envelope(doc) == parse_envelope(envelope)
    else:
        assert isinstance(got, Refusal)


@fuzz_settings()
@given(payloads)
def test_parse_desired_raises_only_protocol_errors(payload: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_desired(payload)


@fuzz_settings()
@given(st.data())
def test_revocation_lists_must_be_root_signed(key_dir: Path, data: st.DataObject) -> None:
    root = RootKey(load_private(KeyPaths(key_dir).root_key))
    valid = root.revoke(["0123456789abcdef"], serial=7).model_dump()
    doc = data.draw(mutated(valid) | json_values)
    store = TrustStore.load(KeyPaths(key_dir).trust)
    try:  # the device's path: the retained payload, parsed, then applied
        applied = store.apply_revocations(parse_revocations(json.dumps(doc).encode()))
    except ProtocolError:
        assert store.revocation_serial == -1 and not store.revoked
        return
    assert applied
    # accepted only with the signed meaning (pydantic may read "7" as 7: same list, same signature)
    assert RevocationList.model_validate(doc) == RevocationList.model_validate(valid)


@fuzz_settings()
@given(st.data())
def test_trust_store_documents_load_or_raise_signature_errors(key_dir: Path, data: st.DataObject) -> None:
    valid = json.loads(KeyPaths(key_dir).trust.read_text())
    doc = data.draw(mutated(valid) | json_values)
    with contextlib.suppress(ProtocolError):  # SignatureError, or a key that is not base64
        TrustStore.from_dict(doc)


# -- device state, events, artifact meta --------------------------------------------------------------
def _state() -> dict[str, Any]:
    ref = ModelRef(name="tiny", version=3, sha256=SHA)
    s = DeviceState(device_id="dev-1", online=True, ts=1.0, heartbeat_s=5.0, model=ref, slot="A", sequence=4)
    return json.loads(s.to_bytes())


def _event() -> dict[str, Any]:
    e = DeviceEvent(
        device_id="dev-1",
        kind=EventKind.COMMITTED,
        state=UpdaterState.COMMITTED,
        sequence=4,
        model=ModelRef(name="tiny", version=3, sha256=SHA),
        timings={"download": 0.5},
        progress={"have": 1, "total": 2},
    )
    return json.loads(e.to_bytes())


def _meta() -> dict[str, Any]:
    return json.loads(
        ArtifactMeta(sha256=SHA, size=3000, chunk_size=1024, chunk_sha256=(SHA,) * 3, published_at=1.0).to_bytes()
    )


@pytest.mark.parametrize(
    ("valid", "parse"),
    [(_state, parse_state), (_event, parse_event), (_meta, parse_meta)],
    ids=["state", "event", "meta"],
)
@fuzz_settings()
@given(data=st.data())
def test_delivery_messages_parse_or_raise_protocol_errors(valid: Any, parse: Any, data: st.DataObject) -> None:
    doc = data.draw(mutated(valid()) | json_values)
    payload = data.draw(st.sampled_from([json.dumps(doc).encode()]) | payloads)
    try:
        msg = parse(payload)
    except ProtocolError:
        return
    assert parse(msg.to_bytes()) == msg


def test_the_envelope_bytes_of_a_parsed_desired_state_round_trip(envelope: dict[str, Any]) -> None:
    env = parse_desired(json.dumps(envelope).encode())
    assert env is not None
    assert parse_desired(envelope_bytes(env)) == env


# -- topics --------------------------------------------------------------------------------------------
@fuzz_settings()
@given(
    st.text(max_size=80)
    | st.builds(
        lambda s: f"{TOPICS.base}/artifacts/{SHA}/chunks/{s}",
        st.text(max_size=8) | st.integers(0, 10**6).map(str) | st.sampled_from(["²", "٣", "1²", "007", "00", "-1"]),
    )
)
def test_chunk_topics_parse_or_raise_protocol_errors(topic: str) -> None:
    try:
        sha, index = TOPICS.chunk_index_from(topic)
    except ProtocolError:
        return
    prefix, _, suffix = topic.rpartition("/")
    assert TOPICS.artifact_chunk(sha, 0).rpartition("/")[0] == prefix
    assert suffix == str(index)  # one spelling per chunk: no aliases such as chunks/00


@fuzz_settings()
@given(st.text(max_size=80) | st.builds(lambda s: f"{TOPICS.base}/devices/{s}", st.text(max_size=20)))
def test_device_topics_parse_or_raise_protocol_errors(topic: str) -> None:
    try:
        device = TOPICS.device_id_from(topic)
    except ProtocolError:
        return
    assert topic.startswith(f"{TOPICS.base}/devices/{device}/")


@fuzz_settings()
@given(st.text(max_size=140))
def test_topic_builders_refuse_what_is_not_a_segment(segment: str) -> None:
    try:
        topic = TOPICS.device_state(segment)
    except EdgelineError:
        return
    assert TOPICS.device_id_from(topic) == segment
