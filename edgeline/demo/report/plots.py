"""Matplotlib figures for the report, rendered to inline SVG strings (Agg backend, no display)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
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
PURPLE = "#9334e6"
PALETTE = [BLUE, ORANGE, GREEN, RED, PURPLE, "#12b5cb", "#f9ab00", "#5f6368"]

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


def confusions(panels: Sequence[tuple[str, Sequence[str], Sequence[Sequence[int]]]]) -> str:
    """Confusion matrices side by side, ``(title, labels, matrix)`` each: counts per (true, predicted)
    class, shaded by the share of the true class's row."""
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.7), squeeze=False)
    for ax, (title, labels, matrix) in zip(axes[0], panels, strict=True):
        m = np.asarray(matrix, dtype=float)
        row = m.sum(axis=1, keepdims=True)
        frac = np.divide(m, row, out=np.zeros_like(m), where=row > 0)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                colour = "white" if frac[i, j] > 0.6 else INK
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", color=colour, fontsize=8.5)
        short = [lab.replace("_", " ") for lab in labels]
        ax.set_xticks(range(len(labels)), short, rotation=35, ha="right")
        ax.set_yticks(range(len(labels)), short if ax is axes[0][0] else [""] * len(labels))
        ax.set_xlabel("predicted")
        ax.set_title(title, color=INK, fontsize=9.5)
    axes[0][0].set_ylabel("true")
    fig.tight_layout(w_pad=1.2)
    return to_svg(fig)


def histogram_panels(
    stat: str, edges: Sequence[float], panels: Mapping[str, tuple[Sequence[float], Sequence[float]]], highlight: str
) -> str:
    """One small panel per line: the reference distribution of ``stat`` against what the line's
    telemetry pooled. ``panels[line] = (reference, field)``; ``highlight`` gets an orange field."""
    e = np.asarray(edges, dtype=float)
    centers = (e[:-1] + e[1:]) / 2
    width = float(e[1] - e[0])
    used = np.zeros(len(centers), bool)
    for ref, fld in panels.values():
        used |= (np.asarray(ref, float) > 0.002) | (np.asarray(fld, float) > 0)
    idx = np.flatnonzero(used)
    lo = e[max(0, int(idx[0]) - 1)] if idx.size else e[0]
    hi = e[min(len(e) - 1, int(idx[-1]) + 2)] if idx.size else e[-1]
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(min(10.5, 3.2 * n), 1.9), sharey=True, squeeze=False)
    for ax, (line, (ref, fld)) in zip(axes[0], sorted(panels.items()), strict=True):
        r = np.asarray(ref, float)
        f = np.asarray(fld, float)
        r = r / r.sum() if r.sum() > 0 else r
        f = f / f.sum() if f.sum() > 0 else f
        colour = ORANGE if line == highlight else GREEN
        ax.bar(centers, r, width=width * 0.92, color=BLUE, alpha=0.45, label="training reference")
        ax.bar(centers, f, width=width * 0.6, color=colour, alpha=0.85, label="field (telemetry)")
        ax.set_xlim(lo, hi)
        ax.set_yticks([])
        ax.set_title(f"{line}{'  (darkened)' if line == highlight else ''}", color=INK, fontsize=9)
        ax.set_xlabel(stat)
    axes[0][0].legend(frameon=False, fontsize=7.5, loc="upper left", bbox_to_anchor=(0.0, 1.32), ncol=2)
    return to_svg(fig)


