"""The drift report of a model: what the field saw against what the model was trained on.

For each version (and group) in the telemetry store: windows, frames, devices and time span; per
input statistic the reference and field means, the PSI of the pooled field histogram against the
reference (with its calibrated threshold), the earth mover's distance, and how many windows the
devices flagged as drifted. The PNG shows reference against field histograms and every window's drift
score over time with its threshold. The same figures feed retraining: the brightness and contrast
shift read here is what the augmentation of the next version is matched to.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cloud_registry.errors import NotFound
from cloud_registry.telemetry.store import TelemetryStore
from edge_agent.preprocessing import STAT_RANGES, stat_edges
from edge_agent.telemetry.drift import Calibrator, emd, hist_mean_std, psi, reference_on
from edgeline.core.protocol.manifest import Reference
from edgeline.core.protocol.telemetry import STAT_NAMES, TelemetryWindow

ReferenceFor = Callable[[str, int], Reference | None]


@dataclass
class StatSummary:
    name: str
    ref_mean: float | None
    field_mean: float
    field_std: float
    psi: float | None
    threshold: float | None
    emd: float | None
    windows_drifted: int
    windows: int

    @property
    def drifted(self) -> bool:
        return self.psi is not None and self.threshold is not None and self.psi > self.threshold


@dataclass
class Point:
    """One window on the time axis: its end and the drift entries the device computed."""

    end: float
    device: str
    psi: dict[str, float]
    threshold: dict[str, float]
    drifted: dict[str, bool]


@dataclass
class VersionReport:
    model: str
    version: int
    group: str | None
    windows: int
    frames: int
    devices: int
    start: float
    end: float
    stats: list[StatSummary]
    class_counts: dict[str, int]
    reference_mix: dict[str, float]
    field_hist: dict[str, list[int]] = field(default_factory=dict)
    ref_hist: dict[str, list[float]] = field(default_factory=dict)
    series: list[Point] = field(default_factory=list)

    def stat(self, name: str) -> StatSummary:
        return next(s for s in self.stats if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("series")
        d.pop("field_hist")
        d.pop("ref_hist")
        for s, summary in zip(d["stats"], self.stats, strict=True):
            s["drifted"] = summary.drifted
        return d


def _summarise(
    model: str, version: int, group: str | None, windows: list[TelemetryWindow], ref: Reference | None
) -> VersionReport:
    cal = Calibrator()
    hists = {n: np.zeros(len(stat_edges(n)) - 1, np.int64) for n in STAT_NAMES}
    counts: dict[str, int] = {}
    for w in windows:
        for stat, h in w.input_stats.items():
            hists[stat] += np.asarray(h, np.int64)
        for label, k in w.class_counts.items():
            counts[label] = counts.get(label, 0) + k
    stats: list[StatSummary] = []
    ref_hist: dict[str, list[float]] = {}
    for name in STAT_NAMES:
        edges = stat_edges(name)
        c = hists[name]
        if c.sum() == 0:
            continue
        mean, std = hist_mean_std(c, edges)
        flagged = sum(1 for w in windows if w.drift.get(name) is not None and w.drift[name].drifted)
        scored = sum(1 for w in windows if name in w.drift)
        hist = ref.input_stats.get(name) if ref is not None else None
        if hist is not None:
            p = reference_on(hist, edges)
            ref_hist[name] = p.tolist()
            n = int(c.sum())
            ref_mean = hist_mean_std(p, edges)[0]
            s = StatSummary(
                name, ref_mean, mean, std, psi(p, c), cal.threshold(p, n), emd(p, c, edges), flagged, scored
            )
        else:
            s = StatSummary(name, None, mean, std, None, None, None, flagged, scored)
        stats.append(s)
    series = [
        Point(
            w.end,
            w.device,
            {k: d.psi for k, d in w.drift.items()},
            {k: d.threshold for k, d in w.drift.items()},
            {k: d.drifted for k, d in w.drift.items()},
        )
        for w in windows
    ]
    return VersionReport(
        model=model,
        version=version,
        group=group,
        windows=len(windows),
        frames=sum(w.frames for w in windows),
        devices=len({w.device for w in windows}),
        start=min(w.start for w in windows),
        end=max(w.end for w in windows),
        stats=stats,
        class_counts=dict(sorted(counts.items())),
        reference_mix=dict(ref.class_mix) if ref is not None else {},
        field_hist={n: h.tolist() for n, h in hists.items() if h.sum()},
        ref_hist=ref_hist,
        series=series,
    )


def build_report(
    store: TelemetryStore,
    model: str,
    *,
    version: int | None = None,
    by_group: bool = False,
    since: float | None = None,
    until: float | None = None,
    reference_for: ReferenceFor | None = None,
    select: Callable[[TelemetryWindow], bool] | None = None,
) -> list[VersionReport]:
    """One :class:`VersionReport` per version (per group with ``by_group``), oldest version first;
    ``select`` keeps only some windows (e.g. those flagged as drifted)."""
    versions = [version] if version is not None else store.versions(model)
    if not versions or store.count(model) == 0:
        raise NotFound(f"no telemetry for model {model!r}")
    out: list[VersionReport] = []
    for v in versions:
        windows = [sw.window for sw in store.windows(model, v, since=since, until=until)]
        if select is not None:
            windows = [w for w in windows if select(w)]
        if not windows:
            continue
        ref = reference_for(model, v) if reference_for is not None else None
        groups: dict[str | None, list[TelemetryWindow]] = {}
        for w in windows:
            groups.setdefault(w.group if by_group else None, []).append(w)
        for g, ws in sorted(groups.items(), key=lambda kv: kv[0] or ""):
            out.append(_summarise(model, v, g, ws, ref))
    if not out:
        raise NotFound(f"no telemetry for model {model!r} in the requested range")
    return out


def render_png(reports: list[VersionReport], path: Path) -> Path:
    """Reference vs field histograms (one column per statistic) for each version, and the drift
    score of every window over time with its calibrated threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in STAT_NAMES if any(n in r.field_hist for r in reports)]
    cols = max(1, len(names))
    rows = len(reports) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for i, rep in enumerate(reports):
        for j, name in enumerate(names):
            ax = axes[i][j]
            edges = stat_edges(name)
            mids = (edges[:-1] + edges[1:]) / 2
            width = float(edges[1] - edges[0])
            field_h = np.asarray(rep.field_hist.get(name, []), np.float64)
            if field_h.size and field_h.sum() > 0:
                ax.bar(mids, field_h / field_h.sum(), width=width * 0.9, alpha=0.6, label="field", color="tab:red")
            if name in rep.ref_hist:
                ax.step(mids, rep.ref_hist[name], where="mid", color="black", label="reference")
            title = f"v{rep.version}{'/' + rep.group if rep.group else ''} {name}"
            s = next((x for x in rep.stats if x.name == name), None)
            if s is not None and s.psi is not None:
                title += f"\nPSI {s.psi:.2f} (thr {s.threshold:.2f})"
            ax.set_title(title, fontsize=8)
            ax.set_xlim(*STAT_RANGES[name])
            ax.tick_params(labelsize=7)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    gs = axes[-1][0].get_gridspec()
    for ax in axes[-1]:
        ax.remove()
    ts = fig.add_subplot(gs[-1, :])
    t0 = min(r.start for r in reports)
    for name in names:
        pts = sorted((p.end, p.psi[name], p.threshold[name]) for r in reports for p in r.series if name in p.psi)
        if not pts:
            continue
        hours = [(e - t0) / 3600 for e, _, _ in pts]
        ts.plot(hours, [max(v, 1e-3) for _, v, _ in pts], marker=".", lw=1, label=name)
    thr = sorted((p.end, p.threshold[k]) for r in reports for p in r.series for k in p.threshold if k in names)
    if thr:
        finite = [(e, v) for e, v in thr if math.isfinite(v)]
        ts.plot([(e - t0) / 3600 for e, _ in finite], [v for _, v in finite], ":", color="grey", label="threshold")
    ts.set_yscale("log")
    ts.set_xlabel("hours since the first window")
    ts.set_ylabel("PSI per window")
    ts.legend(fontsize=7, ncol=6)
    fig.suptitle(f"drift of {reports[0].model}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class FieldShift:
    """How the field's images differ from the training images, read from the histograms: the offset
    of mean brightness and the ratio of mean contrast (both in the units of ``input_stats``)."""

    brightness_delta: float
    contrast_ratio: float
    frames: int
    windows: int
    evidence: dict[str, Any]


def field_shift(report: VersionReport) -> FieldShift:
    """The brightness offset and contrast ratio of the field against the reference."""
    try:
        b, c = report.stat("brightness"), report.stat("contrast")
    except StopIteration as exc:
        raise NotFound(f"no brightness/contrast histograms for {report.model} v{report.version}") from exc
    if b.ref_mean is None or c.ref_mean is None:
        raise NotFound(f"{report.model} v{report.version} has no reference histograms to compare with")
    evidence = {
        "model": report.model,
        "version": report.version,
        "group": report.group,
        "windows": report.windows,
        "frames": report.frames,
        "devices": report.devices,
        "from": report.start,
        "to": report.end,
        "psi": {s.name: s.psi for s in report.stats},
        "threshold": {s.name: s.threshold for s in report.stats},
        "windows_drifted": {s.name: s.windows_drifted for s in report.stats},
        "brightness": {"reference": b.ref_mean, "field": b.field_mean},
        "contrast": {"reference": c.ref_mean, "field": c.field_mean},
    }
    ratio = c.field_mean / max(c.ref_mean, 1e-6)
    return FieldShift(b.field_mean - b.ref_mean, ratio, report.frames, report.windows, evidence)
