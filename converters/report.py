"""The training report: JSON for scripts, PNG for people (confusion matrix, per-class precision/recall)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConverterError
from converters.metrics import Evaluation
from edgeline.core.fsutil import write_atomic


def write_json(path: Path, report: dict[str, Any]) -> Path:
    try:
        write_atomic(path, json.dumps(report, indent=2, sort_keys=True, allow_nan=False).encode("utf-8"))
    except ValueError as exc:
        raise ConverterError(f"report holds a non-finite number: {exc}") from exc
    return path


def write_png(path: Path, evaluation: Evaluation, title: str) -> Path:
    """Confusion matrix (counts, rows = true class) and per-class precision/recall bars."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, safe in any process

    classes = list(evaluation.classes)
    cm = np.asarray(evaluation.confusion)
    fig = Figure(figsize=(11, 4.6))
    ax_cm, ax_pr = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.2]})
    ax_cm.imshow(cm, cmap="Blues")
    ax_cm.set_xticks(range(len(classes)), classes, rotation=35, ha="right")
    ax_cm.set_yticks(range(len(classes)), classes)
    ax_cm.set_xlabel("predicted")
    ax_cm.set_ylabel("true")
    ax_cm.set_title(f"confusion matrix (accuracy {evaluation.accuracy:.3f})")
    top = cm.max() if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax_cm.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > top / 2 else "black")
    pos = np.arange(len(classes))
    prec = [evaluation.precision[c] for c in classes]
    rec = [evaluation.recall[c] for c in classes]
    ax_pr.bar(pos - 0.2, prec, 0.4, label="precision")
    ax_pr.bar(pos + 0.2, rec, 0.4, label="recall")
    ax_pr.set_xticks(pos, classes, rotation=35, ha="right")
    ax_pr.set_ylim(max(0.0, min(0.8, min(prec + rec) - 0.05)), 1.02)
    ax_pr.set_title("per-class precision / recall")
    ax_pr.legend(loc="lower right")
    ax_pr.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path
