"""The agent end to end on real media with real bundles: inspection, no model, hot swap under load, a
bundle failing its self-test, plugin failures, status file and Prometheus text."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import SelfTestError
from edge_agent.inference import load_and_check
from edge_agent.plugins import FrameResult
from edge_agent.runtime import Agent, AgentState
from edge_agent.status import prometheus_text, read_status
from edgeline.core.protocol.signing import TrustStore
from tests.agent.conftest import N_VIDEO
from tests.agent.helpers import MjpegCamera, Recorder, events, make_config, verdicts, wait_for


def test_agent_inspects_every_frame_of_a_video(
    tmp_path: Path,
    video_file: Path,
    tiny_bundle: Path,
    trust_path: Path,
    line_frames: tuple[list[np.ndarray], list[str]],
) -> None:
    cfg = make_config(
        tmp_path,
        {"kind": "file", "path": str(video_file)},
        model={"bundle": str(tiny_bundle), "trust_file": str(trust_path)},
    )
    rec = Recorder()
    agent = Agent(cfg, plugins=[rec])
    assert agent.run() == 0
    assert rec.started and rec.stopped
    vs = verdicts(tmp_path / "verdicts.jsonl")
    assert [v["frame_id"] for v in vs] == list(range(N_VIDEO))
    assert {v["model_version"] for v in vs} == {1}
    # the tiny model separates the two classes: the verdicts follow the truth on (almost) every frame
    labels = line_frames[1]
    assert sum(v["label"] == lab for v, lab in zip(vs, labels, strict=True)) >= N_VIDEO - 3
    sampled = [r for r in rec.results if r.input_stats is not None]  # default: every 10th frame
    assert len(sampled) == N_VIDEO // 10 and all(0 <= r.input_stats["brightness"] <= 1 for r in sampled)
    c = agent.counters()
    assert c["state"] == "STOPPED" and c["camera"]["state"] == "ENDED"
    assert c["frames"] == {"in": N_VIDEO, "inspected": N_VIDEO, "queued": 0}
    assert c["dropped"] == {}
    assert sum(c["verdicts"]["by_class"].values()) == N_VIDEO
    assert c["verdicts"]["by_verdict"]["defect"] == sum(v["verdict"] == "defect" for v in vs)
    assert c["latency"]["count"] == N_VIDEO and c["latency"]["p99_ms"] >= c["latency"]["p50_ms"] > 0
    assert c["sinks"]["jsonl"]["errors"] == 0
    assert c["first_verdict_s"] is not None
    on_disk = read_status(tmp_path / "status.json")
    assert on_disk["state"] == "STOPPED" and on_disk["frames"]["inspected"] == N_VIDEO


def test_input_stats_sampling_is_configurable(
    tmp_path: Path, video_file: Path, tiny_bundle: Path, trust_path: Path
) -> None:
    cfg = make_config(
        tmp_path,
        {"kind": "file", "path": str(video_file)},
        model={"bundle": str(tiny_bundle), "trust_file": str(trust_path)},
        inference={"stats_every": 10},
    )
    rec = Recorder()
    Agent(cfg, plugins=[rec]).run()
    sampled = [r.verdict.frame_id for r in rec.results if r.input_stats is not None]
    assert sampled == list(range(0, N_VIDEO, 10))


def test_without_a_model_frames_are_counted_and_the_line_is_told(tmp_path: Path, video_file: Path) -> None:
    cfg = make_config(tmp_path, {"kind": "file", "path": str(video_file)}, model={"bundle": str(tmp_path / "none")})
    agent = Agent(cfg)
    assert agent.run() == 0
    c = agent.counters()
    assert c["frames"]["in"] == N_VIDEO and c["frames"]["inspected"] == 0
    assert c["dropped"] == {"no_model": N_VIDEO}
    assert c["model"] is None
    assert events(tmp_path / "verdicts.jsonl", "no_model")
    assert verdicts(tmp_path / "verdicts.jsonl") == []


def test_a_model_can_arrive_later_through_a_plugin(
    tmp_path: Path, video_file: Path, tiny_bundle: Path, trust: TrustStore
) -> None:
    model = load_and_check(tiny_bundle, trust)
    cfg = make_config(tmp_path, {"kind": "file", "path": str(video_file), "max_fps": 400})

    def deliver(_r: FrameResult) -> None:
        pass

    class Updater:
        name = "updater"

        def start(self, agent: Agent) -> None:  # type: ignore[override]
            def later() -> None:  # once frames are being dropped for want of a model (not after a fixed
                # delay: on a loaded machine the whole video could pass before a timer fires, or none of it)
                deadline = time.monotonic() + 30
                while agent.counters()["dropped"].get("no_model", 0) < 5 and time.monotonic() < deadline:
                    time.sleep(0.001)
                agent.activate(model)

            threading.Thread(target=later, daemon=True).start()

        def on_result(self, result: FrameResult) -> None:
            deliver(result)

        def stop(self) -> None:
            pass

    agent = Agent(cfg, plugins=[Updater()])
    agent.run()
    c = agent.counters()
    assert c["model"]["version"] == 1
    assert 0 < c["frames"]["inspected"] < N_VIDEO
    assert c["frames"]["inspected"] + c["dropped"]["no_model"] == N_VIDEO
    assert events(tmp_path / "verdicts.jsonl", "model_activated")


def test_hot_swap_under_load_loses_and_misserves_no_frame(
    tmp_path: Path, video_file: Path, tiny_bundle: Path, bundle_v2: Path, trust: TrustStore
) -> None:
    cfg = make_config(
        tmp_path, {"kind": "file", "path": str(video_file), "loop": True, "max_fps": 600, "queue_size": 4}
    )
    fed = 3 * N_VIDEO
    swap: dict[str, object] = {}

    def on_result(r: FrameResult) -> None:
        if r.verdict.frame_id == 60:  # start loading v2 in the background while frames keep coming
            swap["future"] = agent.load_in_background(bundle_v2, trust)
        if r.verdict.frame_id == fed - 1:
            threading.Thread(target=agent.reader.stop).start()  # stop feeding after exactly `fed` frames

    rec = Recorder(on_result)
    agent = Agent(cfg, plugins=[rec], model=load_and_check(tiny_bundle, trust))
    agent.start()
    assert agent.wait(60)
    fut = swap["future"]
    assert fut.result(10).manifest.version == 2  # type: ignore[attr-defined]
    ids = [r.verdict.frame_id for r in rec.results]
    versions = [r.verdict.model_version for r in rec.results]
    assert ids == list(range(len(ids))) and len(ids) >= fed  # nothing lost, in order
    k = versions.index(2)
    assert 60 < k < fed  # the swap happened under load ...
    assert versions == [1] * k + [2] * (len(ids) - k)  # ... between two frames: all v1, then all v2
    sha = {1: rec.results[0].model_sha256, 2: rec.results[-1].model_sha256}
    assert sha[1] != sha[2]
    assert all(r.model_sha256 == sha[r.verdict.model_version] for r in rec.results)
    c = agent.counters()
    assert c["frames"]["inspected"] == len(ids) == c["frames"]["in"]
    assert c["dropped"] == {} and c["models"]["activated"] == 1  # v1 was given at construction
    assert c["model"]["version"] == 2
    logged = verdicts(tmp_path / "verdicts.jsonl")
    assert [v["model_version"] for v in logged] == versions


def test_a_bundle_failing_its_self_test_is_refused_and_the_old_model_keeps_serving(
    tmp_path: Path, video_file: Path, tiny_bundle: Path, bad_bundle: Path, trust: TrustStore
) -> None:
    cfg = make_config(tmp_path, {"kind": "file", "path": str(video_file), "max_fps": 600})
    swap: dict[str, object] = {}

    def on_result(r: FrameResult) -> None:
        if r.verdict.frame_id == 10:
            swap["future"] = agent.load_in_background(bad_bundle, trust)

    rec = Recorder(on_result)
    agent = Agent(cfg, plugins=[rec], model=load_and_check(tiny_bundle, trust))
    agent.run()
    with pytest.raises(SelfTestError):
        swap["future"].result(10)  # type: ignore[attr-defined]
    assert len(rec.results) == N_VIDEO
    assert {r.verdict.model_version for r in rec.results} == {1}
    c = agent.counters()
    assert c["models"]["rejected"] == 1 and "self-test" in c["models"]["last_rejection"]
    assert c["model"]["version"] == 1
    (ev,) = events(tmp_path / "verdicts.jsonl", "model_rejected")
    assert ev["reason"] == "selftest_failed"


def test_a_bad_initial_bundle_leaves_the_agent_running_without_a_model(
    tmp_path: Path, video_file: Path, bad_bundle: Path, trust_path: Path
) -> None:
    cfg = make_config(
        tmp_path,
        {"kind": "file", "path": str(video_file)},
        model={"bundle": str(bad_bundle), "trust_file": str(trust_path)},
    )
    agent = Agent(cfg)
    assert agent.run() == 0
    c = agent.counters()
    assert c["model"] is None and c["models"]["rejected"] == 1
    assert c["dropped"] == {"no_model": N_VIDEO}


def test_a_failing_plugin_never_stops_the_loop(
    tmp_path: Path, video_file: Path, tiny_bundle: Path, trust: TrustStore
) -> None:
    class Broken:
        name = "broken"

        def start(self, agent: object) -> None:
            raise RuntimeError("cannot start")

        def on_result(self, result: FrameResult) -> None:
            if result.verdict.frame_id % 2:
                raise ValueError("boom")

        def stop(self) -> None:
            raise RuntimeError("cannot stop")

    rec = Recorder()
    cfg = make_config(tmp_path, {"kind": "file", "path": str(video_file)})
    agent = Agent(cfg, plugins=[Broken(), rec], model=load_and_check(tiny_bundle, trust))
    assert agent.run() == 0
    assert len(rec.results) == N_VIDEO  # the plugin after the broken one saw every frame
    assert agent.counters()["plugin_errors"] == {"broken": 1 + N_VIDEO // 2 + 1}


def test_live_camera_drops_oldest_frames_when_inference_is_slow_and_counts_them(
    tmp_path: Path, camera: MjpegCamera, tiny_bundle: Path, trust: TrustStore
) -> None:
    import time

    slow = Recorder(lambda _r: time.sleep(0.05))  # ~20 frames/s against a 60 frames/s camera
    cfg = make_config(tmp_path, {"kind": "url", "url": camera.url, "queue_size": 2})
    assert cfg.source.policy == "drop_oldest"
    agent = Agent(cfg, plugins=[slow], model=load_and_check(tiny_bundle, trust))
    agent.start()
    assert wait_for(lambda: agent.counters()["dropped"].get("queue_full", 0) >= 10, 15)
    agent.stop()
    c = agent.counters()
    assert c["frames"]["in"] == c["frames"]["inspected"] + c["dropped"]["queue_full"]
    assert c["frames"]["inspected"] == len(slow.results)


def test_camera_loss_and_return_is_reported_to_the_line(
    tmp_path: Path, camera: MjpegCamera, tiny_bundle: Path, trust: TrustStore
) -> None:
    cfg = make_config(
        tmp_path,
        {"kind": "url", "url": camera.url, "read_timeout_ms": 1000, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2},
    )
    agent = Agent(cfg, model=load_and_check(tiny_bundle, trust))
    agent.start()
    try:
        assert wait_for(lambda: agent.counters()["frames"]["inspected"] >= 10)
        camera.stop()
        assert wait_for(lambda: agent.counters()["camera"]["state"] == "RECONNECTING", 10)
        assert agent.state is AgentState.RUNNING  # the agent stays up while the camera is away
        seen = agent.counters()["frames"]["inspected"]
        camera.start()
        assert wait_for(lambda: agent.counters()["frames"]["inspected"] > seen + 5, 15)
    finally:
        agent.stop()
    c = agent.counters()
    assert c["camera"]["reconnects"] >= 1
    states = [e["state"] for e in events(tmp_path / "verdicts.jsonl", "camera_state")]
    assert states[:2] == ["CONNECTING", "STREAMING"]
    assert "RECONNECTING" in states and states[states.index("RECONNECTING") :].count("STREAMING") >= 1
    assert states[-1] == "STOPPED"
    status = read_status(tmp_path / "status.json")
    assert status["camera"]["reconnects"] >= 1 and status["state"] == "STOPPED"


def test_prometheus_text_exposes_the_counters(
    tmp_path: Path, video_file: Path, tiny_bundle: Path, trust_path: Path
) -> None:
    cfg = make_config(
        tmp_path,
        {"kind": "file", "path": str(video_file)},
        model={"bundle": str(tiny_bundle), "trust_file": str(trust_path)},
    )
    agent = Agent(cfg)
    agent.run()
    text = prometheus_text(agent.counters())
    assert f'edgeline_inspected_total{{device="dev-1"}} {N_VIDEO}' in text
    assert f'edgeline_inference_seconds_bucket{{device="dev-1",le="+Inf"}} {N_VIDEO}' in text
    assert f'edgeline_inference_seconds_count{{device="dev-1"}} {N_VIDEO}' in text
    assert 'edgeline_model_info{device="dev-1",name="tiny",version="1",sha256="' in text
    assert 'edgeline_camera_state{device="dev-1",state="ENDED"} 1' in text
    assert 'edgeline_sink_errors_total{device="dev-1",sink="jsonl"} 0' in text
    for line in text.splitlines():  # every sample line is "name{labels} number"
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1].replace("+Inf", "inf"))
    assert json.loads(json.dumps(agent.counters()))  # the status document is plain JSON


def test_a_corrupt_video_fails_the_agent_with_exit_code_1(tmp_path: Path) -> None:
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00AVI garbage" * 50)
    agent = Agent(make_config(tmp_path, {"kind": "file", "path": str(junk)}))
    assert agent.run() == 1
    c = agent.counters()
    assert c["state"] == "FAILED" and c["camera"]["state"] == "FAILED"
    assert "cannot open" in c["camera"]["last_error"]


def test_a_truncated_video_is_inspected_up_to_where_it_breaks(
    tmp_path: Path, video_file: Path, tiny_bundle: Path, trust: TrustStore
) -> None:
    cut = tmp_path / "cut.avi"
    data = video_file.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    agent = Agent(make_config(tmp_path, {"kind": "file", "path": str(cut)}), model=load_and_check(tiny_bundle, trust))
    assert agent.run() == 0
    c = agent.counters()
    assert 0 < c["frames"]["inspected"] < N_VIDEO
    assert c["frames"]["in"] == c["frames"]["inspected"] and c["camera"]["state"] == "ENDED"


def test_frames_that_cannot_be_preprocessed_are_counted_and_skipped(
    tmp_path: Path, tiny_bundle: Path, trust: TrustStore, line_frames: tuple[list[np.ndarray], list[str]]
) -> None:
    from edge_agent.sources import MemoryCapture

    good = line_frames[0][:4]
    frames = [good[0], np.zeros((96, 128, 3), np.float64), good[1], np.zeros((0, 0), np.uint8), good[2]]
    rec = Recorder()
    agent = Agent(
        make_config(tmp_path, {"kind": "file", "path": "memory"}),
        plugins=[rec],
        capture=MemoryCapture(frames),
        model=load_and_check(tiny_bundle, trust),
    )
    assert agent.run() == 0
    c = agent.counters()
    assert [r.verdict.frame_id for r in rec.results] == [0, 2, 4]
    assert c["dropped"] == {"error": 2} and c["errors"] == {"PreprocessError": 2}
    assert c["frames"]["in"] == 5
