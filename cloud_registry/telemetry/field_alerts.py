"""Alerts on the field rates, through the alert engine (:class:`~.alerts.AlertEngine`: once per
episode, persisted in the telemetry store).

For each row of a field report in the scopes watched (a version, a group, a line) and each rate with
a configured limit, the evidence says (:func:`crossing`):

1. **above, measured**: the rate measured from feedback has its 95% interval entirely above the limit;
2. **above, estimated**: the estimate without labels has its one-sided lower bound at
   ``estimate_confidence`` (80%: the estimate less 0.84 of its s.d.) above the limit (over at least
   ``min_verdicts`` verdicts; :meth:`.field_estimate.Estimate.sd`: the parts' own chance, the
   calibration's uncertainty and the noise; an estimate with no feedback behind its calibration, the
   scores at face value, needs its 95% interval above the limit), and the measured rate does not
   contradict it (its interval is not entirely below the limit). Not the 95% interval: its
   calibration rests on a handful of labelled escapes, so at 5% feedback a line whose escape rate had
   quadrupled never excluded the limit at 95% (bench_field: no alert in any seed); at 80% it does,
   and the normal lines open none (docs/drift.md, "Field rates");
3. **undecided**: the measured rate is above the limit but its interval reaches below, or the
   estimate is above ``hysteresis`` x the limit (0.8 x) while its interval still holds the limit:
   the episode stays as it is (no flapping on a handful of parts or a noisy estimate);
4. **below**: otherwise, when there is any evidence; with none (a line that stopped, or rates and
   estimates the Laplace noise makes unusable: "too little feedback to tell (noise)"), nothing changes.

An episode opens on 1 or 2, only on evidence that excludes the limit, and closes on 4. Slices that
:mod:`.field_slices` finds significantly
worse open a ``field_slice`` episode each, closed when the slice is no longer worse while it still
has ``min_parts`` parts with feedback. :class:`FieldMonitor` runs this over the last ``lookback_s``
of windows of every model (the ingest service calls it periodically); the retraining trigger reads
the open episodes with :func:`field_episodes`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from scipy.stats import norm

from cloud_registry.telemetry.alerts import Alert, AlertEngine
from cloud_registry.telemetry.field_rates import FieldRate
from cloud_registry.telemetry.field_report import FieldReport, FieldRow, FieldSettings
from cloud_registry.telemetry.field_store import field_report
from cloud_registry.telemetry.store import TelemetryStore

log = logging.getLogger(__name__)

Basis = Literal["measured", "estimated", "undecided", "below", "no evidence"]
KINDS = {"escape": "field_escape", "false_reject": "field_false_reject"}


@dataclass(frozen=True)
class FieldLimits:
    escape: float | None = None
    false_reject: float | None = None
    #: fewest verdicts behind an estimate that may open an episode
    min_verdicts: int = 200
    use_estimate: bool = True
    scopes: tuple[str, ...] = ("version", "group", "line")
    #: an estimate above this share of the limit (and not above the limit) leaves the episode as it is
    hysteresis: float = 0.8
    #: one-sided confidence that an estimate is above the limit before it opens an episode
    estimate_confidence: float = 0.8

    def __post_init__(self) -> None:
        for name, v in (("escape", self.escape), ("false_reject", self.false_reject)):
            if v is not None and not 0.0 < v < 1.0:
                raise ValueError(f"the field {name} limit must be a share in (0, 1), got {v}")
        if self.min_verdicts < 1:
            raise ValueError("min_verdicts must be >= 1")
        if not 0.0 < self.hysteresis <= 1.0:
            raise ValueError(f"hysteresis must be in (0, 1], got {self.hysteresis}")
        if not 0.5 <= self.estimate_confidence < 1.0:
            raise ValueError(f"estimate_confidence must be in [0.5, 1), got {self.estimate_confidence}")

    def lower_bound(self, value: float, sd: float) -> float:
        """The estimate's one-sided lower bound at :attr:`estimate_confidence`."""
        return max(0.0, value - float(norm.ppf(self.estimate_confidence)) * sd)

    def of(self, name: str) -> float | None:
        return self.escape if name == "escape" else self.false_reject


def crossing(
    rate: FieldRate,
    estimated: float | None,
    verdicts: int,
    limit: float,
    min_verdicts: int,
    hysteresis: float = 0.8,
    interval: tuple[float, float] | None = None,
    stated: bool = True,
) -> tuple[bool | None, Basis]:
    """Whether the evidence says the rate is above ``limit`` (see the module's docstring).
    ``interval``: the estimate's interval whose low end must clear the limit (None: the estimate's
    value alone, a point);
    ``stated``: False for an estimate the noise makes unusable (it is then no evidence)."""
    m_known = rate.status == "measured"
    if m_known and rate.low > limit:
        return True, "measured"
    e_known = estimated is not None and verdicts >= min_verdicts and stated
    low = interval[0] if interval is not None else estimated
    measured_below = m_known and rate.high < limit
    if e_known and low is not None and low > limit and not measured_below:
        return True, "estimated"
    if m_known and rate.value is not None and rate.value > limit:
        return None, "undecided"
    if e_known and estimated is not None and estimated > hysteresis * limit and not measured_below:
        return None, "undecided"
    if m_known or e_known:
        return False, "below"
    return None, "no evidence"


