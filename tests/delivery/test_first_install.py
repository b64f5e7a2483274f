"""A first install (nothing committed before) that fails its trial stops serving: fail closed, as on
every other path. The device then serves nothing, reports ``no_model``, and still takes the next
deployment; after a restart it serves nothing either (nothing was committed)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from converters.keys import KeyPaths
from tests.delivery.agent_proc import AgentProcess, write_frames
from tests.delivery.conftest import BuiltBundle, Cloud, wait_for


def test_a_first_install_that_fails_its_trial_stops_serving(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any]
) -> None:
    dev = cloud.device("first-1", frames=frames, trial_latency_budget_ms=0.0001)  # every trial fails
    cloud.deploy(bundles[1], "first-1")
    assert wait_for(lambda: "rolled_back" in dev.kinds()), dev.kinds()
    assert dev.reasons() == ["trial_latency"]
    assert dev.agent.current_model is None  # not serving the model that failed
    assert dev.plugin.record.active is None and dev.plugin.record.state == "ROLLED_BACK"
    assert wait_for(lambda: dev.link.state.health == "no_model" and dev.link.state.model is None)
    done = dev.agent.frames_done
    assert not wait_for(lambda: dev.agent.frames_done > done, 0.5)  # nothing is inspected any more
    dev.plugin.cfg = dev.plugin.cfg.model_copy(update={"trial_latency_budget_ms": 2000.0})
    cloud.deploy(bundles[2], "first-1")  # the next deployment still goes in
    assert wait_for(lambda: dev.version() == 2 and dev.plugin.state == "COMMITTED"), dev.kinds()


def test_the_real_agent_stops_serving_a_first_install_that_fails_its_trial(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any], tmp_path: Path
) -> None:
    p = AgentProcess(
        "first-2",
        tmp_path / "first-2",
        cloud.broker.port,
        KeyPaths(cloud.key_dir).trust,
        write_frames(tmp_path / "frames", frames),
        {"trial_frames": 3, "trial_timeout_s": 30.0, "trial_latency_budget_ms": 0.0001, "min_free_bytes": 0},
        {},
    )
    p.start(with_faults=False)
    try:
        cloud.deploy(bundles[1], p.device_id)
        assert wait_for(lambda: (p.record() or {}).get("state") == "ROLLED_BACK", 60), p.log_tail()
        after = time.time() + 0.5

        def fresh_status() -> dict[str, Any]:
            st = p.status() or {}
            return st if st.get("updated_at", 0) > after else {}

        assert wait_for(lambda: fresh_status().get("frames", {}).get("in", 0) > 0, 20), (p.status(), p.log_tail())
        assert fresh_status().get("model", "unset") is None, (p.status(), p.log_tail())
    finally:
        p.sigkill()
