"""Field metrics in telemetry windows: the verdicts' defect-score histograms and the operator-feedback
counts per model version, read from a real feedback store by the real plugin into a real outbox, with
the window's privacy rules; and proof that no per-part value (part id, result id, one part's
confidence, the operator's name) leaves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_agent.feedback.rules import FeedbackRequest
from edge_agent.feedback.service import FeedbackService
from edge_agent.feedback.store import FeedbackStore
from edge_agent.outbox.store import Outbox
from edge_agent.telemetry.field import CELLS, FieldTally, cell_of, defect_score
from edge_agent.telemetry.plugin import TelemetryPlugin
from edge_agent.telemetry.privacy import LaplaceNoise
from edge_agent.telemetry.windows import ModelKey, RawWindow
from edgeline.core.errors import ProtocolError
from edgeline.core.protocol.field_window import SCORE_BINS, FieldMetrics
from edgeline.core.protocol.telemetry import TelemetryWindow, parse_window
from edgeline.core.protocol.topics import Topics
from firmware_configs.telemetry_section import TelemetrySection
from tests.telemetry.conftest import SECRET, AgentStub, SimClock, result

#: confidences no histogram bin edge or count can spell
CONFS = [0.912345, 0.873219, 0.964271, 0.781133, 0.657913, 0.998877]


def test_cells_follow_the_verdict_side_the_truth_and_the_defect_score() -> None:
    assert defect_score("ok", 0.9) == pytest.approx(0.1) and defect_score("defect", 0.7) == 0.7
    assert defect_score("unknown", 0.0) is None and defect_score("ok", float("nan")) is None
    assert cell_of("ok", "ok", 0.95) == 0  # passed, good, score 0.05
    assert cell_of("ok", "defect", 0.95) == SCORE_BINS  # an escape, score bin 0
    assert cell_of("defect", "ok", 0.72) == 2 * SCORE_BINS + 7  # a false reject, score 0.72
    assert cell_of("defect", "scratch", 1.0) == 3 * SCORE_BINS + SCORE_BINS - 1  # a class counts as defect
    assert cell_of("unknown", "ok", 0.0) == 4 * SCORE_BINS and cell_of("unknown", "defect", None) == CELLS - 1


def test_tally_merges_persists_and_takes_noise() -> None:
    a, b = FieldTally(), FieldTally()
    for conf in (0.9, 0.95):
        a.add_verdict(result("ok", conf).verdict)
    b.add_verdict(result("spot", 0.8).verdict)
    b.feedback[("tiny", 1)] = np.zeros((2, CELLS), np.int64)
    b.feedback[("tiny", 1)][0, 3] = 2
    m = a.merge(b)
    assert m.score_pass.sum() == 2 and m.score_reject[8] == 1 and m.feedback[("tiny", 1)][0, 3] == 2
    back = FieldTally.from_state(json.loads(json.dumps(m.to_state())))
    assert back.to_state() == m.to_state()
    assert FieldTally.from_state(None).to_state() == FieldTally().to_state()  # a window from before the block
    noisy = LaplaceNoise(epsilon=1.0, rng=np.random.default_rng(0)).apply(
        RawWindow(ModelKey("tiny", 1, "a" * 64), 0.0, 1.0, frames=3, field_metrics=m)
    )
    fm = noisy.field_metrics
    assert fm.feedback[("tiny", 1)].shape == (2, CELLS) and (fm.feedback[("tiny", 1)] < 0).any()  # signed
    assert not np.array_equal(fm.feedback[("tiny", 1)], m.feedback[("tiny", 1)])
    assert fm.noise_scale == pytest.approx(12.0) and fm.wire().noise_scale == pytest.approx(12.0)


def _plugin(tmp_path: Path, clock: SimClock, agent: AgentStub, **cfg: object) -> TelemetryPlugin:
    config = TelemetrySection(**{"window_s": 60.0, "min_frames": 5, **cfg})
    ob = Outbox(tmp_path / "outbox.db", clock=clock)
    p = TelemetryPlugin(config, outbox=ob, secret=SECRET, topics=Topics(), clock=clock, background=False)
    p.start(agent)
    return p


def _line(tmp_path: Path, clock: SimClock) -> tuple[AgentStub, FeedbackService]:
    store = FeedbackStore(tmp_path / "feedback.db", clock=clock)
    service = FeedbackService(store)
    agent = AgentStub()
    agent.feedback = service  # type: ignore[attr-defined]
    return agent, service


def _inspect(p: TelemetryPlugin, service: FeedbackService, clock: SimClock, start: int) -> None:
    """Six triggered parts (result ids r<n>, part ids P-<n>), each indexed for feedback."""
    recs = []
    for i, conf in enumerate(CONFS):
        label = "ok" if i % 3 else "spot"
        r = result(label, conf)
        p.on_result(r)
        v = r.verdict
        recs.append(
            {
                "type": "verdict",
                "result_id": f"r{start + i}",
                "part_id": f"P-{start + i}",
                "verdict": v.verdict,
                "label": v.label,
                "confidence": v.confidence,
                "model": v.model,
                "model_version": v.model_version,
                "ts": clock(),
            }
        )
        clock.advance(1.0)
    service.write_batch(recs)


def _windows(p: TelemetryPlugin) -> list[TelemetryWindow]:
    return [parse_window(m.payload) for m in p.outbox.peek(1000) if m.kind == "telemetry"]


def test_feedback_reaches_the_window_as_counts_once(tmp_path: Path) -> None:
    clock = SimClock()
    agent, service = _line(tmp_path, clock)
    p = _plugin(tmp_path, clock, agent)
    _inspect(p, service, clock, 0)
    # r0 spot (defect, 0.912) confirmed a defect; r1 ok 0.873 was a defect (an escape); r2 ok good
    for rid, truth in (("r0", "defect"), ("r1", "defect"), ("r2", "ok")):
        assert service.submit(FeedbackRequest(truth=truth, result_id=rid, by="Anna Berg"), "api").ok
    clock.advance(60)
    p.tick()
    [w] = _windows(p)
    fm = w.field_metrics
    assert fm is not None and sum(fm.score_pass) == 4 and sum(fm.score_reject) == 2
    [v] = fm.feedback
    assert (v.model, v.version, v.retracted) == ("tiny", 1, None)
    assert v.added.reject_defect[9] == 1  # score 0.912
    assert v.added.pass_defect[1] == 1  # score 1 - 0.873 = 0.127
    assert v.added.pass_ok[0] == 1 and v.added.total() == 3
    # a correction in the next window: r1 was good after all; and new parts with no feedback
    assert service.submit(FeedbackRequest(truth="ok", part_id="P-1"), "station").ok
    _inspect(p, service, clock, 10)
    clock.advance(60)
    p.tick()
    w2 = _windows(p)[-1]
    assert w2.field_metrics is not None
    [v2] = w2.field_metrics.feedback
    assert v2.added.total() == 1 and v2.added.pass_ok[1] == 1
    assert v2.retracted is not None and v2.retracted.total() == 1 and v2.retracted.pass_defect[1] == 1
    # a restart reads the cursor from the outbox: nothing is counted twice
    p.stop()
    p2 = _plugin(tmp_path, clock, agent)
    _inspect(p2, service, clock, 20)
    clock.advance(60)
    p2.tick()
    w3 = _windows(p2)[-1]
    assert w3.field_metrics is not None and w3.field_metrics.feedback == []


def test_feedback_below_k_rides_with_the_merged_window(tmp_path: Path) -> None:
    clock = SimClock()
    agent, service = _line(tmp_path, clock)
    p = _plugin(tmp_path, clock, agent, min_frames=10)
    _inspect(p, service, clock, 0)  # 6 frames: held (k = 10)
    assert service.submit(FeedbackRequest(truth="defect", result_id="r1"), "api").ok
    clock.advance(60)
    p.tick()
    assert _windows(p) == []
    _inspect(p, service, clock, 10)
    clock.advance(60)
    p.tick()
    [w] = _windows(p)
    assert w.frames == 12 and w.field_metrics is not None
    assert [v.added.total() for v in w.field_metrics.feedback] == [1]


def test_no_per_part_value_leaves_the_device(tmp_path: Path) -> None:
    clock = SimClock()
    agent, service = _line(tmp_path, clock)
    p = _plugin(tmp_path, clock, agent)
    _inspect(p, service, clock, 0)
    for i, rid in enumerate(("r0", "r1", "r2", "r3", "r4", "r5")):
        truth = "ok" if i % 2 else "spot"
        assert service.submit(FeedbackRequest(truth=truth, result_id=rid, by="Operator Zed-417"), "mqtt").ok
    clock.advance(60)
    p.tick()
    payloads = [m.payload.decode() for m in p.outbox.peek(1000)]
    assert len(payloads) == 1
    text = payloads[0]
    for secret in ('"r0"', '"r5"', "P-0", "P-5", "Operator", "Zed-417", agent.device_id, '"mqtt"'):
        assert secret not in text  # no result id, part id, name, device id or channel
    for conf in CONFS:  # no confidence of a part, in any spelling
        for spelling in (f"{conf}", f"{conf:.4f}", f"{1 - conf:.4f}", f"{round(conf, 3)}"):
            assert spelling not in text
    body = json.loads(text)
    fm = body["field_metrics"]

    def numbers(x: object) -> list[object]:
        if isinstance(x, dict):
            return [n for v in x.values() for n in numbers(v)]
        if isinstance(x, list):
            return [n for v in x for n in numbers(v)]
        return [x]

    leaves = numbers(fm)
    assert all(n is None or isinstance(n, int | bool) or n == "tiny" for n in leaves), leaves  # counts, model
    assert sum(n for n in leaves if type(n) is int) > 0


@pytest.mark.parametrize(
    "hostile",
    [
        {"part_id": "P-1"},
        {"feedback": [{"model": "tiny", "version": 1, "added": {"pass_ok": [0.5] * SCORE_BINS}}]},
        {"score_pass": [1] * (SCORE_BINS + 1)},
        {"score_pass": [-1] + [0] * (SCORE_BINS - 1)},
        {"feedback": [{"model": "x" * 65, "version": 1, "added": {}}]},
    ],
)
def test_the_schema_refuses_anything_but_bounded_counts(hostile: dict[str, object]) -> None:
    good = FieldMetrics(score_pass=[0] * SCORE_BINS, score_reject=[0] * SCORE_BINS).model_dump()
    body = TelemetryWindow(
        key="a" * 32,
        device="b" * 32,
        model={"name": "tiny", "version": 1, "sha256": "c" * 64},
        start=1.0,
        end=2.0,
        frames=10,
        class_counts={"ok": 10},
        confidence=[1] * 10,
        input_stats={},
    ).to_body()
    body["field_metrics"] = {**good, **hostile}
    with pytest.raises(ProtocolError, match="field_metrics"):
        parse_window(json.dumps(body).encode())


def test_a_version_twice_is_refused() -> None:
    cells = {"pass_ok": [0] * SCORE_BINS, "pass_defect": [0] * SCORE_BINS}
    cells |= {"reject_ok": [0] * SCORE_BINS, "reject_defect": [0] * SCORE_BINS}
    v = {"model": "tiny", "version": 1, "added": cells}
    with pytest.raises(ValueError, match="twice"):
        FieldMetrics(score_pass=[0] * SCORE_BINS, score_reject=[0] * SCORE_BINS, feedback=[v, v])


def test_a_replaced_feedback_store_is_read_from_the_start(tmp_path: Path) -> None:
    from edge_agent.telemetry.field import read_feedback

    clock = SimClock()
    agent, service = _line(tmp_path, clock)
    p = _plugin(tmp_path, clock, agent)
    _inspect(p, service, clock, 0)
    for rid in ("r0", "r1", "r2"):
        assert service.submit(FeedbackRequest(truth="ok", result_id=rid), "api").ok
    first, cursor = read_feedback(service.store, 0)
    assert cursor == 3 and service.store.log_position() == 3 and first.added
    fresh = FeedbackStore(tmp_path / "fresh.db", clock=clock)  # what a corrupt file is replaced with
    fresh.add_results(
        [{"result_id": "x1", "part_id": "X", "verdict": "ok", "confidence": 0.9, "model": "tiny", "model_version": 1}]
    )
    fresh.give(FeedbackRequest(truth="defect", result_id="x1"), "api")
    again, cursor2 = read_feedback(fresh, cursor)
    assert cursor2 == 1 and sum(sum(c.values()) for c in again.added.values()) == 1


def test_a_failing_feedback_store_never_costs_a_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    clock = SimClock()
    agent, service = _line(tmp_path, clock)
    p = _plugin(tmp_path, clock, agent)
    _inspect(p, service, clock, 0)
    assert service.submit(FeedbackRequest(truth="defect", result_id="r1"), "api").ok
    real = service.store.confusion_since

    def broken(*_a: object, **_k: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(service.store, "confusion_since", broken)
    clock.advance(60)
    p.tick()
    [w1] = _windows(p)
    assert w1.frames == 6 and w1.field_metrics is not None and w1.field_metrics.feedback == []
    monkeypatch.setattr(service.store, "confusion_since", real)
    _inspect(p, service, clock, 10)
    clock.advance(60)
    p.tick()
    w2 = _windows(p)[-1]
    assert w2.field_metrics is not None and [v.added.total() for v in w2.field_metrics.feedback] == [1]
