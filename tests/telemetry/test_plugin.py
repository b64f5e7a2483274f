"""The telemetry plugin on real inference results (real model, real frames, real outbox), driven by
a simulated clock, without a broker."""

from __future__ import annotations

import json
from pathlib import Path

from edge_agent.errors import OutboxError
from edge_agent.model import LoadedModel
from edge_agent.outbox.store import Outbox
from edge_agent.telemetry.plugin import TelemetryPlugin, error_and_drop_counts
from edge_agent.telemetry.privacy import pseudonym
from edgeline.core.protocol.telemetry import parse_window
from edgeline.core.protocol.topics import Topics
from firmware_configs.telemetry_section import TelemetrySection
from tests.telemetry.conftest import SECRET, AgentStub, SimClock, frames, run_frames


def make(tmp_path: Path, clock: SimClock, agent: AgentStub, **cfg: object) -> TelemetryPlugin:
    config = TelemetrySection(**{"window_s": 60.0, "min_frames": 10, **cfg})  # type: ignore[arg-type]
    ob = Outbox(tmp_path / "outbox.db", clock=clock)
    p = TelemetryPlugin(
        config, outbox=ob, secret=SECRET, topics=Topics(), clock=clock, background=False, group="hall-1"
    )
    p.start(agent)
    return p


def queued(p: TelemetryPlugin) -> list:  # type: ignore[type-arg]
    return [parse_window(m.payload) for m in p.outbox.peek(10_000) if m.kind == "telemetry"]


def test_windows_by_time_carry_aggregates_of_real_frames(tmp_path: Path, ref_model: LoadedModel) -> None:
    clock = SimClock()
    agent = AgentStub(current_model=ref_model)
    p = make(tmp_path, clock, agent)
    for r in run_frames(ref_model, frames(30, seed=3)):
        p.on_result(r)
        clock.advance(1.0)
    clock.advance(60)
    p.tick()
    [w] = queued(p)
    assert w.frames == 30 and w.stats_frames == 30
    assert sum(w.class_counts.values()) == 30 and set(w.class_counts) == {"ok", "spot"}
    assert sum(w.confidence) == 30
    assert all(sum(h) == 30 for h in w.input_stats.values())
    assert w.device == pseudonym(agent.device_id, SECRET) and agent.device_id not in json.dumps(w.to_body())
    assert w.group == "hall-1"
    assert w.model.sha256 == ref_model.manifest.artifact.sha256
    assert w.latency_ms is not None and 0 < w.latency_ms.p50 <= w.latency_ms.p99
    assert set(w.drift) == {"brightness", "contrast", "sharpness", "edge_density", "confidence", "class_mix"}
    assert not any(d.drifted for d in w.drift.values())
    assert p.outbox.peek(1)[0].topic == Topics().device_telemetry(agent.device_id)


def test_windows_by_frame_count_and_errors_and_drops(tmp_path: Path, ref_model: LoadedModel) -> None:
    clock = SimClock()
    agent = AgentStub(current_model=ref_model)
    p = make(tmp_path, clock, agent, window_s=3600.0, window_frames=12)
    results = list(run_frames(ref_model, frames(36, seed=4)))
    for i, r in enumerate(results):
        if i == 5:
            agent.errors += 2
            agent.dropped += 3
        p.on_result(r)
        clock.advance(0.5)
    p.tick()
    ws = queued(p)
    assert [w.frames for w in ws] == [12, 12, 12]
    assert (ws[0].errors, ws[0].drops) == (2, 3)
    assert (ws[1].errors, ws[1].drops) == (0, 0)


def test_error_and_drop_counts_read_the_agent_counters() -> None:
    snap = {"errors": {"PreprocessError": 2, "ModelLoadError": 1}, "dropped": {"queue_full": 4, "error": 3}}
    assert error_and_drop_counts(snap) == (3, 4)
    assert error_and_drop_counts({}) == (0, 0)


