"""A real agent process takes a signed config over MQTT without a restart: sinks, decision thresholds
and telemetry windows change between two frames, none lost; a change whose new sink cannot write is
rolled back by itself."""

from __future__ import annotations

import json
import time

from click.testing import CliRunner

from cloud_registry.remote_config import ConfigTarget
from edgeline.cli.main import cli
from tests.remote_config.conftest import DEVICE, Fleet, wait_for


def test_good_config_applied_hot_without_dropping_a_frame(fleet: Fleet) -> None:
    a = fleet.agent
    a.start()
    assert fleet.watch.wait(lambda s: s.version == 0, 20), a.log_tail()
    assert wait_for(lambda: a.frames_in() >= 20, 20), a.log_tail()
    pid = wait_for(a.pid, 10)  # the status file is written every 0.1 s
    assert pid is not None, a.log_tail()
    new_log = a.logs / "verdicts-2.jsonl"
    overlay = {
        "sinks": {"jsonl": {"path": str(new_log)}},
        "decision": {"defect_min_confidence": 0.95},
        "telemetry": {"window_s": 30.0},
    }
    v = fleet.push(overlay, actor="alice")
    committed = fleet.watch.wait(lambda s: s.version == v and s.trial is None, 20)
    assert committed is not None, a.log_tail()
    assert set(committed.changed) == {"sinks.jsonl.path", "decision.defect_min_confidence", "telemetry.window_s"}
    # what 'edgeline config status' shows of it
    where = ["--store", f"sqlite:///{a.workdir / 'registry.db'}", "--broker", f"127.0.0.1:{fleet.broker.port}"]
    r = CliRunner().invoke(cli, ["config", "status", DEVICE, "--json", *where], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.output)
    assert (row["version"], row["pushed_to_device"], row["trial"], row["last_refusal"]) == (v, v, None, None)
    # the same file, another writer's settings: the old worker finishes before the new one writes
    overlay2 = {**overlay, "sinks": {"jsonl": {"path": str(new_log), "fsync": True}}}
    v2 = fleet.push(overlay2, actor="alice")
    assert fleet.watch.wait(lambda s: s.version == v2 and s.trial is None, 20), a.log_tail()
    at_commit = a.frames_in()
    assert wait_for(lambda: a.frames_in() >= at_commit + 20, 20)
    # an empty document: back to the device's own file alone, still without a restart
    v3 = fleet.push({}, actor="alice")
    back = fleet.watch.wait(lambda s: s.version == v3 and s.trial is None, 20)
    assert back is not None and back.changed == (), a.log_tail()
    size = (a.logs / "verdicts.jsonl").stat().st_size
    assert wait_for(lambda: (a.logs / "verdicts.jsonl").stat().st_size > size, 10)
    a.stop()
    final = a.status()
    assert final is not None and final["pid"] == pid, "the agent restarted"
    assert final["state"] == "STOPPED"
    assert final["dropped"] == {}, final["dropped"]
    assert final["frames"]["inspected"] == final["frames"]["in"]
    assert final["remote_config"]["version"] == v3
    old_ids = a.verdict_ids(a.logs / "verdicts.jsonl")
    new_ids = a.verdict_ids(new_log)
    assert old_ids and new_ids, "both logs hold verdicts: before and after the change"
    ids = sorted(old_ids + new_ids)
    assert ids == list(range(ids[0], ids[0] + len(ids))), "every frame has exactly one verdict across the change"
    # the own file's log before the first change and again after the reset, the new log in between
    assert all(i < min(new_ids) or i > max(new_ids) for i in old_ids)
    assert min(old_ids) < min(new_ids) and max(old_ids) > max(new_ids)
    assert new_ids == sorted(new_ids), "the file written by two workers in turn keeps the frames' order"
    assert len(ids) == final["frames"]["inspected"]
    # the registry keeps who pushed what and when
    _, second, first = fleet.store.config_pushes(f"device:{DEVICE}")
    assert (first.version, first.actor, first.overlay) == (v, "alice", overlay)
    assert (second.version, second.overlay) == (v2, overlay2)


def test_the_committed_config_still_runs_after_it_expired(fleet: Fleet) -> None:
    """A document is checked for expiry when it is accepted; the one a device runs comes back retained
    at every start and is not refused for having expired since."""
    a = fleet.agent
    a.start()
    assert fleet.watch.wait(lambda s: s.version == 0, 20), a.log_tail()
    v = fleet.pusher.push(
        ConfigTarget.parse(DEVICE), {"decision": {"defect_min_confidence": 0.9}}, actor="t", valid_days=3 / 86400
    ).version
    assert fleet.watch.wait(lambda s: s.version == v and s.trial is None, 20), a.log_tail()
    time.sleep(max(0.0, fleet.store.config_pushes()[0].at + 3.2 - time.time()))  # now it has expired
    a.stop()
    fleet.watch.states.clear()
    a.start()
    assert wait_for(lambda: (a.status() or {}).get("remote_config", {}) or None, 20)
    n = a.frames_in()
    assert wait_for(lambda: a.frames_in() >= n + 20, 20), a.log_tail()  # the retained copy came and went
    s = fleet.watch.wait(lambda s: s.version == v, 10)
    assert s is not None and s.last_refusal is None and s.trial is None, s
    # a new push past its validity would be refused: expiry is checked at acceptance
    fleet.publish_raw(fleet.body(v + 1, {"decision": {}}, issued_at=time.time() - 10, expires_at=time.time() - 1))
    s = fleet.watch.refused(v + 1)
    assert s is not None and s.last_refusal is not None and s.last_refusal.reason == "expired"
