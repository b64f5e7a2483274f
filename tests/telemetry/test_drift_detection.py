"""Darkened line frames raise drift and normal frames do not: the real v1 model of the synthetic line,
real frames through the device path, the device's windows and calibrated thresholds. The full-size
figures (docs/drift.md) come from ``bench/bench_telemetry.py --drift``."""

from __future__ import annotations

from edge_agent.model import LoadedModel
from edgeline.demo.drift_eval import evaluate_drift
from tests.telemetry.conftest import DARK


def test_darkened_frames_raise_drift_and_normal_frames_do_not(line_v1: LoadedModel) -> None:
    from converters.synth import Lighting

    ev = evaluate_drift(
        line_v1,
        frames_per_window=40,
        normal_windows=25,
        drift_trials=2,
        max_drift_windows=6,
        lighting=Lighting(**DARK),
        seed=77,
    )
    # undrifted: no sustained-drift episode, few flagged windows; the customary fixed PSI > 0.25
    # rule would flag most of these 40-frame windows
    assert ev.false_episodes == 0
    assert ev.window_false_alarm_rate <= 0.12
    assert ev.per_stat_false_alarm_rate["brightness"] == 0.0
    assert ev.window_false_alarm_rate_fixed_025 >= 0.5
    # darkened: every window flagged, the sustained alarm after the 3rd drifted window
    assert ev.window_detection_rate >= 0.9
    assert ev.delays_windows == [3, 3]
    # and the model really does suffer under the darker line (what retraining fixes)
    assert ev.accuracy_drifted < ev.accuracy_normal - 0.05
