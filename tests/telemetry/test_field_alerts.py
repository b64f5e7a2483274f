"""Field-rate alerts through the real alert engine and telemetry store: once per episode, measured or
estimated, undecided evidence keeps the episode, no evidence changes nothing, a restart does not
fire again, worse slices are their own episodes, and the retraining trigger can read them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cloud_registry.telemetry.alerts import AlertEngine, CommandSink
from cloud_registry.telemetry.field_alerts import FieldLimits, FieldMonitor, check_field, crossing, field_episodes
from cloud_registry.telemetry.field_rates import rate
from cloud_registry.telemetry.field_report import build_field_report
from cloud_registry.telemetry.store import TelemetryStore
from edgeline.core.protocol.telemetry import TelemetryWindow
from tests.telemetry.field_helpers import DAY0, cells, window

LIMITS = FieldLimits(escape=0.05, false_reject=0.02, scopes=("version",))


def test_crossing_rules() -> None:
    assert crossing(rate("escape", 20, 100), None, 0, 0.05, 200) == (True, "measured")  # CI 12.7-29.2%
    assert crossing(rate("escape", 7, 100), None, 0, 0.05, 200) == (None, "undecided")  # CI 2.9-13.9%
    assert crossing(rate("escape", 1, 100), None, 0, 0.05, 200) == (False, "below")
    assert crossing(rate("escape", 0, 0), 0.09, 500, 0.05, 200) == (True, "estimated")
    assert crossing(rate("escape", 0, 0), 0.09, 50, 0.05, 200) == (None, "no evidence")  # too few verdicts
    # a measured rate clearly below overrules the estimate
    assert crossing(rate("escape", 0, 300), 0.09, 500, 0.05, 200) == (False, "below")
    # an estimate just under the limit neither opens nor closes an episode; well under, it closes
    assert crossing(rate("escape", 0, 0), 0.045, 500, 0.05, 200) == (None, "undecided")
    assert crossing(rate("escape", 0, 0), 0.035, 500, 0.05, 200) == (False, "below")
    with pytest.raises(ValueError, match="hysteresis"):
        FieldLimits(escape=0.05, hysteresis=0.0)
    with pytest.raises(ValueError, match="escape limit"):
        FieldLimits(escape=1.5)


def _escapes(k: int, n: int, t: float) -> list[TelemetryWindow]:
    fb = cells(pass_defect={0: k}, reject_defect={9: n - k}, pass_ok={0: 500})
    return [window(start=t, score_pass={0: 2000}, score_reject={9: 100}, feedback=[(1, fb, None)])]


def test_a_measured_escape_rate_above_the_limit_fires_once_and_resolves(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "t.db")
    out = tmp_path / "alerts.jsonl"
    sink = CommandSink([sys.executable, "-c", f"import sys; open({str(out)!r}, 'a').write(sys.stdin.read() + '\\n')"])
    engine = AlertEngine(store, [sink])
    bad = build_field_report(_escapes(20, 100, DAY0), "plates")
    [fired] = [a for a in check_field(engine, bad, LIMITS) if a.kind == "field_escape"]
    assert fired.state == "firing" and fired.scope == "plates/v1"
    assert fired.details["basis"] == "measured" and "20.00% (20/100" in fired.summary
    assert [a for a in check_field(engine, bad, LIMITS) if a.kind == "field_escape"] == []  # same episode
    # a restarted service (a new engine on the same store) does not fire again
    assert [a for a in check_field(AlertEngine(store), bad, LIMITS) if a.kind == "field_escape"] == []
    assert ("field_escape", "plates/v1") in field_episodes(store, "plates", 1)
    assert field_episodes(store, "plates", 2) == [] and field_episodes(store, "other") == []
    # undecided evidence keeps it open; no evidence changes nothing; good evidence resolves it
    assert check_field(engine, build_field_report(_escapes(7, 100, DAY0), "plates"), LIMITS) == []
    assert check_field(engine, build_field_report([], "plates"), LIMITS) == []
    [resolved] = check_field(engine, build_field_report(_escapes(1, 200, DAY0), "plates"), LIMITS)
    assert (resolved.kind, resolved.state) == ("field_escape", "resolved")
    assert [json.loads(line)["state"] for line in out.read_text().splitlines()] == ["firing", "resolved"]
    assert field_episodes(store, "plates") == []


def test_an_estimated_false_reject_rate_fires_without_feedback_once_a_calibration_excludes_the_limit(
    tmp_path: Path,
) -> None:
    engine = AlertEngine(TelemetryStore(tmp_path / "t.db"))
    limits = FieldLimits(false_reject=0.02, scopes=("version",))
    # no feedback at all: the scores at face value, 300 rejected at score 0.55 -> ~45% of them good:
    # 6.6%, but an uncalibrated curve is only the ridge's guess, its interval holds 2%: no episode
    w = window(score_pass={0: 2000}, score_reject={5: 300})
    rep = build_field_report([w], "plates")
    est = rep.rows[0].estimate
    assert est is not None and est.false_reject == pytest.approx(300 * 0.45 / (300 * 0.45 + 2000 * 0.95))
    iv = est.interval("false_reject")
    assert iv is not None and iv[0] < 0.02 < iv[1]
    assert check_field(engine, rep, limits) == []
    # a reference period's feedback calibrates the rejected side (90 of 200 at 0.55 good): the report's
    # windows have no feedback of their own, and the estimate's interval now lies above the limit
    fb = cells(reject_ok={5: 90}, reject_defect={5: 110}, pass_ok={0: 200})
    ref = window(start=DAY0 - 86400, score_pass={0: 2000}, score_reject={5: 300}, feedback=[(1, fb, None)])
    rep = build_field_report([w], "plates", reference=[ref])
    [a] = check_field(engine, rep, limits)
    assert (a.kind, a.details["basis"]) == ("field_false_reject", "estimated")
    assert a.details["measured"]["status"] == "none" and a.details["estimated_ci95"][0] > 0.02


def test_a_worse_line_is_its_own_episode_and_the_monitor_reads_the_store(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "t.db")
    engine = AlertEngine(store)
    t = DAY0 + 3600
    for dev, k in (("a" * 32, 30), ("b" * 32, 4), ("c" * 32, 5)):
        fb = cells(pass_defect={0: k}, reject_defect={9: 100 - k}, pass_ok={0: 500})
        store.add(window(device=dev, start=t, score_pass={0: 2000}, score_reject={9: 100}, feedback=[(1, fb, None)]))
    monitor = FieldMonitor(engine, FieldLimits(escape=0.2), lookback_s=7200)
    alerts = monitor.check(t + 600)
    kinds = sorted((a.kind, a.scope) for a in alerts)
    assert ("field_slice", f"plates/v1/line/{'a' * 12}/escape") in kinds
    assert ("field_escape", f"plates/v1/line/{'a' * 12}") in kinds  # 30/100: CI 21.3-40.0% > 20%
    assert ("field_escape", "plates/v1") not in kinds  # 39/300 for the version
    assert monitor.check(t + 700) == []
    assert monitor.check(t + 10 * 86400) == []  # nothing in the lookback: episodes stay as they are
    assert len(field_episodes(store, "plates", 1)) == 2


def test_the_retraining_trigger_names_open_field_episodes(tmp_path: Path) -> None:
    from cloud_registry.telemetry.retrain_plan import NoSustainedDrift, plan_retrain

    store = TelemetryStore(tmp_path / "t.db")
    ws = _escapes(20, 100, DAY0)
    store.add_many(ws)
    check_field(AlertEngine(store), build_field_report(ws, "plates"), LIMITS)
    with pytest.raises(NoSustainedDrift, match="open field-rate episodes: plates/v1"):
        plan_retrain(store, "plates", version=1, reference_for=lambda name, v: None)


def test_a_calibrated_estimate_opens_on_its_one_sided_bound_and_an_uncalibrated_one_at_95_percent(
    tmp_path: Path,
) -> None:
    fb = cells(reject_ok={5: 90}, reject_defect={5: 110}, pass_ok={0: 200})
    ref = window(start=DAY0 - 86400, score_pass={0: 2000}, score_reject={5: 300}, feedback=[(1, fb, None)])
    rep = build_field_report([window(score_pass={0: 2000}, score_reject={5: 300})], "plates", reference=[ref])
    est = rep.rows[0].estimate
    assert est is not None and est.calibrated_on > 0 and est.false_reject is not None
    iv = est.interval("false_reject")
    assert iv is not None
    bound = FieldLimits().lower_bound(est.false_reject, est.sd("false_reject"))
    assert iv[0] < bound < est.false_reject  # 80% one-sided: 0.84 s.d. below, the 95% interval 1.96
    limit = (iv[0] + bound) / 2  # inside the 95% interval, below the 80% bound
    [a] = check_field(
        AlertEngine(TelemetryStore(tmp_path / "a.db")), rep, FieldLimits(false_reject=limit, scopes=("version",))
    )
    assert a.details["basis"] == "estimated" and a.details["estimated_lower_bound"] == pytest.approx(bound)
    strict = FieldLimits(false_reject=limit, scopes=("version",), estimate_confidence=0.975)
    assert check_field(AlertEngine(TelemetryStore(tmp_path / "b.db")), rep, strict) == []
    with pytest.raises(ValueError, match="estimate_confidence"):
        FieldLimits(estimate_confidence=1.0)
