"""Measure the drift detector on synthetic line frames: false alarms on undrifted windows, and the
detection delay once the line gets darker.

Frames come from :mod:`converters.synth` (the same generator the model was trained on, different
seeds), go through the real device path (:func:`edge_agent.inference.inspect_frame`: preprocessing,
ONNX Runtime, verdict, input statistics) and the device's window and drift code. The same run also
scores every window with the customary fixed PSI threshold of 0.25, to show what calibration buys.
Used by the tests (small counts) and ``bench/bench_telemetry.py --drift`` (the figures in
docs/drift.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from converters.synth import CLASSES, Conditions, Lighting, render_part
from edge_agent.inference import inspect_frame
from edge_agent.model import LoadedModel
from edge_agent.telemetry.drift import Calibrator, Sustained
from edge_agent.telemetry.privacy import LaplaceNoise
from edge_agent.telemetry.windows import ModelKey, RawWindow, WindowAggregator, context_of, drift_of
from edgeline.core.protocol.telemetry import STAT_NAMES, DriftStat

FIXED_PSI = 0.25
INPUT_KEYS = (*STAT_NAMES, "confidence", "anomaly_score")


@dataclass
class DriftEvaluation:
    frames_per_window: int
    normal_windows: int
    #: share of undrifted windows with at least one input statistic flagged (calibrated thresholds)
    window_false_alarm_rate: float
    #: the same with the fixed PSI > 0.25 rule
    window_false_alarm_rate_fixed_025: float
    #: per statistic, share of undrifted windows flagged
    per_stat_false_alarm_rate: dict[str, float]
    #: sustained-drift alarms (episodes) raised during the undrifted run
    false_episodes: int
    drift_trials: int
    lighting: dict[str, float]
    noise_epsilon: float | None
    #: share of drifted windows flagged
    window_detection_rate: float
    #: windows from the drift onset to the sustained alarm, per trial (None: not detected)
    delays_windows: list[int | None]
    accuracy_normal: float
    accuracy_drifted: float

    @property
    def median_delay_frames(self) -> float | None:
        got = [d for d in self.delays_windows if d is not None]
        return float(np.median(got)) * self.frames_per_window if got else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"median_delay_frames": self.median_delay_frames}


class _Stream:
    """A line: parts of random classes under given lighting, inspected by the real model."""

    def __init__(self, model: LoadedModel, seed: int) -> None:
        self.model = model
        self.rng = np.random.default_rng(seed)
        m = model.manifest
        self.key = ModelKey(m.name, m.version, m.artifact.sha256)
        self.ctx = context_of(m)
        self.frame_id = 0
        self.correct = 0
        self.seen = 0

    def window(self, n: int, lighting: Lighting) -> RawWindow:
        agg = WindowAggregator(window_s=1e12, window_frames=n)
        cond = Conditions(lighting=lighting)
        closed: list[RawWindow] = []
        while not closed:
            label = CLASSES[int(self.rng.integers(len(CLASSES)))]
            frame = render_part(label, self.rng, conditions=cond)
            result = inspect_frame(self.model, frame, self.frame_id, with_stats=True)
            self.frame_id += 1
            self.seen += 1
            self.correct += result.verdict.label == label
            closed = agg.add(result, self.key, self.ctx.labels)
        return closed[0]

    def take(self) -> tuple[int, int]:
        """(correct, seen) since the last call."""
        out = (self.correct, self.seen)
        self.correct = self.seen = 0
        return out


def _flags(drift: dict[str, DriftStat]) -> tuple[bool, bool, dict[str, bool]]:
    inputs = {k: d for k, d in drift.items() if k in INPUT_KEYS}
    calibrated = any(d.drifted for d in inputs.values())
    fixed = any(d.psi > FIXED_PSI for d in inputs.values())
    return calibrated, fixed, {k: d.drifted for k, d in inputs.items()}


def evaluate_drift(
    model: LoadedModel,
    *,
    frames_per_window: int = 50,
    normal_windows: int = 40,
    drift_trials: int = 4,
    max_drift_windows: int = 8,
    lighting: Lighting | None = None,
    calibrator: Calibrator | None = None,
    rule: tuple[int, int, int] = (3, 4, 3),
    seed: int = 2024,
    noise: LaplaceNoise | None = None,
) -> DriftEvaluation:
    """Run ``normal_windows`` undrifted windows, then ``drift_trials`` trials of a darker line (each
    starting from a fresh sustained-drift rule after two normal windows) of up to
    ``max_drift_windows`` windows."""
    cal = calibrator or Calibrator()
    light = lighting or Lighting(brightness=-40.0, contrast=0.85)
    normal = Lighting()
    stream = _Stream(model, seed)
    scale = noise.scale if noise is not None else 0.0

    def drift(raw: RawWindow) -> dict[str, DriftStat]:
        released = noise.apply(raw) if noise is not None else raw
        return drift_of(released, stream.ctx, cal, scale)

    det = Sustained(*rule)
    fa = fa_fixed = episodes = 0
    per_stat: dict[str, int] = {}
    for _ in range(normal_windows):
        calibrated, fixed, flags = _flags(drift(stream.window(frames_per_window, normal)))
        fa += calibrated
        fa_fixed += fixed
        for k, v in flags.items():
            per_stat[k] = per_stat.get(k, 0) + v
        episodes += det.update(calibrated) == "start"
    ok, seen = stream.take()
    acc_normal = ok / max(1, seen)
    dark_ok = dark_seen = 0
    delays: list[int | None] = []
    detected = drifted_windows = 0
    for _ in range(drift_trials):
        det = Sustained(*rule)
        for _ in range(2):
            det.update(_flags(drift(stream.window(frames_per_window, normal)))[0])
        stream.take()
        delay: int | None = None
        for i in range(1, max_drift_windows + 1):
            calibrated = _flags(drift(stream.window(frames_per_window, light)))[0]
            detected += calibrated
            drifted_windows += 1
            if det.update(calibrated) == "start":
                delay = i
                break
        delays.append(delay)
        ok, seen = stream.take()
        dark_ok, dark_seen = dark_ok + ok, dark_seen + seen
    return DriftEvaluation(
        frames_per_window=frames_per_window,
        normal_windows=normal_windows,
        window_false_alarm_rate=fa / normal_windows,
        window_false_alarm_rate_fixed_025=fa_fixed / normal_windows,
        per_stat_false_alarm_rate={k: v / normal_windows for k, v in sorted(per_stat.items())},
        false_episodes=episodes,
        drift_trials=drift_trials,
        lighting={"brightness": light.brightness, "contrast": light.contrast},
        noise_epsilon=noise.epsilon if noise is not None else None,
        window_detection_rate=detected / max(1, drifted_windows),
        delays_windows=delays,
        accuracy_normal=acc_normal,
        accuracy_drifted=dark_ok / max(1, dark_seen),
    )
