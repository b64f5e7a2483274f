"""The pure rollout engine: waves, canary, threshold, pause/resume/abort, rollback."""

from __future__ import annotations

import pytest

from cloud_registry import rollout as ro

NEW = ro.ModelRef("tiny", 2, "b" * 64)
OLD = ro.ModelRef("tiny", 1, "a" * 64)


def plan(devices: list[str], *, canary: int = 0, waves: str = "100%", max_pct: float = 0.0) -> ro.Plan:
    return ro.Plan("r1", NEW, "group:g", ro.plan_waves(devices, canary=canary, waves=waves), canary, max_pct)


def run_dispatch(r: ro.Rollout, actions: list[ro.Action], seq: list[int]) -> ro.Rollout:
    for a in actions:
        seq[0] += 1
        if isinstance(a, ro.Dispatch):
            r = ro.dispatched(r, a.device_id, seq[0])
        else:
            r = ro.sent_back(r, a.device_id, seq[0], cleared=a.previous is None)
    return r


def commit(r: ro.Rollout, d: str, seq: list[int], sha: str = NEW.sha256) -> ro.Rollout:
    r, actions = ro.observe(r, ro.Observation(d, "committed", r.devices[d].sequence, sha))
    return run_dispatch(r, actions, seq)


def fail(r: ro.Rollout, d: str, seq: list[int], reason: str = "trial_latency") -> ro.Rollout:
    r, actions = ro.observe(r, ro.Observation(d, "rolled_back", r.devices[d].sequence, NEW.sha256, reason))
    return run_dispatch(r, actions, seq)


def test_wave_planning() -> None:
    devs = [f"d{i}" for i in range(10)]
    assert ro.plan_waves(devs, canary=1, waves="50%,100%") == (("d0",), tuple(devs[1:5]), tuple(devs[5:]))
    assert ro.plan_waves(devs, waves="2,5,all") == (tuple(devs[:2]), tuple(devs[2:5]), tuple(devs[5:]))
    assert ro.plan_waves(devs, waves="30%") == (tuple(devs[:3]), tuple(devs[3:]))  # the rest is a last wave
    for bad in ("0%", "150%", "0", "x", ""):
        with pytest.raises(ValueError):
            ro.plan_waves(devs, waves=bad)
    with pytest.raises(ValueError):
        ro.plan_waves(devs, canary=11)


def test_waves_advance_only_when_every_device_committed() -> None:
    seq = [0]
    r, actions = ro.start(plan(["a", "b", "c", "d"], waves="2,all"), {d: OLD for d in "abcd"})
    assert [a.device_id for a in actions] == ["a", "b"]
    r = run_dispatch(r, actions, seq)
    r = commit(r, "a", seq)
    assert r.wave == 0 and r.devices["c"].status == "pending"
    r, acts = ro.observe(r, ro.Observation("b", "downloading", r.devices["b"].sequence))
    assert r.devices["b"].status == "updating" and acts == []
    r = commit(r, "b", seq)
    assert r.wave == 1 and r.devices["c"].status == "sent"
    r = commit(commit(r, "c", seq), "d", seq)
    assert r.status == "completed" and r.settled


def test_stale_and_foreign_observations_are_ignored() -> None:
    seq = [10]
    r, actions = ro.start(plan(["a"]), {"a": OLD})
    r = run_dispatch(r, actions, seq)
    r2, _ = ro.observe(r, ro.Observation("a", "rejected", 3, None, "old news"))  # an older deployment
    assert r2 == r
    r3, _ = ro.observe(r, ro.Observation("zz", "committed", 99, NEW.sha256))
    assert r3 == r
    r4, _ = ro.observe(r, ro.Observation("a", "state", r.devices["a"].sequence, OLD.sha256))
    assert r4.devices["a"].status == "sent"  # still on the old model: not done


def test_canary_failure_aborts_and_rolls_back_the_canaries() -> None:
    seq = [0]
    r, actions = ro.start(plan(["a", "b", "c", "d"], canary=2, max_pct=50), {d: OLD for d in "abcd"})
    r = run_dispatch(r, actions, seq)
    r = commit(r, "a", seq)
    r = fail(r, "b", seq)
    assert r.status == "aborted" and r.reason == "canary failed"
    assert r.devices["a"].status == r.devices["b"].status == "rolling_back"
    assert r.devices["c"].status == r.devices["d"].status == "skipped"
    assert not r.settled
    r = commit(r, "a", seq, OLD.sha256)
    r, _ = ro.observe(r, ro.Observation("b", "state", r.devices["b"].sequence, OLD.sha256))
    assert r.devices["a"].status == r.devices["b"].status == "rolled_back" and r.settled


def test_failure_threshold() -> None:
    seq = [0]
    devs = [f"d{i}" for i in range(10)]
    r, actions = ro.start(plan(devs, max_pct=20), dict.fromkeys(devs, OLD))
    r = run_dispatch(r, actions, seq)
    r = fail(r, "d0", seq)
    r = fail(r, "d1", seq)
    assert r.status == "running"  # 20% is not above 20%
    r = commit(r, "d2", seq)
    r = fail(r, "d3", seq)
    assert r.status == "aborted" and "3 of 10" in r.reason
    assert r.devices["d2"].status == "rolling_back"


def test_pause_resume_and_abort() -> None:
    seq = [0]
    r, actions = ro.start(plan(["a", "b"], waves="1,all"), {"a": OLD, "b": None})
    r = run_dispatch(r, actions, seq)
    r, _ = ro.pause(r)
    r = commit(r, "a", seq)
    assert r.status == "paused" and r.devices["b"].status == "pending"  # no new wave while paused
    with pytest.raises(ValueError):
        ro.pause(r)
    r, actions = ro.resume(r)
    assert [a.device_id for a in actions] == ["b"]
    r = run_dispatch(r, actions, seq)
    r, actions = ro.abort(r, "operator")
    assert {a.device_id: a.previous for a in actions if isinstance(a, ro.SendBack)} == {"a": OLD, "b": None}
    r = run_dispatch(r, actions, seq)
    assert r.devices["b"].status == "rolled_back"  # nothing to go back to: its desired state is cleared
    with pytest.raises(ValueError):
        ro.abort(r, "again")


def test_rollback_of_a_completed_rollout() -> None:
    seq = [0]
    r, actions = ro.start(plan(["a"]), {"a": OLD})
    r = commit(run_dispatch(r, actions, seq), "a", seq)
    assert r.status == "completed"
    r, actions = ro.abort(r, "rollback requested")
    assert actions == [ro.SendBack("a", OLD)]


def test_json_roundtrip() -> None:
    seq = [0]
    r, actions = ro.start(plan(["a", "b", "c"], canary=1), {"a": OLD, "b": None, "c": OLD})
    r = run_dispatch(r, actions, seq)
    assert ro.Rollout.from_dict(r.to_dict()) == r
