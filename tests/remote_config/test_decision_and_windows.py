"""The hot parts applied to real objects: ``[decision]`` over a real loaded model (the session is shared,
the serving model re-decided, the updater's next model decided the same way), and the telemetry
aggregator's window limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_agent.decision import with_decision
from edge_agent.inference import inspect_frame, load_and_check
from edge_agent.remote_config.apply import set_telemetry_windows
from edge_agent.runtime import Agent
from edge_agent.sources import MemoryCapture
from edge_agent.telemetry.privacy import MinFrames
from edge_agent.telemetry.windows import WindowAggregator
from edgeline.core.protocol.manifest import OperatingPoint
from edgeline.core.protocol.signing import TrustStore
from firmware_configs.loader import parse_config
from firmware_configs.remote_config_section import DecisionSection
from firmware_configs.telemetry_section import TelemetrySection


def test_decision_over_a_real_model(tiny_bundle: Path, trust: TrustStore, tmp_path: Path) -> None:
    model = load_and_check(tiny_bundle, trust)
    assert with_decision(model, DecisionSection()) is model
    strict = with_decision(model, DecisionSection(defect_min_confidence=1.0))
    assert strict.session is model.session and strict.manifest.thresholds.defect_min_confidence == 1.0
    assert model.manifest.thresholds.defect_min_confidence != 1.0  # the original is untouched
    lenient = with_decision(model, DecisionSection(defect_min_confidence=0.0))
    labels, ok_label = model.manifest.labels, model.manifest.thresholds.ok_label
    rng = np.random.default_rng(0)
    for i in range(20):
        image = rng.integers(0, 255, (32, 32), dtype=np.uint8)
        a, b, c = (inspect_frame(m, image, i) for m in (model, strict, lenient))
        assert np.array_equal(a.probabilities, b.probabilities)
        top = labels[int(np.argmax(a.probabilities))]
        assert b.verdict.verdict == "ok"  # no defect reaches a confidence of 1.0
        assert c.verdict.verdict == ("ok" if top == ok_label else "defect")  # every defect class counts
    op = model.manifest.model_copy(update={"operating_point": OperatingPoint(threshold=0.6, review=0.5)})
    with_op = model.__class__(op, model.session, model.preprocessor, model.input_name, model.output_name)
    moved = with_decision(with_op, DecisionSection(threshold=0.3))
    assert moved.manifest.operating_point == OperatingPoint(threshold=0.3, review=0.3)  # review capped

    cfg = parse_config(
        {
            "device": {"id": "d1"},
            "source": {"kind": "folder", "path": str(tmp_path)},
            "status": {"path": str(tmp_path / "s.json")},
            "decision": {"defect_min_confidence": 0.99},
        }
    )
    agent = Agent(cfg, capture=MemoryCapture([]), model=model, write_status=False)
    served = agent.current_model
    assert served is not None and served.manifest.thresholds.defect_min_confidence == 0.99
    agent.set_decision(DecisionSection(defect_min_confidence=0.2))
    served = agent.current_model
    assert served is not None and served.manifest.thresholds.defect_min_confidence == 0.2
    assert agent.config.decision.defect_min_confidence == 0.2
    agent.activate(load_and_check(tiny_bundle, trust))  # the updater's next model: the same thresholds
    served = agent.current_model
    assert served is not None and served.manifest.thresholds.defect_min_confidence == 0.2


class _Telemetry:
    name = "telemetry"

    def __init__(self) -> None:
        self.aggregator = WindowAggregator(60.0, 0)
        self.min_frames = MinFrames(20)
        self.config = TelemetrySection()


class _Agent:
    def __init__(self, plugins: list[object]) -> None:
        self.plugins = plugins


def test_telemetry_windows_change_on_the_running_plugin() -> None:
    plugin = _Telemetry()
    section = TelemetrySection(window_s=5.0, window_frames=100, min_frames=3)
    assert set_telemetry_windows(_Agent([plugin]), section)
    assert (plugin.aggregator.window_s, plugin.aggregator.window_frames, plugin.min_frames.k) == (5.0, 100, 3)
    assert plugin.config is section
    assert not set_telemetry_windows(_Agent([]), section)