def drift_over_time(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    threshold: float | None,
    marks: Mapping[str, float] | None = None,
    highlight: str | None = None,
) -> str:
    """Drift score over time, one line per device (log scale); ``marks`` are labelled moments."""
    fig, ax = plt.subplots(figsize=(10.5, 3.0))
    top = 1.0
    for k, (device, (t, score)) in enumerate(sorted(series.items())):
        colour = ORANGE if device == highlight else [BLUE, GREEN, PURPLE, "#12b5cb", "#5f6368"][k % 5]
        y = np.maximum(np.asarray(score, float), 0.05)
        top = max(top, float(y.max()) if y.size else 1.0)
        ax.plot(t, y, marker="o", ms=3, lw=1.8 if device == highlight else 1.2, color=colour, label=device)
    if threshold is not None:
        ax.axhline(threshold, color=RED, lw=1, ls="--", label="drift threshold")
    ax.set_yscale("log")
    ax.set_ylim(0.08, top * 3)
    if marks:
        for at in marks.values():
            ax.axvline(at, color=MUTED, lw=0.8, ls=":")
        top_axis = ax.secondary_xaxis("top")
        top_axis.set_xticks(list(marks.values()), list(marks), fontsize=7.5, color=INK)
        top_axis.tick_params(length=0)
        top_axis.spines["top"].set_visible(False)
    ax.set_xlabel("seconds since the demo started")
    ax.set_ylabel("drift score (1 = threshold)")
    ax.legend(frameon=False, fontsize=8, ncol=6, loc="lower left")
    return to_svg(fig)


EVENT_COLOURS = {
    "offered": MUTED,
    "downloading": MUTED,
    "verified": BLUE,
    "staged": BLUE,
    "activated": ORANGE,
    "committed": GREEN,
    "rejected": RED,
    "rolled_back": RED,
}
EVENT_LABELS = {"committed": "v{v} committed", "rejected": "v{v} refused", "rolled_back": "v{v} rolled back"}


def _event_label(ev: str, version: object) -> str | None:
    text = EVENT_LABELS.get(ev)
    if text is None:
        return None
    return text.format(v=version) if version is not None else text.replace("v{v} ", "")


def timeline(rows: Sequence[Mapping[str, Any]], devices: Sequence[str]) -> str:
    """Updater events per device over time. ``rows``: {device, t, event, version}."""
    fig, ax = plt.subplots(figsize=(10.5, 0.9 + 0.5 * max(1, len(devices))))
    index = {d: i for i, d in enumerate(devices)}
    seen: set[str] = set()
    for r in rows:
        y = index.get(str(r.get("device")))
        if y is None:
            continue
        ev = str(r.get("event", ""))
        label = ev if ev not in seen else None
        seen.add(ev)
        ax.scatter([float(r["t"])], [y], s=30, color=EVENT_COLOURS.get(ev, MUTED), zorder=3, label=label)
        text = _event_label(ev, r.get("version"))
        if text:
            ax.annotate(
                text,
                (float(r["t"]), y),
                textcoords="offset points",
                xytext=(0, 7),
                ha="center",
                fontsize=7.5,
                color=EVENT_COLOURS[ev],
            )
    ax.set_yticks(range(len(devices)), list(devices))
    ax.set_ylim(-0.6, len(devices) - 0.2)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the demo started")
    ax.grid(axis="x", color="#eef1f4")
    ax.legend(frameon=False, fontsize=8, ncol=8, loc="lower left", bbox_to_anchor=(0.0, 1.02))
    return to_svg(fig)


def routing_bars(rows: Sequence[tuple[str, Mapping[str, int]]]) -> str:
    """One horizontal bar per row, ``(label, {"reject": n, "review": n, "pass": n})``: the share of the
    parts sent to the reject chute, to review and on down the line."""
    parts = [("reject", RED, "rejected"), ("review", ORANGE, "review"), ("pass", "#cbd2d9", "passed")]
    fig, ax = plt.subplots(figsize=(7.2, 0.5 + 0.42 * max(1, len(rows))))
    for y, (_, counts) in enumerate(rows):
        n = max(1, sum(int(counts.get(k, 0)) for k, _, _ in parts))
        left = 0.0
        for key, colour, _ in parts:
            w = 100.0 * int(counts.get(key, 0)) / n
            if w > 0:
                ax.barh(y, w, left=left, color=colour, height=0.62)
                if w >= 7:
                    ax.text(left + w / 2, y, f"{w:.0f}%", ha="center", va="center", fontsize=8, color="white")
            left += w
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of the parts (%)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for _, c, _ in parts]
    ax.legend(handles, [t for _, _, t in parts], ncol=3, frameon=False, fontsize=8, loc="lower right",
              bbox_to_anchor=(1.0, 1.0))  # fmt: skip
    fig.tight_layout()
    return to_svg(fig)
