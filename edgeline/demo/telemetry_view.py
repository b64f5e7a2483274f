"""What the cloud sees of each line: its telemetry windows as a drift series, the sustained-drift
episodes (the same rule the devices' local alarm and the cloud alerts use: ``need`` of the last ``of``
windows drifted), and pooled field histograms against the model's reference. Pure functions over
the windows the ingest stored."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_agent.preprocessing import stat_edges
from edge_agent.telemetry.drift import Sustained, reference_on
from edgeline.core.protocol.manifest import Reference
from edgeline.core.protocol.telemetry import STAT_NAMES, TelemetryWindow

#: input statistics shown as histograms in the report
SHOWN_STATS = ("brightness", "contrast")


def input_drifted(w: TelemetryWindow) -> bool:
    return any(w.drift[k].drifted for k in STAT_NAMES if k in w.drift)


def drift_ratio(w: TelemetryWindow) -> float:
    """The largest PSI / calibrated-threshold ratio over the input statistics (> 1: drifted)."""
    ratios = [w.drift[k].psi / w.drift[k].threshold for k in STAT_NAMES if k in w.drift and w.drift[k].threshold > 0]
    return max(ratios, default=0.0)


@dataclass
class LineView:
    line: str
    windows: list[TelemetryWindow] = field(default_factory=list)
    #: (t of the window that opened the episode, t of the window that closed it or None)
    episodes: list[tuple[float, float | None]] = field(default_factory=list)

    @property
    def alarm(self) -> bool:
        return bool(self.episodes)

    def first_alarm(self) -> float | None:
        return self.episodes[0][0] if self.episodes else None


def line_view(line: str, windows: Iterable[TelemetryWindow], rule: tuple[int, int, int] = (3, 4, 3)) -> LineView:
    """Windows of one line in time order, and the sustained-drift episodes they make."""
    view = LineView(line, sorted((w for w in windows if w.group == line), key=lambda w: (w.start, w.key)))
    sustained = Sustained(*rule)
    for w in view.windows:
        change = sustained.update(input_drifted(w))
        if change == "start":
            view.episodes.append((w.end, None))
        elif change == "end" and view.episodes:
            view.episodes[-1] = (view.episodes[-1][0], w.end)
    return view


def series(view: LineView, t0: float) -> list[dict[str, Any]]:
    out = []
    for w in view.windows:
        b = w.drift.get("brightness")
        out.append(
            {
                "t": round(w.end - t0, 2),
                "version": w.model.version,
                "frames": w.frames,
                "score": round(drift_ratio(w), 3),
                "brightness_psi": round(b.psi, 4) if b else None,
                "brightness_threshold": round(b.threshold, 4) if b else None,
                "drifted": input_drifted(w),
            }
        )
    return out


def pooled(windows: Sequence[TelemetryWindow], stat: str) -> np.ndarray:
    edges = stat_edges(stat)
    total = np.zeros(len(edges) - 1, np.int64)
    for w in windows:
        h = w.input_stats.get(stat)
        if h is not None:
            total += np.asarray(h, np.int64)
    return total


def histograms(windows: Sequence[TelemetryWindow], reference: Reference) -> dict[str, dict[str, list[float]]]:
    """Reference frequencies against pooled field counts, for :data:`SHOWN_STATS`."""
    out: dict[str, dict[str, list[float]]] = {}
    for stat in SHOWN_STATS:
        ref = reference.input_stats.get(stat)
        counts = pooled(windows, stat)
        if ref is None or counts.sum() == 0:
            continue
        edges = stat_edges(stat)
        out[stat] = {
            "edges": [round(float(e), 4) for e in edges],
            "reference": [round(float(p), 5) for p in reference_on(ref, edges)],
            "field": [int(c) for c in counts],
        }
    return out