def scope_of(row: FieldRow) -> str:
    tail = "" if row.scope == "version" else f"/{row.scope}/{row.value}"
    return f"{row.model}/v{row.version}{tail}"


def check_field(engine: AlertEngine, report: FieldReport, limits: FieldLimits) -> list[Alert]:
    """Feed one report's evidence to the engine's episodes; returns the alerts that fired or resolved."""
    out: list[Alert] = []
    for row in report.rows:
        if row.scope not in limits.scopes:
            continue
        for name, kind in KINDS.items():
            limit = limits.of(name)
            if limit is None:
                continue
            rate = row.escape if name == "escape" else row.false_reject
            est = row.estimate
            value = None if est is None or not limits.use_estimate else getattr(est, name)
            verdicts = est.verdicts if est is not None else 0
            interval = est.interval(name) if est is not None else None
            stated = est is not None and est.status(name) == "stated"
            opening = interval  # no feedback behind the calibration: the scores' guess, at 95%
            if est is not None and value is not None and interval is not None and est.calibrated_on > 0:
                opening = (limits.lower_bound(value, est.sd(name)), interval[1])
            active, basis = crossing(
                rate, value, verdicts, limit, limits.min_verdicts, limits.hysteresis, opening, stated
            )
            if active is None:
                continue
            what = "escape" if name == "escape" else "false-reject"
            est_text = est.text(name) if est is not None and value is not None else "-"
            summary = (
                f"field {what} rate of {scope_of(row)} above {100 * limit:.2f}% ({basis}): "
                f"measured {rate.text()}, estimated {est_text}"
                if active
                else f"field {what} rate of {scope_of(row)} back within {100 * limit:.2f}%"
            )
            details = {
                "model": row.model,
                "version": row.version,
                "scope": row.scope,
                "value": row.value,
                "limit": limit,
                "basis": basis,
                "measured": rate.to_dict(),
                "estimated": value,
                "estimated_ci95": list(interval) if interval is not None else None,
                "estimated_lower_bound": opening[0] if opening is not None else None,
                "estimate_confidence": limits.estimate_confidence,
                "verdicts": verdicts,
            }
            alert = engine.episode(kind, scope_of(row), active, summary, details)  # type: ignore[arg-type]
            if alert is not None:
                out.append(alert)
    out += _slices(engine, report)
    return out


def _slices(engine: AlertEngine, report: FieldReport) -> list[Alert]:
    out: list[Alert] = []
    flagged = {f"{report.model}/v{a.version}/{a.scope}/{a.value}/{a.rate}": a for a in report.slice_alerts}
    for scope, a in flagged.items():
        alert = engine.episode("field_slice", scope, True, a.text(), a.to_dict())
        if alert is not None:
            out.append(alert)
    rows = {(r.version, r.scope, r.value): r for r in report.rows}
    for _kind, scope in engine.active("field_slice"):
        if scope in flagged or not scope.startswith(f"{report.model}/v"):
            continue
        parts = scope.split("/")
        if len(parts) < 5 or not parts[1][1:].isdigit():
            continue
        version, sc, rate_name = int(parts[1][1:]), parts[2], parts[-1]
        row = rows.get((version, sc, "/".join(parts[3:-1])))
        if row is None:
            continue
        rate = row.escape if rate_name == "escape" else row.false_reject
        if rate.n >= report.settings.slices.min_parts:
            alert = engine.episode("field_slice", scope, False, f"{scope}: no longer worse than the others", {})
            if alert is not None:
                out.append(alert)
    return out


def field_episodes(store: TelemetryStore, model: str, version: int | None = None) -> list[tuple[str, str]]:
    """The open field episodes (kind, scope) of ``model`` (one version, or all): evidence a retraining
    trigger can act on besides drift."""
    prefix = f"{model}/v{version}" if version is not None else f"{model}/v"
    rows = store.execute(
        "SELECT kind, scope FROM episodes WHERE active = 1 AND kind IN (?, ?, ?) ORDER BY kind, scope",
        ("field_escape", "field_false_reject", "field_slice"),
    )
    out = []
    for kind, scope in rows:
        s = str(scope)
        if s.startswith(prefix) and (version is None or s == prefix or s[len(prefix)] == "/"):
            out.append((str(kind), s))
    return out


@dataclass
class FieldMonitor:
    """Periodic field checks over the last ``lookback_s`` of every model's windows."""

    engine: AlertEngine
    limits: FieldLimits
    settings: FieldSettings = field(default_factory=FieldSettings)
    lookback_s: float = 3600.0
    models: Sequence[str] | None = None
    #: (since, until) of the windows whose feedback calibrates the estimates (None: the lookback's own)
    reference: tuple[float | None, float | None] | None = None

    def check(self, now: float) -> list[Alert]:
        store = self.engine.store
        out: list[Alert] = []
        ref_since, ref_until = self.reference if self.reference is not None else (None, None)
        for model in self.models if self.models is not None else store.models():
            report = field_report(
                store,
                model,
                self.settings,
                since=now - self.lookback_s,
                until=now,
                reference_since=ref_since,
                reference_until=ref_until,
            )
            out += check_field(self.engine, report, self.limits)
        return out
