"""Classification metrics in plain numpy (the same code scores scikit-learn, float ONNX and int8 ONNX)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Evaluation:
    classes: tuple[str, ...]
    accuracy: float
    precision: dict[str, float]
    recall: dict[str, float]
    support: dict[str, int]
    confusion: list[list[int]]  # rows: true class, columns: predicted class

    def to_dict(self) -> dict[str, object]:
        return {
            "classes": list(self.classes),
            "accuracy": self.accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "support": self.support,
            "confusion": self.confusion,
        }


def evaluate(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> Evaluation:
    n = len(classes)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(n), where=actual > 0)
    return Evaluation(
        classes=tuple(classes),
        accuracy=float(tp.sum() / max(1, len(y_true))),
        precision={c: float(p) for c, p in zip(classes, precision, strict=True)},
        recall={c: float(r) for c, r in zip(classes, recall, strict=True)},
        support={c: int(s) for c, s in zip(classes, actual, strict=True)},
        confusion=cm.tolist(),
    )


@dataclass(frozen=True)
class Agreement:
    """How closely model B reproduces model A on the same rows."""

    label_agreement: float  # fraction of rows with the same arg-max
    max_prob_diff: float  # largest absolute difference of any probability
    rows: int


def agreement(probs_a: np.ndarray, probs_b: np.ndarray) -> Agreement:
    a = np.asarray(probs_a, dtype=np.float64)
    b = np.asarray(probs_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"probability shapes differ: {a.shape} vs {b.shape}")
    return Agreement(
        label_agreement=float(np.mean(a.argmax(axis=1) == b.argmax(axis=1))),
        max_prob_diff=float(np.max(np.abs(a - b))) if a.size else 0.0,
        rows=int(a.shape[0]),
    )
