"""The field report read from the telemetry store (either backend).

Feedback on a version's verdicts can ride in windows of a later version (the operator answered after
the update), so the windows of every version of the model are read, and rows are filtered after.
"""

from __future__ import annotations

from collections.abc import Sequence

from cloud_registry.telemetry.field_report import SCOPES, FieldReport, FieldSettings, build_field_report
from cloud_registry.telemetry.store import TelemetryStore
from edgeline.core.protocol.telemetry import TelemetryWindow


def field_windows(
    store: TelemetryStore,
    model: str,
    *,
    group: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> list[TelemetryWindow]:
    """The model's windows (every version), oldest first."""
    return [s.window for s in store.windows(model, group=group, since=since, until=until)]


def field_report(
    store: TelemetryStore,
    model: str,
    settings: FieldSettings | None = None,
    *,
    version: int | None = None,
    group: str | None = None,
    since: float | None = None,
    until: float | None = None,
    reference_until: float | None = None,
    reference_since: float | None = None,
    scopes: Sequence[str] = SCOPES,
) -> FieldReport:
    """The field report of ``model`` over ``[since, until]``. ``reference_since`` / ``reference_until``:
    learn the estimates' calibration from the feedback of the windows of that period only (a
    reference period, read apart from the report's own windows); default: the report's windows."""
    windows = field_windows(store, model, group=group, since=since, until=until)
    reference = None
    if reference_until is not None or reference_since is not None:
        reference = field_windows(store, model, group=group, since=reference_since, until=reference_until)
    report = build_field_report(windows, model, settings, scopes=scopes, reference=reference)
    if version is not None:
        report.rows = [r for r in report.rows if r.version == version]
        report.slice_alerts = [a for a in report.slice_alerts if a.version == version]
        report.calibrations = {v: c for v, c in report.calibrations.items() if v == version}
    return report