def test_small_windows_wait_for_k_across_a_restart(tmp_path: Path, ref_model: LoadedModel) -> None:
    clock = SimClock()
    agent = AgentStub(current_model=ref_model)
    p = make(tmp_path, clock, agent, min_frames=20)
    results = list(run_frames(ref_model, frames(24, seed=5)))
    for r in results[:8]:
        p.on_result(r)
    p.stop()  # 8 frames: below k, kept on disk, not sent
    assert queued(p) == []
    p.outbox.close()
    p2 = make(tmp_path, clock, agent, min_frames=20)
    clock.advance(120)
    for r in results[8:]:
        p2.on_result(r)
    p2.stop()
    [w] = queued(p2)
    assert (w.frames, w.merged) == (24, 2)


def test_darkened_line_raises_one_local_alarm_per_episode(tmp_path: Path, ref_model: LoadedModel) -> None:
    clock = SimClock()
    agent = AgentStub(current_model=ref_model)
    p = make(tmp_path, clock, agent, window_frames=40, window_s=86400.0)

    def feed(images: int, seed: int, dark: int) -> None:
        for r in run_frames(ref_model, frames(images, seed=seed, dark=dark)):
            p.on_result(r)
            clock.advance(1)
        p.tick()

    feed(160, seed=10, dark=0)  # 4 normal windows
    assert agent.events == []
    feed(240, seed=11, dark=70)  # 6 dark windows
    # one alarm per channel for the whole episode: the inputs, and the predicted-class mix that the
    # darker frames also shifted
    alarms = {str(e[1]["channel"]): e[1] for e in agent.events if e[0] == "drift_alarm"}
    assert len(agent.events) == 2 and set(alarms) == {"input", "class_mix"}
    assert "brightness" in alarms["input"]["drifted"]  # type: ignore[operator]
    feed(160, seed=12, dark=0)  # back to normal: each cleared once
    assert sorted(e[0] for e in agent.events) == ["drift_alarm"] * 2 + ["drift_cleared"] * 2
    drifted = [w.drift["brightness"].drifted for w in queued(p)]
    assert drifted == [False] * 4 + [True] * 6 + [False] * 4


def test_deployment_events_share_the_outbox_and_go_first(tmp_path: Path, ref_model: LoadedModel) -> None:
    clock = SimClock()
    p = make(tmp_path, clock, AgentStub(current_model=ref_model), window_frames=10)
    for r in run_frames(ref_model, frames(10, seed=6)):
        p.on_result(r)
    p.tick()
    topic = Topics().device_events("line-7-cam-2")
    assert p.outbox.put(topic, b'{"event":"committed"}', kind="event", key="evt-1")
    assert [m.kind for m in p.outbox.peek(10)] == ["event", "telemetry"]


def test_frames_of_a_window_the_full_disk_refused_go_out_merged_later(tmp_path: Path, ref_model: LoadedModel) -> None:
    clock = SimClock()
    p = make(tmp_path, clock, AgentStub(current_model=ref_model), window_frames=20)
    results = list(run_frames(ref_model, frames(60, seed=8)))
    topic = Topics().device_events("line-7-cam-2")
    pages = p.outbox._db.execute("PRAGMA page_count").fetchone()[0]
    p.outbox._db.execute(f"PRAGMA max_page_count={pages + 2}")
    n = 0
    for size in (2000, 200, 20):  # the disk fills up with deployment events, which are never dropped
        while True:
            try:
                p.outbox.put(topic, b"e" * size, kind="event", key=f"e{n}")
                n += 1
            except OutboxError:
                break
    for r in results[:40]:
        p.on_result(r)
    p.tick()  # two windows closed; neither could be stored, the line went on
    assert queued(p) == []
    p.outbox.ack([m.id for m in p.outbox.peek(1000)])  # connectivity back: the events went out
    for r in results[40:]:
        p.on_result(r)
    p.tick()
    ws = queued(p)
    assert sum(w.frames for w in ws) == 60  # nothing lost: the refused frames came along
    assert max(w.merged for w in ws) >= 2
