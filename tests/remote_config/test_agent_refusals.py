"""A real agent process refuses bad signed configs with a reason (and keeps inspecting with what it
runs): a replayed older version, unknown keys, path traversal and paths outside the allowed
directories, oversized values, a command to run, verdicts sent off the line, the device's identity,
a station left without a source, a bad signature, another device's document, garbage. A change
that makes a sink fail is rolled back by itself."""

from __future__ import annotations

from edgeline.core.protocol.canonical import canonical_json
from tests.remote_config.conftest import DEVICE, Fleet, wait_for


def test_bad_configs_refused_with_a_reason(fleet: Fleet) -> None:
    a = fleet.agent
    a.start()
    assert fleet.watch.wait(lambda s: s.version == 0, 20), a.log_tail()
    pid = wait_for(a.pid, 10)  # the status file is written every 0.1 s
    assert pid is not None, a.log_tail()
    v1 = fleet.push({"decision": {"defect_min_confidence": 0.7}})
    assert fleet.watch.wait(lambda s: s.version == v1 and s.trial is None), a.log_tail()
    v2 = fleet.push({"decision": {"defect_min_confidence": 0.8}})
    assert fleet.watch.wait(lambda s: s.version == v2 and s.trial is None), a.log_tail()

    # a replay: version 1's own signed payload, published again
    (old,) = [p for p in fleet.store.config_pushes(f"device:{DEVICE}") if p.version == v1]
    fleet.publish_payload(canonical_json(old.envelope))
    s = fleet.watch.refused(v1)
    assert s is not None and s.last_refusal is not None, a.log_tail()
    assert s.last_refusal.reason == "replay" and s.version == v2

    allowed = a.workdir / "allowed"
    (allowed / "empty").mkdir()
    cases: list[tuple[dict[str, object], str, str]] = [
        ({"sinks": {"jsonl": {"pathh": str(allowed / "x.jsonl")}}}, "invalid", "sinks.jsonl.pathh: unknown key"),
        ({"sinks": {"jsonl": {"path": f"{allowed}/../../../etc/x.jsonl"}}}, "hostile", "without '..'"),
        ({"sinks": {"jsonl": {"path": "/etc/edgeline-verdicts.jsonl"}}}, "hostile", "outside the allowed"),
        ({"sinks": {"jsonl": {"path": "logs/verdicts.jsonl"}}}, "hostile", "must be absolute"),
        ({"sinks": {"jsonl": {"path": str(a.state_dir / "updater.json")}}}, "hostile", "own state"),
        ({"telemetry": {"window_s": 1e12}}, "invalid", "telemetry.window_s"),
        ({"sinks": {"webhook": {"url": "http://x/" + "a" * 5000}}}, "bad_document", "at most 1024"),
        ({"sinks": {"command": {"argv": ["/bin/sh", "-c", "id"]}}}, "hostile", "command to run"),
        ({"sinks": {"webhook": {"url": "https://collector.example.net/v"}}}, "hostile", "is not allowed"),
        ({"device": {"id": "someone-else"}}, "forbidden", "device.id"),
        ({"source": {"kind": "folder", "path": str(allowed / "empty")}}, "no_station", "image folder is empty"),
        ({"source": {"kind": "folder", "path": str(allowed / "missing")}}, "no_station", "no such image folder"),
    ]
    version = v2 + 1000
    for overlay, reason, detail in cases:
        version += 1
        fleet.publish_raw(fleet.body(version, overlay))
        s = fleet.watch.refused(version)
        assert s is not None and s.last_refusal is not None, (overlay, a.log_tail())
        assert (s.last_refusal.reason, detail in s.last_refusal.detail) == (reason, True), (overlay, s.last_refusal)

    def tamper(env: dict[str, object]) -> None:
        body = env["body"]
        assert isinstance(body, dict)
        body["config"] = {"decision": {"defect_min_confidence": 0.1}}

    version += 1
    fleet.publish_raw(fleet.body(version, {"decision": {"defect_min_confidence": 0.9}}), tamper=tamper)
    s = fleet.watch.refused(version)
    assert s is not None and s.last_refusal is not None and s.last_refusal.reason == "bad_signature"
    version += 1
    fleet.publish_raw(fleet.body(version, {"decision": {}}, target={"devices": ["other-device"]}))
    s = fleet.watch.refused(version)
    assert s is not None and s.last_refusal is not None and s.last_refusal.reason == "wrong_target"
    fleet.publish_payload(b"\x00not json")
    s = fleet.watch.refused(0)
    assert s is not None and s.last_refusal is not None and s.last_refusal.reason == "bad_document"

    # through all of it the agent kept running version 2, in the same process, every frame inspected
    n = a.frames_in()
    assert wait_for(lambda: a.frames_in() >= n + 10, 15)
    status = a.status()
    assert status is not None and status["pid"] == pid and status["dropped"] == {}
    assert fleet.watch.last is not None and fleet.watch.last.version == v2


def test_a_sink_that_cannot_write_is_rolled_back_by_itself(fleet: Fleet) -> None:
    a = fleet.agent
    a.start()
    assert fleet.watch.wait(lambda s: s.version == 0, 20), a.log_tail()
    pid = wait_for(a.pid, 10)  # the status file is written every 0.1 s
    assert pid is not None, a.log_tail()
    blocker = a.workdir / "allowed" / "a-file"
    blocker.write_text("not a directory")
    v = fleet.push({"sinks": {"jsonl": {"path": str(blocker / "verdicts.jsonl")}}})
    s = fleet.watch.wait(lambda s: s.last_rollback is not None and s.last_rollback.version == v, 20)
    assert s is not None and s.last_rollback is not None, a.log_tail()
    assert s.last_rollback.reason == "trial_failed" and "sink jsonl failed" in s.last_rollback.detail
    assert s.version == 0 and s.trial is None
    # back on the device's own sink, in the same process
    size = (a.logs / "verdicts.jsonl").stat().st_size
    assert wait_for(lambda: (a.logs / "verdicts.jsonl").stat().st_size > size, 10)
    assert a.pid() == pid

    def rolled_back_in_status() -> bool:  # the status file is written every 0.1 s
        rc = (a.status() or {}).get("remote_config") or {}
        return (rc.get("last_rollback") or {}).get("version") == v

    assert wait_for(rolled_back_in_status, 5), a.status()
