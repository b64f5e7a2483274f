"""The updater's pure state machine and trial, without a broker."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.errors import EdgelineError, UpdateRejected
from edge_agent.updater import machine as m
from edge_agent.updater.trial import Trial, TrialSpec, p95
from edgeline.core.protocol.delivery import UpdaterState as S
from edgeline.core.protocol.manifest import Manifest, Target, parse_manifest
from tests.delivery.conftest import BuiltBundle

ME = m.Identity("dev-1", "x86-ipc", frozenset({"line-1"}))
LIMITS = m.Limits(max_artifact_bytes=10_000_000, min_free_bytes=1000)


def man(b: BuiltBundle, *, seq: int, version: int | None = None, **changes: Any) -> Manifest:
    body = b.manifest.to_body()
    body.update(sequence=seq, **changes)
    if version is not None:
        body["version"] = version
    return parse_manifest(body)


def installed(b: BuiltBundle, seq: int = 1) -> m.Record:
    rec = m.begin(m.accept_sequence(m.Record(), man(b, seq=seq)), man(b, seq=seq), 0.0)
    for step in (m.verified, m.staged, m.activated, m.committed):
        rec = step(rec, 1.0)
    return rec


def test_happy_path_and_slots(bundles: dict[int, BuiltBundle]) -> None:
    rec = installed(bundles[1])
    assert rec.state == S.COMMITTED and rec.active == "A" and rec.slots["A"].version == 1  # type: ignore[union-attr]
    m2 = man(bundles[2], seq=2)
    assert m.check_sequence(rec, m2) is None
    rec = m.accept_sequence(rec, m2)
    assert m.check_policy(rec, m2, now=1.0, limits=LIMITS, free_bytes=10**9) == m.OfferOutcome.START
    rec = m.begin(rec, m2, 2.0)
    assert rec.pending is not None and rec.pending.slot == "B"
    for step in (m.verified, m.staged, m.activated, m.committed):
        rec = step(rec, 3.0)
    assert rec.active == "B" and rec.slots["A"].version == 1 and rec.slots["B"].version == 2  # type: ignore[union-attr]
    assert m.Record.from_dict(rec.to_dict()) == rec


def test_illegal_transitions_are_refused(bundles: dict[int, BuiltBundle]) -> None:
    with pytest.raises(m.IllegalTransition):
        m.committed(m.Record(), 0.0)
    rec = installed(bundles[1])
    with pytest.raises(m.IllegalTransition):
        m.staged(rec, 0.0)


def test_offer_checks_in_order(bundles: dict[int, BuiltBundle]) -> None:
    rec = installed(bundles[1], seq=5)
    with pytest.raises(UpdateRejected) as e:
        m.check_sequence(rec, man(bundles[2], seq=4))
    assert e.value.reason == "replay"
    assert m.check_sequence(rec, man(bundles[1], seq=5)) == m.OfferOutcome.IGNORE  # retained redelivery
    with pytest.raises(UpdateRejected) as e:
        m.check_sequence(rec, man(bundles[2], seq=5))  # same sequence, other artifact
    assert e.value.reason == "replay"
    with pytest.raises(UpdateRejected) as e:
        m.check_policy(rec, man(bundles[2], seq=6), now=1e12, limits=LIMITS, free_bytes=10**9)
    assert e.value.reason == "expired"
    assert m.check_policy(rec, man(bundles[1], seq=6), now=1.0, limits=LIMITS, free_bytes=0) == "already_active"
    older = man(bundles[2], seq=6, version=1)
    rec3 = m.Record(
        state=S.COMMITTED, active="A", slots={"A": m.SlotInfo("tiny", 3, "ab" * 32, 5), "B": None}, sequence=5
    )
    with pytest.raises(UpdateRejected) as e:
        m.check_policy(rec3, older, now=1.0, limits=LIMITS, free_bytes=10**9)
    assert e.value.reason == "downgrade"
    allowed = man(bundles[2], seq=6, version=1, allow_downgrade=True)
    assert m.check_policy(rec3, allowed, now=1.0, limits=LIMITS, free_bytes=10**9) == "start"
    with pytest.raises(UpdateRejected) as e:
        m.check_policy(rec, man(bundles[2], seq=6), now=1.0, limits=m.Limits(100, 0), free_bytes=10**9)
    assert e.value.reason == "oversize"
    with pytest.raises(UpdateRejected) as e:
        m.check_policy(rec, man(bundles[2], seq=6), now=1.0, limits=LIMITS, free_bytes=3000)
    assert e.value.reason == "disk_full"


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        (Target(devices=("other",)), "wrong_target"),
        (Target(groups=("line-9",)), "wrong_target"),
        (Target(hardware_classes=("arm64",)), "wrong_hardware"),
        (Target(devices=("dev-1",), groups=("line-1",), hardware_classes=("x86-ipc",)), None),
    ],
)
def test_target(bundles: dict[int, BuiltBundle], target: Target, reason: str | None) -> None:
    manifest = man(bundles[1], seq=1, target=target.model_dump(mode="json"))
    if reason is None:
        m.check_target(manifest, ME)
        return
    with pytest.raises(UpdateRejected) as e:
        m.check_target(manifest, ME)
    assert e.value.reason == reason


def test_recovery_from_each_state(bundles: dict[int, BuiltBundle]) -> None:
    base = installed(bundles[1])
    m2 = man(bundles[2], seq=2)
    rec = m.begin(m.accept_sequence(base, m2), m2, 0.0)
    assert m.recover(rec, 1.0).resume == m.Resume.DOWNLOAD
    rec = m.verified(rec, 1.0)
    assert m.recover(rec, 1.0).resume == m.Resume.STAGE
    rec = m.staged(rec, 1.0)
    assert m.recover(rec, 1.0).resume == m.Resume.LOAD
    rec = m.activated(rec, 1.0)
    r = m.recover(rec, 1.0)
    assert r.rolled_back and r.record.state == S.ROLLED_BACK and r.record.active == "A"
    assert r.record.slots["B"] is None and r.record.last is not None and r.record.last.reason == "crashed"
    for resting in (base, m.committed(rec, 2.0)):
        assert m.recover(resting, 3.0) == m.Recovery(resting, m.Resume.NOTHING)


def test_rejection_after_staging_forgets_the_slot(bundles: dict[int, BuiltBundle]) -> None:
    base = installed(bundles[1])
    m2 = man(bundles[2], seq=2)
    rec = m.staged(m.verified(m.begin(m.accept_sequence(base, m2), m2, 0.0), 1.0), 1.0)
    assert rec.slots["B"] is not None
    rej = m.rejected(rec, "selftest", "off by 0.3", 2.0)
    assert rej.state == S.IDLE and rej.slots["B"] is None and rej.active == "A" and rej.pending is None
    assert rej.sequence == 2 and rej.last_error.startswith("selftest")


def test_malformed_record_is_a_clear_error() -> None:
    with pytest.raises(EdgelineError, match="malformed"):
        m.Record.from_dict({"schema": "edgeline.updater/1", "state": "NOPE"})
    with pytest.raises(EdgelineError, match="malformed"):
        m.Record.from_dict({"schema": "other"})


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(["offer", "verified", "staged", "activated", "pass", "fail", "reject", "crash"]), max_size=30
    )
)
def test_any_event_sequence_keeps_one_committed_slot(bundles: dict[int, BuiltBundle], steps: list[str]) -> None:
    """Whatever happens, the committed slot holds a model whenever one was ever committed, and a
    pending deployment never targets the committed slot."""
    rec = installed(bundles[1])
    seq = 1
    for step in steps:
        try:
            if step == "offer" and rec.state in m.RESTING:
                seq += 1
                b = bundles[2 if seq % 2 else 3]
                mm = man(b, seq=seq, version=seq + 10)
                rec = m.begin(m.accept_sequence(rec, mm), mm, 0.0)
            elif step == "verified":
                rec = m.verified(rec, 0.0)
            elif step == "staged":
                rec = m.staged(rec, 0.0)
            elif step == "activated":
                rec = m.activated(rec, 0.0)
            elif step == "pass":
                rec = m.committed(rec, 0.0)
            elif step == "fail":
                rec = m.rolled_back(rec, "nan", "", 0.0)
            elif step == "reject" and rec.state in m.IN_FLIGHT:
                rec = m.rejected(rec, "hash_mismatch", "", 0.0)
            elif step == "crash":
                rec = m.recover(m.Record.from_dict(rec.to_dict()), 0.0).record
        except m.IllegalTransition:
            pass
        assert rec.active is not None and rec.slots[rec.active] is not None
        if rec.pending is not None:
            assert rec.pending.slot != rec.active
        assert (rec.pending is None) == (rec.state in m.RESTING)


def test_trial_verdicts() -> None:
    spec = TrialSpec(frames=4, timeout_s=10.0, latency_budget_ms=5.0, max_errors=0)
    t = Trial(spec, started_at=0.0)
    assert t.judge(1.0) is None
    for _ in range(4):
        t.add(1.0, True)
    v = t.judge(1.0)
    assert v is not None and v.passed
    slow = Trial(spec, 0.0)
    for lat in (1.0, 1.0, 1.0, 9.0):
        slow.add(lat, True)
    v = slow.judge(1.0)
    assert v is not None and not v.passed and v.reason == "trial_latency"
    nan = Trial(spec, 0.0)
    nan.add(1.0, False)
    assert (v := nan.judge(0.5)) is not None and v.reason == "nan"
    errs = Trial(spec, 0.0, errors_at_start=3)
    assert (v := errs.judge(0.5, errors_now=4)) is not None and v.reason == "trial_errors"
    idle = Trial(spec, 0.0)
    idle.add(1.0, True)
    assert idle.judge(9.9) is None
    assert (v := idle.judge(10.0)) is not None and not v.passed and v.reason == "trial_timeout"  # fails closed
    assert p95([float(i) for i in range(1, 101)]) == 95.0


def test_record_survives_a_roundtrip_with_pending(bundles: dict[int, BuiltBundle]) -> None:
    m2 = man(bundles[2], seq=2)
    rec = m.begin(m.accept_sequence(installed(bundles[1]), m2), m2, 0.0)
    rec = replace(rec, last_error="x")
    assert m.Record.from_dict(rec.to_dict()) == rec
