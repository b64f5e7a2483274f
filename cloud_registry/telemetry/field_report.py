"""The field report of a model, pure (windows in, rows out): per version, and per version and group,
line, shift or lighting band, the field escape and false-reject rates measured from operator
feedback (:mod:`.field_rates`) beside the estimates without labels (:mod:`.field_estimate`).

A *line* is one device (its pseudonym in the windows; one agent per inspection station). Feedback
counts go to the version they name and to the slice of the window that carried them (the same
device and group; for shift and lighting the window after the verdict's, close in time).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cloud_registry.telemetry.field_estimate import Calibration, Estimate, Prior, calibrate, estimate
from cloud_registry.telemetry.field_rates import MIN_PARTS, FieldRate, FieldTotals, measured
from cloud_registry.telemetry.field_slices import SliceSettings, SliceVerdict, slice_of, worse_slices
from edgeline.core.protocol.telemetry import TelemetryWindow

#: the scopes of a report, in order: every window of the version, then one row per value
SCOPES: tuple[str, ...] = ("version", "group", "line", "shift", "light")


@dataclass(frozen=True)
class FieldSettings:
    min_parts: int = MIN_PARTS
    #: configured limits of the field rates (alerts; "how much feedback would settle it")
    escape_limit: float | None = None
    false_reject_limit: float | None = None
    slices: SliceSettings = field(default_factory=SliceSettings)
    #: the prior curves of the estimates' calibration, per side (:func:`.field_estimate.calibrate`)
    pass_prior: Prior = "identity"
    reject_prior: Prior = "identity"


@dataclass
class FieldRow:
    model: str
    version: int
    scope: str
    value: str
    totals: FieldTotals
    escape: FieldRate
    false_reject: FieldRate
    estimate: Estimate | None = None

    def to_dict(self) -> dict[str, Any]:
        t = self.totals
        return {
            "model": self.model,
            "version": self.version,
            "scope": self.scope,
            "value": self.value,
            "windows": t.windows,
            "frames": t.frames,
            "feedback": t.feedback,
            "feedback_share": t.feedback_share,
            "feedback_gap": t.gap,
            "feedback_share_passed": t.side_shares()[0],
            "feedback_share_rejected": t.side_shares()[1],
            "sampling_warning": t.sampling_warning(),
            "counts": t.counts(),
            "escape": self.escape.to_dict(),
            "false_reject": self.false_reject.to_dict(),
            "estimate": self.estimate.to_dict() if self.estimate is not None else None,
            "agreement": self.agreement(),
        }

    def agreement(self) -> dict[str, bool | None]:
        """Per rate, whether the estimate without labels lies in the measured rate's 95% interval
        (None where either is missing or the feedback too little): the check of the estimate against
        the feedback wherever both exist."""
        out: dict[str, bool | None] = {}
        for name, rate in (("escape", self.escape), ("false_reject", self.false_reject)):
            est = None if self.estimate is None else getattr(self.estimate, name)
            out[name] = None if est is None or rate.status != "measured" else rate.low <= est <= rate.high
        return out


@dataclass
class FieldReport:
    model: str
    settings: FieldSettings
    rows: list[FieldRow]
    calibrations: dict[int, Calibration]
    slice_alerts: list[SliceVerdict]

    def row(self, version: int, scope: str = "version", value: str = "all") -> FieldRow | None:
        for r in self.rows:
            if (r.version, r.scope, r.value) == (version, scope, value):
                return r
        return None

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "model": self.model,
            "min_parts": s.min_parts,
            "escape_limit": s.escape_limit,
            "false_reject_limit": s.false_reject_limit,
            "rows": [r.to_dict() for r in self.rows],
            "calibrations": {str(v): c.to_dict() for v, c in sorted(self.calibrations.items())},
            "worse_slices": [a.to_dict() for a in self.slice_alerts],
        }


Key = tuple[int, str]


def accumulate(
    windows: Iterable[TelemetryWindow], model: str, value_of: Callable[[TelemetryWindow], str]
) -> dict[Key, FieldTotals]:
    """Per (version, slice value): what the windows served and the feedback they carried."""
    out: dict[Key, FieldTotals] = {}
    for w in windows:
        if w.model.name != model:
            continue
        value = value_of(w)
        served = out.setdefault((w.model.version, value), FieldTotals())
        served.add_served(w.frames, w.field_metrics, w.class_counts.get("unknown", 0))
        if w.field_metrics is None:
            continue
        for fv in w.field_metrics.feedback:
            if fv.model == model:
                t = out.setdefault((fv.version, value), FieldTotals())
                t.add_feedback(fv.added, fv.retracted, w.field_metrics.feedback_gap, w.field_metrics.noise_scale)
    return out


def build_field_report(
    windows: Sequence[TelemetryWindow],
    model: str,
    settings: FieldSettings | None = None,
    *,
    scopes: Sequence[str] = SCOPES,
    reference: Sequence[TelemetryWindow] | None = None,
) -> FieldReport:
    """The report of ``model``'s ``windows``. The estimates' calibration is learned from the feedback
    in ``reference`` (default: the same windows), per version."""
    s = settings or FieldSettings()
    per_version = accumulate(windows, model, lambda w: "all")
    learned = per_version if reference is None else accumulate(reference, model, lambda w: "all")
    calibrations = {
        v: calibrate(t, pass_prior=s.pass_prior, reject_prior=s.reject_prior) for (v, _), t in learned.items()
    }
    rows: list[FieldRow] = []
    alerts: list[SliceVerdict] = []
    for scope in scopes:
        if scope == "version":
            groups = per_version
        else:
            groups = accumulate(windows, model, lambda w, sc=scope: slice_of(w, sc, s.slices))  # type: ignore[misc]
        scoped = [_row(model, v, scope, value, t, calibrations.get(v), s) for (v, value), t in sorted(groups.items())]
        rows += scoped
        if scope in s.slices.compare:
            alerts += worse_slices([(r.version, r.scope, r.value, r.escape, r.false_reject) for r in scoped], s.slices)
    return FieldReport(model, s, rows, calibrations, alerts)


def _row(
    model: str, version: int, scope: str, value: str, t: FieldTotals, cal: Calibration | None, s: FieldSettings
) -> FieldRow:
    esc, fr = measured(t, min_parts=s.min_parts, escape_limit=s.escape_limit, false_reject_limit=s.false_reject_limit)
    est = estimate(t, cal) if cal is not None and t.frames else None
    return FieldRow(model, version, scope, value, t, esc, fr, est)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _measured_cell(r: FieldRate) -> str:
    if r.status == "none":
        return "no feedback"
    if r.status == "noisy":
        return "too little feedback to tell (noise)"
    core = f"{_pct(r.value)} [{_pct(r.low)}-{_pct(r.high)}] n={r.n}"
    return core if r.status == "measured" else f"too little ({core})"


def _estimate_cell(e: Estimate | None, name: str) -> str:
    if e is None:
        return "-"
    if e.status(name) == "noisy":
        return "too little feedback to tell (noise)"
    value, iv = getattr(e, name), e.interval(name)
    return "-" if value is None or iv is None else f"{_pct(value)} [{_pct(iv[0])}-{_pct(iv[1])}]"


def table_rows(report: FieldReport) -> list[list[str]]:
    """The report as text cells: version, scope, value, frames, feedback, measured and estimated rates."""
    out = []
    for r in report.rows:
        e = r.estimate
        share = r.totals.feedback_share
        out.append(
            [
                f"v{r.version}",
                r.scope,
                r.value,
                str(r.totals.frames),
                f"{r.totals.feedback} ({_pct(share)})" if share is not None else str(r.totals.feedback),
                _measured_cell(r.escape),
                _estimate_cell(e, "escape"),
                _measured_cell(r.false_reject),
                _estimate_cell(e, "false_reject"),
            ]
        )
    return out


TABLE_HEADER = [
    "version",
    "scope",
    "value",
    "frames",
    "feedback",
    "escape (measured)",
    "escape (est.)",
    "false reject (measured)",
    "FR (est.)",
]
