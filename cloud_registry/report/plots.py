"""Matplotlib figures for the report, rendered to inline SVG strings (Agg backend, no display)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

INK = "#1f2933"
MUTED = "#7b8794"
BLUE = "#2f6fdf"
ORANGE = "#e8710a"
GREEN = "#1e8e3e"
RED = "#d93025"
PALETTE = [BLUE, ORANGE, GREEN, RED, "#9334e6", "#12b5cb", "#f9ab00", "#5f6368"]

plt.rcParams.update(
    {
        "font.family": "DejaVu Sans",
        "font.size": 9,
        "axes.edgecolor": "#cbd2d9",
        "axes.labelcolor": INK,
        "xtick.color": MUTED,
        "ytick.color": MUTED,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "svg.fonttype": "none",
    }
)


def to_svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", transparent=True)
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]


def confusion(labels: Sequence[str], matrix: Sequence[Sequence[int]], title: str) -> str:
    m = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(3.0, 2.8))
    row = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, row, out=np.zeros_like(m), where=row > 0)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", color="white" if frac[i, j] > 0.6 else INK)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, color=INK, fontsize=10)
    return to_svg(fig)


def histograms(name: str, edges: Sequence[float], series: dict[str, Sequence[float]]) -> str:
    """Reference vs field distributions of one input statistic (frequencies)."""
    e = np.asarray(edges, dtype=float)
    centers = (e[:-1] + e[1:]) / 2
    width = float(e[1] - e[0])
    fig, ax = plt.subplots(figsize=(3.6, 2.2))
    for k, (label, freqs) in enumerate(series.items()):
        f = np.asarray(freqs, dtype=float)
        total = f.sum()
        f = f / total if total > 0 else f
        ax.bar(centers, f, width=width * 0.95, alpha=0.55, color=PALETTE[k % len(PALETTE)], label=label)
    ax.set_title(name, color=INK, fontsize=10)
    ax.set_yticks([])
    ax.legend(frameon=False, fontsize=8)
    return to_svg(fig)


def drift_over_time(series: dict[str, tuple[Sequence[float], Sequence[float]]], threshold: float | None) -> str:
    """Drift score over time, one line per device; ``series[device] = (t_seconds, score)``."""
    fig, ax = plt.subplots(figsize=(10.5, 2.8))
    for k, (device, (t, score)) in enumerate(sorted(series.items())):
        ax.plot(t, score, marker="o", ms=3, lw=1.6, color=PALETTE[k % len(PALETTE)], label=device)
    if threshold is not None:
        ax.axhline(threshold, color=RED, lw=1, ls="--", label=f"alarm threshold {threshold:g}")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("drift score")
    ax.legend(frameon=False, fontsize=8, ncol=6, loc="lower left", bbox_to_anchor=(0.0, 1.02))
    return to_svg(fig)


def timeline(rows: Sequence[dict[str, Any]], devices: Sequence[str]) -> str:
    """Rollout events per device over time. ``rows``: {device, t, event, version}."""
    colours = {
        "committed": GREEN,
        "activated": BLUE,
        "verified": BLUE,
        "downloading": MUTED,
        "staged": BLUE,
        "trial": ORANGE,
        "rejected": RED,
        "rolled_back": RED,
    }
    fig, ax = plt.subplots(figsize=(10.5, 0.6 + 0.45 * max(1, len(devices))))
    index = {d: i for i, d in enumerate(devices)}
    for r in rows:
        y = index.get(str(r.get("device")))
        if y is None:
            continue
        ev = str(r.get("event", ""))
        ax.scatter([float(r["t"])], [y], s=26, color=colours.get(ev, MUTED), zorder=3)
        if ev in ("committed", "rejected", "rolled_back"):
            ax.annotate(
                f"v{r.get('version', '?')} {ev}",
                (float(r["t"]), y),
                textcoords="offset points",
                xytext=(3, 5),
                fontsize=7,
                color=colours.get(ev, MUTED),
            )
    ax.set_yticks(range(len(devices)), list(devices))
    ax.set_ylim(-0.6, len(devices) - 0.4)
    ax.set_xlabel("seconds since start")
    ax.grid(axis="x", color="#eef1f4")
    return to_svg(fig)
