"""SIGKILL the real agent process in every updater state: after a restart exactly one working model
serves (the committed one, or the new one once the interrupted update completes), never none and
never a half-installed one. Fault points are injected through ``[updater.faults]`` in the config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cloud_registry.publisher import reissue
from converters.keys import KeyPaths
from edgeline.core.protocol.delivery import parse_state
from edgeline.core.protocol.manifest import Manifest, artifact_for, parse_manifest
from tests.delivery.agent_proc import AgentProcess, write_frames
from tests.delivery.conftest import BuiltBundle, Cloud, wait_for

# name -> (faults, extra updater keys, version serving after the restart)
SCENARIOS: dict[str, tuple[dict[str, Any], dict[str, Any], int]] = {
    "DOWNLOADING": ({"pause_at": "DOWNLOADING"}, {}, 2),
    "DOWNLOADING-mid": ({"pause_after_chunks": 1}, {}, 2),
    "VERIFIED": ({"pause_at": "VERIFIED"}, {}, 2),
    "STAGED": ({"pause_at": "STAGED"}, {}, 2),
    "TRIAL": ({"pause_at": "TRIAL"}, {}, 1),
    "COMMITTED": ({"pause_at": "COMMITTED"}, {}, 2),
    "ROLLED_BACK": ({"pause_at": "ROLLED_BACK"}, {"trial_latency_budget_ms": 0.0001}, 1),
}


def rechunk(man: Manifest, data: bytes, chunk_size: int) -> Manifest:
    body = man.to_body()
    body["artifact"] = artifact_for(data, chunk_size=chunk_size).model_dump(mode="json")
    return parse_manifest(body)


def test_sigkill_in_every_updater_state_leaves_one_working_model(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any], tmp_path: Path
) -> None:
    frames_dir = write_frames(tmp_path / "frames", frames)
    trust = KeyPaths(cloud.key_dir).trust
    updater = {"trial_frames": 5, "trial_timeout_s": 30.0, "trial_latency_budget_ms": 2000.0, "min_free_bytes": 0}
    procs: dict[str, AgentProcess] = {}
    for name, (faults, extra, _) in SCENARIOS.items():
        dev_id = "crash-" + name.lower().replace("_", "-")
        procs[name] = AgentProcess(
            dev_id, tmp_path / dev_id, cloud.broker.port, trust, frames_dir, {**updater, **extra}, faults
        )
    states: dict[str, Any] = {}
    cloud.link.subscribe(
        cloud.topics.all_device_states(),
        lambda t, p, r: states.__setitem__(cloud.topics.device_id_from(t), parse_state(p)),
    )

    # 1. every device runs v1, committed (installed in-process: fast, same state dir)
    for p in procs.values():
        dev = cloud.device(p.device_id, frames=frames, state_dir=p.state_dir, **updater)
        cloud.deploy(bundles[1], p.device_id)
        assert wait_for(lambda dev=dev: dev.version() == 1 and dev.plugin.state == "COMMITTED"), dev.kinds()
        dev.stop()
    cloud.devices.clear()

    # 2. v2 in 1 KiB chunks (several chunks, so a download can stop half-way)
    v2 = rechunk(bundles[2].manifest, bundles[2].data, 1024)
    assert v2.artifact.chunk_count >= 3
    cloud.publisher.publish_artifact(v2, bundles[2].data)
    for p in procs.values():
        p.start(with_faults=True)
    try:
        for p in procs.values():
            cloud.publisher.publish_desired(
                p.device_id, reissue(v2, sequence=cloud.next_sequence(), devices=(p.device_id,))
            )
        for name, p in procs.items():
            assert wait_for(lambda p=p: p.fault_hit() is not None, 60), f"{name}: fault never hit\n{p.log_tail()}"
        # 3. SIGKILL in that state
        for name, p in procs.items():
            p.sigkill()
            rec = p.record()
            assert rec is not None
            expected_state = "DOWNLOADING" if name == "DOWNLOADING-mid" else name
            assert rec["state"] == expected_state, (name, rec["state"])
            (p.state_dir / "fault-hit").unlink()
        # 4. restart without faults: each converges to exactly one working model
        for p in procs.values():
            p.start(with_faults=False)
        for name, p in procs.items():
            want = bundles[SCENARIOS[name][2]].manifest.artifact.sha256

            def converged(p: AgentProcess = p, want: str = want) -> bool:
                st, rec = p.status(), p.record()
                if not st or not rec or not st.get("model") or rec["state"] not in ("COMMITTED", "ROLLED_BACK"):
                    return False
                return st["model"]["sha256"] == want and st["frames"]["inspected"] > 0

            assert wait_for(converged, 60), f"{name}: did not converge\n{p.record()}\n{p.log_tail()}"
            rec = p.record()
            assert rec is not None
            active = rec["active"]
            assert rec["slots"][active]["sha256"] == want, name
            assert os.readlink(p.state_dir / "slots" / "current") == active, name
            assert rec["pending"] is None
            assert wait_for(
                lambda p=p, want=want: (
                    (s := states.get(p.device_id)) is not None
                    and s.online
                    and s.model is not None
                    and s.model.sha256 == want
                )
            ), name
            assert p.alive, name
        assert procs["TRIAL"].record()["last"]["reason"] == "crashed"  # type: ignore[index]
        assert procs["ROLLED_BACK"].record()["last"]["reason"] == "trial_latency"  # type: ignore[index]
        resumed = [
            e
            for e in cloud.seen_events
            if e.device_id == procs["DOWNLOADING-mid"].device_id and e.kind == "downloading" and e.detail == "resumed"
        ]
        assert resumed and 1 <= resumed[0].progress["have"] < resumed[0].progress["total"]
    finally:
        for p in procs.values():
            p.sigkill()


@pytest.mark.parametrize("state", ["VERIFIED"])
def test_crash_at_injected_point_kills_the_process(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any], tmp_path: Path, state: str
) -> None:
    """``crash_at`` makes the agent SIGKILL itself: the process is gone, the record says where."""
    frames_dir = write_frames(tmp_path / "frames", frames)
    trust = KeyPaths(cloud.key_dir).trust
    p = AgentProcess(
        "crash-self",
        tmp_path / "crash-self",
        cloud.broker.port,
        trust,
        frames_dir,
        {"trial_frames": 2, "min_free_bytes": 0, "trial_latency_budget_ms": 2000.0},
        {"crash_at": state},
    )
    p.start(with_faults=True)
    try:
        cloud.deploy(bundles[1], p.device_id)
        assert wait_for(lambda: not p.alive, 60), p.log_tail()
        assert p.proc is not None and p.proc.returncode == -9
        assert (p.record() or {}).get("state") == state
        p.start(with_faults=False)
        assert wait_for(lambda: ((p.status() or {}).get("model") or {}).get("version") == 1, 60), p.log_tail()
    finally:
        p.sigkill()
