"""The quality gate: no bundle for a model that quantization (or conversion) has made worse.

Figures compare the shipped model with the float ONNX model on held-out rows: accuracy drop in
percentage points (when labels are known), arg-max label agreement, and the largest probability
difference. Conversion parity (scikit-learn vs float ONNX) is gated too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from converters.errors import ConverterError, GateFailed
from converters.metrics import agreement


@dataclass(frozen=True)
class GateConfig:
    """Thresholds. ``max_accuracy_drop_pp``: largest accepted accuracy loss of the quantized model
    against float, in percentage points; ``min_label_agreement``: smallest accepted fraction of rows
    where both give the same class; ``max_conversion_diff``: largest accepted probability difference
    between scikit-learn and its float ONNX conversion; ``fallback_to_dynamic``: with
    ``quantization="auto"``, try dynamic int8 when static fails the gate."""

    max_accuracy_drop_pp: float = 1.0
    min_label_agreement: float = 0.99
    max_conversion_diff: float = 1e-3
    fallback_to_dynamic: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.max_accuracy_drop_pp <= 100:
            raise ConverterError("max_accuracy_drop_pp must be between 0 and 100")
        if not 0 <= self.min_label_agreement <= 1:
            raise ConverterError("min_label_agreement must be between 0 and 1")
        if not self.max_conversion_diff > 0:
            raise ConverterError("max_conversion_diff must be positive")


@dataclass(frozen=True)
class GateFigures:
    mode: str
    rows: int
    label_agreement: float
    max_prob_diff: float
    float_accuracy: float | None = None
    quant_accuracy: float | None = None

    @property
    def accuracy_drop_pp(self) -> float | None:
        if self.float_accuracy is None or self.quant_accuracy is None:
            return None
        return (self.float_accuracy - self.quant_accuracy) * 100.0


@dataclass
class GateResult:
    passed: bool
    figures: GateFigures
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self.figures)
        d["accuracy_drop_pp"] = self.figures.accuracy_drop_pp
        return {"passed": self.passed, "failures": self.failures, **d}


def measure(mode: str, p_float: np.ndarray, p_quant: np.ndarray, y: np.ndarray | None) -> GateFigures:
    ag = agreement(p_float, p_quant)
    acc_f = acc_q = None
    if y is not None and len(y):
        acc_f = float(np.mean(p_float.argmax(axis=1) == y))
        acc_q = float(np.mean(p_quant.argmax(axis=1) == y))
    return GateFigures(mode, ag.rows, ag.label_agreement, ag.max_prob_diff, acc_f, acc_q)


def check(fig: GateFigures, cfg: GateConfig) -> GateResult:
    failures: list[str] = []
    drop = fig.accuracy_drop_pp
    if drop is not None and drop > cfg.max_accuracy_drop_pp:
        failures.append(
            f"{fig.mode} accuracy {fig.quant_accuracy:.4f} is {drop:.2f} pp below float {fig.float_accuracy:.4f}"
            f" (limit {cfg.max_accuracy_drop_pp:.2f} pp, over by {drop - cfg.max_accuracy_drop_pp:.2f} pp)"
        )
    if fig.label_agreement < cfg.min_label_agreement:
        short = (cfg.min_label_agreement - fig.label_agreement) * 100.0
        failures.append(
            f"{fig.mode} label agreement with float is {fig.label_agreement:.4f} on {fig.rows} rows, "
            f"below the minimum {cfg.min_label_agreement:.4f} by {short:.2f} pp"
        )
    return GateResult(not failures, fig, failures)


def check_conversion(max_diff: float, label_agreement: float, cfg: GateConfig, what: str = "ONNX conversion") -> None:
    """Raise :class:`GateFailed` when the float ONNX model does not reproduce scikit-learn."""
    if max_diff > cfg.max_conversion_diff:
        raise GateFailed(
            f"{what} changes probabilities by up to {max_diff:.2e} (limit {cfg.max_conversion_diff:.0e}); "
            f"label agreement {label_agreement:.4f}"
        )
