"""The inspection build report, for a line engineer: escape and false reject first.

JSON (``report.json``) and PNG (``report.png``): the gate's verdict and why, escape and false-reject
rates with 95% intervals and the counts behind them, the operating-point curve (false reject against
escape over thresholds), defect-score histograms, training warnings, and the worst-scored good parts
and missed defects with their out-of-fold anomaly maps. The images are the user's own training
images; the report stays with the build, it is never sent anywhere.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from converters.line_gate import LineGate, LineTargets
from converters.operating_point import Counts
from converters.report import write_json

__all__ = ["build_doc", "failed_doc", "summary_lines", "write_json", "write_png"]


def failed_doc(
    name: str, version: int, kind: str, line: LineGate, failures: list[str], warnings: list[str]
) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "kind": kind,
        "gate_failed": failures,
        "warnings": warnings,
        "line_gate": line.to_dict(),
    }


def build_doc(
    *,
    name: str,
    version: int,
    kind: str,
    line: LineGate,
    at_threshold: Counts,
    failures: list[str],
    warnings: list[str],
    threshold: float,
    review: float,
    targets: LineTargets,
    curve: list[dict[str, float]],
    auroc: float | None,
    counts: dict[str, int],
    registration: dict[str, Any],
    quant: dict[str, Any],
    fidelity: dict[str, Any],
    unknown_limit: float,
    seconds: float,
    bundle: str,
) -> dict[str, Any]:
    fr, esc = line.counts.false_reject, line.counts.escape
    return {
        "name": name,
        "version": version,
        "kind": kind,
        "verdict": "VERIFIED" if not failures else "UNVERIFIED (forced past the gate)",
        "false_reject": fr.to_dict(),
        "escape": esc.to_dict() if esc.n else {"value": None, "n": 0, "note": "unmeasured: no defect examples"},
        "gate": {"passed": not failures, "failures": failures, "notes": line.notes},
        "targets": {
            "max_false_reject": targets.max_false_reject,
            "max_escape": targets.max_escape,
            "operate_for": targets.operate_for,
            "evidence_factor": targets.evidence_factor,
        },
        "operating_point": {
            "threshold": threshold,
            "review": review,
            "at_threshold_out_of_fold": at_threshold.to_dict(),
        },
        "auroc": auroc,
        "held_out": {
            "how": "out-of-fold: every image scored by a model that never saw it; rates cross-fitted",
            "counts": counts,
        },
        "curve": [{k: (None if math.isnan(v) else round(v, 5)) for k, v in row.items()} for row in curve],
        "warnings": warnings,
        "registration": registration,
        "quantization": quant,
        "fidelity": fidelity,
        "unknown_global_limit": unknown_limit,
        "seconds": seconds,
        "bundle": bundle,
    }


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """What the CLI prints: the line's figures first."""
    fr, esc = doc["false_reject"], doc["escape"]
    out = [f"verdict: {doc['verdict']} ({doc['kind']} model)"]
    out.append(f"false reject: {_rate_text(fr)}")
    out.append(f"escape:       {_rate_text(esc) if esc.get('n') else 'UNMEASURED (no defect examples)'}")
    if doc.get("auroc") is not None:
        out.append(f"AUROC (out of fold): {doc['auroc']:.4f}")
    for f in doc["gate"]["failures"]:
        out.append(f"gate: {f}")
    for n in doc["gate"]["notes"]:
        out.append(f"note: {n}")
    for w in doc["warnings"]:
        out.append(f"warning: {w}")
    return out


def _rate_text(r: dict[str, Any]) -> str:
    if not r.get("n"):
        return "unmeasured"
    return f"{100 * r['value']:.2f}% ({r['events']}/{r['n']}, 95% CI {100 * r['low']:.2f}-{100 * r['high']:.2f}%)"


def write_png(
    path: Path,
    doc: dict[str, Any],
    paths: Sequence[Path],
    targets: np.ndarray,
    ok: int,
    d: np.ndarray,
    maps: np.ndarray,
    threshold: float,
    unknown: np.ndarray,
) -> Path:
    from matplotlib.figure import Figure

    good = np.flatnonzero(targets == ok)
    bad = np.flatnonzero(targets != ok)
    worst_good = good[np.argsort(-d[good])][:3]
    missed = bad[np.argsort(d[bad])][:3] if len(bad) else np.empty(0, np.int64)
    fig = Figure(figsize=(12, 8.5))
    fig.subplots_adjust(left=0.03, right=0.98, top=0.92, bottom=0.04, hspace=0.55, wspace=0.35)
    grid = fig.add_gridspec(3, 6, height_ratios=[1.1, 1, 1])
    ax_t = fig.add_subplot(grid[0, :2])
    ax_t.axis("off")
    wrapped = [part for line in summary_lines(doc) for part in textwrap.wrap(line, 62, subsequent_indent="  ")]
    ax_t.text(0, 1, "\n".join(wrapped[:18]), va="top", family="monospace", fontsize=7)
    ax_c = fig.add_subplot(grid[0, 2:4])
    pts = [(r["escape"], r["false_reject"]) for r in doc["curve"] if r["escape"] is not None]
    if pts:
        e, f = zip(*pts, strict=True)
        ax_c.plot(np.asarray(f) * 100, np.asarray(e) * 100, marker=".")
        ax_c.set_xlabel("false reject %")
        ax_c.set_ylabel("escape %")
    else:
        ax_c.text(0.5, 0.5, "escape unmeasured\n(no defect examples)", ha="center", va="center")
    ax_c.set_title("operating-point curve (out of fold)", fontsize=9)
    ax_h = fig.add_subplot(grid[0, 4:])
    bins = np.linspace(0, 1, 41).tolist()
    ax_h.hist(d[good], bins=bins, alpha=0.6, label="good")
    if len(bad):
        ax_h.hist(d[bad], bins=bins, alpha=0.6, label="defective")
    ax_h.axvline(threshold, color="k", ls="--", label="threshold")
    ax_h.set_yscale("log")
    ax_h.set_title("defect score 1 - p(ok)", fontsize=9)
    ax_h.legend(fontsize=7)
    for row, (title, idx) in enumerate(
        (("worst-scored good parts", worst_good), ("missed / weakest defects", missed)), 1
    ):
        for j, i in enumerate(idx):
            img = cv2.imread(str(paths[int(i)]), cv2.IMREAD_GRAYSCALE)
            ax_i = fig.add_subplot(grid[row, 2 * j])
            ax_m = fig.add_subplot(grid[row, 2 * j + 1])
            if img is not None:
                ax_i.imshow(img, cmap="gray")
            ax_i.set_title(
                f"{Path(paths[int(i)]).parent.name}/{Path(paths[int(i)]).name}\nd={d[int(i)]:.3f}"
                + (" unknown" if unknown[int(i)] else ""),
                fontsize=7,
            )
            # one scale for every map: z 0..8 (a good part stays dark, a defect glows)
            ax_m.imshow(maps[int(i)], cmap="inferno", vmin=0.0, vmax=max(8.0, float(maps[int(i)].max()) / 2))
            ax_m.set_title("anomaly map", fontsize=7)
            for ax in (ax_i, ax_m):
                ax.set_xticks([])
                ax.set_yticks([])
        if not len(idx):
            ax = fig.add_subplot(grid[row, :])
            ax.axis("off")
            ax.text(0.5, 0.5, f"{title}: none", ha="center")
    fig.suptitle(f"{doc['name']} v{doc['version']}: {doc['kind']} model - {doc['verdict']}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path
