"""The quality gate: figures, messages that name the figure and the margin, pass, fail, fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from converters.errors import ConverterError, GateFailed
from converters.gate import GateConfig, check, measure
from converters.pipeline import build_bundle


def _probs(labels: list[int], k: int = 3, conf: float = 0.9) -> np.ndarray:
    p = np.full((len(labels), k), (1 - conf) / (k - 1))
    p[np.arange(len(labels)), labels] = conf
    return p


def test_measure_and_check_pass_when_within_margins() -> None:
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    fig = measure("static_qdq", _probs(list(y)), _probs(list(y), conf=0.8), y)
    assert fig.label_agreement == 1.0 and fig.accuracy_drop_pp == 0.0
    assert fig.max_prob_diff == pytest.approx(0.1)
    assert check(fig, GateConfig()).passed


def test_accuracy_drop_failure_names_figure_and_margin() -> None:
    y = np.zeros(100, dtype=int)
    quant = [0] * 97 + [1] * 3  # 3 of 100 wrong: 3 pp below a perfect float model
    result = check(measure("static_qdq", _probs([0] * 100), _probs(quant), y), GateConfig(min_label_agreement=0.9))
    assert not result.passed and len(result.failures) == 1
    msg = result.failures[0]
    assert "accuracy 0.9700 is 3.00 pp below float 1.0000" in msg and "over by 2.00 pp" in msg


def test_agreement_failure_names_figure_and_shortfall() -> None:
    fig = measure("dynamic", _probs([0] * 50 + [1] * 50), _probs([0] * 48 + [2] * 2 + [1] * 50), None)
    result = check(fig, GateConfig())
    assert fig.accuracy_drop_pp is None  # no labels: agreement only
    assert result.failures == [
        "dynamic label agreement with float is 0.9800 on 100 rows, below the minimum 0.9900 by 1.00 pp"
    ]


def test_gate_config_rejects_nonsense() -> None:
    with pytest.raises(ConverterError):
        GateConfig(min_label_agreement=1.5)
    with pytest.raises(ConverterError):
        GateConfig(max_accuracy_drop_pp=-1)


def test_default_gate_passes_a_good_int8_model(line_ds: Path, key_dir: Path, tmp_path: Path) -> None:
    r = build_bundle(line_ds, tmp_path / "b", estimator="logreg", key_dir=key_dir, quantization="static", seed=3)
    assert r.gate.passed and r.manifest.quantization.mode == "static_qdq"
    assert r.gate.figures.label_agreement >= 0.99 and r.gate.figures.accuracy_drop_pp <= 1.0
    assert (tmp_path / "b" / "manifest.json").exists()


def test_gate_refuses_int8_calibrated_on_the_wrong_images(
    line_ds: Path, dark_calib: Path, key_dir: Path, tmp_path: Path
) -> None:
    """Calibrated on a nearly black line, static int8 clips the real line's activations: refused,
    with the figure and the margin in the message, no bundle, figures kept in the report."""
    out = tmp_path / "b"
    with pytest.raises(
        GateFailed, match=r"label agreement with float is 0\.\d+ on 100 rows, below the minimum 0\.9900 by \d+\.\d\d pp"
    ) as info:
        build_bundle(
            line_ds, out, estimator="logreg", key_dir=key_dir, quantization="static", calib_dir=dark_calib, seed=3
        )
    assert not (out / "manifest.json").exists() and not (out / "model.onnx").exists()
    assert "report.json" in str(info.value) and (out / "report" / "report.json").exists()
    assert info.value.attempts[0]["mode"] == "static_qdq" and info.value.attempts[0]["passed"] is False


def test_auto_falls_back_to_dynamic_and_says_so(line_ds: Path, dark_calib: Path, key_dir: Path, tmp_path: Path) -> None:
    r = build_bundle(
        line_ds, tmp_path / "b", estimator="logreg", key_dir=key_dir, quantization="auto", calib_dir=dark_calib, seed=3
    )
    assert r.manifest.quantization.mode == "dynamic"
    assert [a["mode"] for a in r.quantization.attempts] == ["static_qdq", "dynamic"]
    assert [a["passed"] for a in r.quantization.attempts] == [False, True]
    assert r.report["quantization"]["mode"] == "dynamic"
    with pytest.raises(GateFailed):
        build_bundle(
            line_ds,
            tmp_path / "c",
            estimator="logreg",
            key_dir=key_dir,
            quantization="auto",
            calib_dir=dark_calib,
            gate=GateConfig(fallback_to_dynamic=False),
            seed=3,
        )
