"""The field evidence of a challenger: what the telemetry windows' ``shadow`` blocks say, per line
(a device pseudonym) and per group. Pure: windows in, evidence out.

Per line and group: windows, frames compared and skipped, verdict agreement (the diagonal of the
champion x challenger matrix over the frames compared), the matrix itself, the class pairs where the
two disagreed (most frequent first), the challenger's drift against its own reference (windows that
flagged any of its entries, and the longest run of such windows in a row: a run is *sustained*
drift, a lone flag is noise), and its worst p99 latency.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edgeline.core.protocol.shadow_window import VERDICTS, ShadowWindow
from edgeline.core.protocol.telemetry import TelemetryWindow

#: the normal quantile of the 95% range the noise leaves around the agreement rate
Z95 = 1.959964


@dataclass
class Evidence:
    """The comparison summed over some windows (one line's, one group's, or all)."""

    windows: int = 0
    compared: int = 0
    skipped: int = 0
    errors: int = 0
    agreement: dict[str, dict[str, int]] = field(
        default_factory=lambda: {a: dict.fromkeys(VERDICTS, 0) for a in VERDICTS}
    )
    disagreement: dict[tuple[str, str], int] = field(default_factory=dict)
    drifted_windows: int = 0
    #: the longest run of consecutive windows (of one line) whose challenger drift was flagged
    drift_run: int = 0
    latency_p99_max: float | None = None
    champion_versions: set[int] = field(default_factory=set)
    #: windows that carried Laplace noise, and the noise variance summed into the diagonal of the
    #: agreement matrix and into ``compared`` (0 for exact windows)
    noised_windows: int = 0
    agreed_var: float = 0.0
    compared_var: float = 0.0
    _run: int = 0

    def add(self, s: ShadowWindow, champion_version: int) -> None:
        """One window's block, its counts summed signed (see the module's docstring)."""
        self.windows += 1
        if s.noise_scale is not None:
            cell = 2.0 * s.noise_scale**2
            self.noised_windows += 1
            self.agreed_var += len(VERDICTS) * cell
            self.compared_var += cell
        self.compared += s.compared
        self.skipped += s.skipped
        self.errors += s.errors
        for a in VERDICTS:
            for b in VERDICTS:
                self.agreement[a][b] += s.agreement[a][b]
        for a, row in s.disagreement.items():
            for b, n in row.items():
                self.disagreement[(a, b)] = self.disagreement.get((a, b), 0) + n
        drifted = any(d.drifted for d in s.drift.values())
        self.drifted_windows += drifted
        self._run = self._run + 1 if drifted else 0
        self.drift_run = max(self.drift_run, self._run)
        if s.latency_ms is not None:
            self.latency_p99_max = max(self.latency_p99_max or 0.0, s.latency_ms.p99)
        self.champion_versions.add(champion_version)

    def absorb(self, other: Evidence) -> None:
        """Another line's evidence into this (a group's): runs are per line, so the longest is kept."""
        self.windows += other.windows
        self.compared += other.compared
        self.skipped += other.skipped
        self.errors += other.errors
        for a in VERDICTS:
            for b in VERDICTS:
                self.agreement[a][b] += other.agreement[a][b]
        for k, n in other.disagreement.items():
            self.disagreement[k] = self.disagreement.get(k, 0) + n
        self.drifted_windows += other.drifted_windows
        self.noised_windows += other.noised_windows
        self.agreed_var += other.agreed_var
        self.compared_var += other.compared_var
        self.drift_run = max(self.drift_run, other.drift_run)
        if other.latency_p99_max is not None:
            self.latency_p99_max = max(self.latency_p99_max or 0.0, other.latency_p99_max)
        self.champion_versions |= other.champion_versions

    @property
    def agreed(self) -> int:
        return sum(self.agreement[v][v] for v in VERDICTS)

    @property
    def agreement_rate(self) -> float | None:
        """Frames agreed over frames compared, clipped into [0, 1] (noised sums may leave it);
        None when the (signed) sum of frames compared is not positive."""
        if self.compared <= 0:
            return None
        return min(1.0, max(0.0, self.agreed / self.compared))

    @property
    def agreement_noise_sd(self) -> float:
        """Standard deviation of :attr:`agreement_rate` due to the windows' noise (0: exact)."""
        p = self.agreement_rate
        if p is None or (self.agreed_var <= 0 and self.compared_var <= 0):
            return 0.0
        return math.sqrt(self.agreed_var + p**2 * self.compared_var) / self.compared

    @property
    def agreement_low(self) -> float | None:
        p = self.agreement_rate
        return None if p is None else max(0.0, p - Z95 * self.agreement_noise_sd)

    @property
    def agreement_high(self) -> float | None:
        p = self.agreement_rate
        return None if p is None else min(1.0, p + Z95 * self.agreement_noise_sd)

    def top_disagreements(self, n: int = 5) -> list[tuple[str, str, int]]:
        """The class pairs with the most frames; under noise, only those whose signed sum is positive."""
        pairs = sorted(((k, c) for k, c in self.disagreement.items() if c > 0), key=lambda kv: (-kv[1], kv[0]))
        return [(a, b, c) for (a, b), c in pairs[:n]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "compared": self.compared,
            "skipped": self.skipped,
            "errors": self.errors,
            "agreement_rate": self.agreement_rate,
            "agreement_noise_sd": self.agreement_noise_sd,
            "agreement_low": self.agreement_low,
            "agreement_high": self.agreement_high,
            "noised_windows": self.noised_windows,
            "agreement": self.agreement,
            "disagreement": [{"champion": a, "challenger": b, "frames": c} for a, b, c in self.top_disagreements(20)],
            "drifted_windows": self.drifted_windows,
            "drift_run": self.drift_run,
            "latency_p99_max_ms": self.latency_p99_max,
            "champion_versions": sorted(self.champion_versions),
        }


@dataclass
class ShadowReport:
    challenger: str
    version: int
    #: line (device pseudonym) -> its evidence
    lines: dict[str, Evidence] = field(default_factory=dict)
    #: the line's group (the first group its windows named)
    line_group: dict[str, str | None] = field(default_factory=dict)

    def groups(self) -> dict[str, Evidence]:
        out: dict[str, Evidence] = {}
        for line, ev in self.lines.items():
            out.setdefault(self.line_group.get(line) or "-", Evidence()).absorb(ev)
        return out

    def total(self) -> Evidence:
        out = Evidence()
        for ev in self.lines.values():
            out.absorb(ev)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "challenger": {"name": self.challenger, "version": self.version},
            "lines": {k: {"group": self.line_group.get(k)} | v.to_dict() for k, v in sorted(self.lines.items())},
            "groups": {k: v.to_dict() for k, v in sorted(self.groups().items())},
            "total": self.total().to_dict(),
        }


def build_report(
    windows: Iterable[TelemetryWindow], challenger: str, version: int, *, group: str | None = None
) -> ShadowReport:
    """The evidence of challenger ``challenger`` v``version`` in ``windows`` (oldest first), of
    ``group`` only when given."""
    report = ShadowReport(challenger, version)
    for w in sorted(windows, key=lambda w: (w.start, w.key)):
        s = w.shadow
        if s is None or s.challenger.name != challenger or s.challenger.version != version:
            continue
        if group is not None and w.group != group:
            continue
        report.lines.setdefault(w.device, Evidence()).add(s, w.model.version)
        report.line_group.setdefault(w.device, w.group)
    return report
