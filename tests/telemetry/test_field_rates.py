"""Field rates from feedback counts, the estimates without labels and the slices, against hand
computations; and the report read from a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloud_registry.telemetry.field_estimate import BIN_LOGITS, BIN_MIDS, RIDGE, calibrate, estimate
from cloud_registry.telemetry.field_rates import FieldTotals, measured
from cloud_registry.telemetry.field_report import FieldSettings, build_field_report, table_rows
from cloud_registry.telemetry.field_slices import SliceSettings, light_of, shift_of, two_proportion
from cloud_registry.telemetry.field_store import field_report
from edgeline.core.protocol.field_window import SCORE_BINS
from edgeline.core.protocol.telemetry import TelemetryWindow
from tests.telemetry.field_helpers import DAY0, cells, window
from tests.telemetry.stores import BACKENDS, opened, store_url


def _totals(*ws: TelemetryWindow) -> FieldTotals:
    report = build_field_report(list(ws), "plates", scopes=("version",))
    row = report.row(1)
    assert row is not None
    return row.totals


def test_rates_and_intervals_match_a_hand_computation() -> None:
    # 30 defective parts with feedback: 3 passed (escapes), 26 rejected, 1 unknown;
    # 200 good parts with feedback: 197 passed, 2 rejected, 1 unknown (3 false rejects)
    w1 = window(feedback=[(1, cells(pass_defect={0: 2}, reject_defect={9: 20}, pass_ok={0: 100}), None)])
    fb2 = cells(pass_defect={1: 1}, reject_defect={8: 6}, unknown_defect=1, pass_ok={1: 97}, reject_ok={7: 2})
    w2 = window(feedback=[(1, fb2.model_copy(update={"unknown_ok": 1}), None)])
    esc, fr = measured(_totals(w1, w2))
    assert (esc.events, esc.n, esc.status) == (3, 30, "measured")
    assert esc.value == pytest.approx(0.1)
    # exact binomial 95% interval of 3/30: Beta(0.025; 3, 28) and Beta(0.975; 4, 27)
    assert (esc.low, esc.high) == (pytest.approx(0.021117, abs=1e-6), pytest.approx(0.265288, abs=1e-6))
    assert (fr.events, fr.n) == (3, 200) and fr.value == pytest.approx(0.015)
    assert (fr.low, fr.high) == (pytest.approx(0.003104, abs=1e-6), pytest.approx(0.043208, abs=1e-6))
    assert esc.text() == "10.00% (3/30, 95% CI 2.11-26.53%)"


def test_a_correction_is_subtracted_and_a_negative_sum_gives_no_rate() -> None:
    w1 = window(feedback=[(1, cells(pass_defect={0: 1}, pass_ok={0: 40}), None)])
    # the escape was a good part after all: retracted as pass_defect, added as pass_ok
    w2 = window(feedback=[(1, cells(pass_ok={0: 1}), cells(pass_defect={0: 1}))])
    t = _totals(w1, w2)
    assert t.counts()["pass_defect"] == 0 and t.counts()["pass_ok"] == 41 and t.feedback == 41
    noisy = window(feedback=[(1, cells(), cells(reject_ok={3: 2}))])  # a retraction alone (noise)
    t = _totals(noisy)
    assert t.counts()["reject_ok"] == -2 and t.feedback == 0  # summed signed; the rate is clipped
    assert measured(t)[1].status == "none" and measured(t)[1].n == 0


def test_too_little_feedback_says_so_and_how_much_would_settle_it() -> None:
    w = window(feedback=[(1, cells(pass_defect={0: 1}, reject_defect={9: 4}, pass_ok={0: 12}), None)])
    esc, fr = measured(_totals(w), escape_limit=0.05, false_reject_limit=0.02)
    assert esc.status == "too_little" and fr.status == "too_little"
    assert esc.text().startswith("too little feedback to tell: 5 defective parts with feedback")
    assert esc.needed is not None and esc.needed >= 30 and "would settle 5.00%" in esc.text()
    esc0, _ = measured(_totals(window()))
    assert esc0.status == "none" and esc0.text() == "no feedback on defective parts" and esc0.value is None


def test_the_estimate_without_feedback_takes_the_scores_at_face_value() -> None:
    # no feedback: q = the bin's middle. 100 passed at score bin 0 (0.05), 20 rejected at bin 9 (0.95)
    w = window(score_pass={0: 100}, score_reject={9: 20})
    t = _totals(w)
    cal = calibrate(t)
    assert cal.labelled == 0 and cal.p_defect.tolist() == pytest.approx(BIN_MIDS.tolist())
    e = estimate(t, cal)
    # escapes 100 * 0.05 = 5, caught 20 * 0.95 = 19: 5 / 24; false rejects 20 * 0.05 = 1 of 96
    assert e.escape == pytest.approx(5 / 24) and e.false_reject == pytest.approx(1 / 96)
    assert (e.verdicts, e.calibrated_on) == (120, 0)


def test_the_calibration_learns_from_feedback_by_score_bin() -> None:
    # passed: bin 0 2 defects of 100, bin 3 1 of 20; rejected: bin 9 45 defects of 50
    fb = cells(pass_ok={0: 98, 3: 19}, pass_defect={0: 2, 3: 1}, reject_ok={9: 5}, reject_defect={9: 45})
    w = window(score_pass={0: 1000, 3: 100}, score_reject={9: 200}, feedback=[(1, fb, None)])
    t = _totals(w)
    cal = calibrate(t)
    assert cal.labelled == 170 and cal.per_bin[0] == 100 and cal.per_bin[9] == 50
    # each fitted curve is where its penalised likelihood's gradient vanishes (the score equations),
    # both pulled towards the identity; and a flat prior for the passed side pulls it towards the
    # share of defects among them, (3 + 0.5) / (117 + 0.5)
    flat = (float(np.log(3.5 / 117.5)), 0.0)
    flat_cal = calibrate(t, pass_prior="flat")
    for (a, b), (a0, b0), k, n in (
        (cal.curve, (0.0, 1.0), t.net[1, :SCORE_BINS], t.net[0, :SCORE_BINS] + t.net[1, :SCORE_BINS]),
        (flat_cal.curve, flat, t.net[1, :SCORE_BINS], t.net[0, :SCORE_BINS] + t.net[1, :SCORE_BINS]),
        (cal.curve_reject, (0.0, 1.0), t.net[3, :SCORE_BINS], t.net[2, :SCORE_BINS] + t.net[3, :SCORE_BINS]),
    ):
        p = 1 / (1 + np.exp(-(a + b * BIN_LOGITS)))
        r = n * p - k
        assert abs(r.sum() + RIDGE * (a - a0)) < 1e-6 and abs((r * BIN_LOGITS).sum() + RIDGE * (b - b0)) < 1e-6
    assert cal.p_defect[0] == pytest.approx(0.02, abs=0.01) and cal.q_reject[9] == pytest.approx(0.9, abs=0.02)
    e = estimate(t, cal)
    q, qr = cal.p_defect, cal.q_reject
    escapes = 1000 * q[0] + 100 * q[3]
    assert e.escape == pytest.approx(escapes / (escapes + 200 * qr[9]))
    assert e.false_reject == pytest.approx(
        200 * (1 - qr[9]) / (200 * (1 - qr[9]) + 1000 * (1 - q[0]) + 100 * (1 - q[3]))
    )


def test_shift_and_lighting_bands() -> None:
    s = SliceSettings()
    assert shift_of(DAY0 + 5 * 3600, s) == "22-06" and shift_of(DAY0 + 6 * 3600, s) == "06-14"
    assert shift_of(DAY0 + 21.9 * 3600, s) == "14-22"
    assert shift_of(DAY0 + 5 * 3600, SliceSettings(utc_offset_h=2)) == "06-14"
    assert light_of(window(brightness=0.2, score_pass={0: 5}), s) == "dark"
    assert light_of(window(brightness=0.5, score_pass={0: 5}), s) == "normal"
    assert light_of(window(score_pass={0: 5}), s) == "unmeasured"
    for bad in ({"shifts": (6, 25)}, {"light_edges": (0.7, 0.3)}, {"alpha": 0.0}):
        with pytest.raises(ValueError):
            SliceSettings(**bad)


def test_two_proportion_test_matches_a_hand_computation() -> None:
    # 20/100 vs 15/300: p = 35/400, se = sqrt(p(1-p)(1/100 + 1/300)), z = 0.15 / se
    p = 35 / 400
    z_hand = 0.15 / np.sqrt(p * (1 - p) * (1 / 100 + 1 / 300))
    z, pv = two_proportion(20, 100, 15, 300)
    assert z == pytest.approx(z_hand) and pv < 1e-5


def _lines(bad_escapes: int, bad_n: int) -> list[TelemetryWindow]:
    out = []
    for i, dev in enumerate(("a" * 32, "b" * 32, "c" * 32)):
        esc, n = (bad_escapes, bad_n) if i == 0 else (5, 100)
        fb = cells(pass_defect={0: esc}, reject_defect={9: n - esc}, pass_ok={0: 200})
        out.append(window(device=dev, feedback=[(1, fb, None)], score_pass={0: 1000}, score_reject={9: 100}))
    return out


def test_a_slice_significantly_worse_is_named_and_a_small_one_is_not() -> None:
    report = build_field_report(_lines(25, 100), "plates")
    [alert] = report.slice_alerts
    assert (alert.scope, alert.value, alert.rate) == ("line", "a" * 12, "escape")
    assert (alert.events, alert.n, alert.rest_events, alert.rest_n) == (25, 100, 10, 200)
    assert alert.p_value < alert.level == pytest.approx(0.01 / 3)
    assert "field escape 25.00% (25/100) vs 5.00% on the others (10/200)" in alert.text()
    # the same share on 10 parts: too few to say
    assert build_field_report(_lines(3, 10), "plates").slice_alerts == []
    # not worse, only different by chance: 7/100 vs 5/100
    assert build_field_report(_lines(7, 100), "plates").slice_alerts == []


def test_feedback_counts_for_the_version_it_names() -> None:
    # v2 serves; its windows carry late feedback on v1's verdicts
    w = window(version=2, score_pass={0: 50}, feedback=[(1, cells(pass_defect={0: 4}, reject_defect={9: 36}), None)])
    report = build_field_report([w], "plates", scopes=("version",))
    v1, v2 = report.row(1), report.row(2)
    assert v1 is not None and v2 is not None
    assert (v1.totals.frames, v1.escape.events, v1.escape.n) == (0, 4, 40)
    assert (v2.totals.frames, v2.escape.status) == (50, "none")
    assert [c[0] for c in table_rows(report)] == ["v1", "v2"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_report_reads_the_store(backend: str, tmp_path: Path) -> None:
    with opened(store_url(backend, tmp_path)) as store:
        ws = _lines(25, 100)
        store.add_many(ws)
        store.add_many([window(model="other", feedback=[(1, cells(pass_defect={0: 9}), None)])])
        report = field_report(store, "plates", FieldSettings(escape_limit=0.05))
        row = report.row(1)
        assert row is not None and (row.escape.events, row.escape.n) == (35, 300)
        assert row.totals.windows == 3 and row.totals.frames == 3300
        assert row.estimate is not None and row.estimate.calibrated_on == 900
        assert [a.value for a in report.slice_alerts] == ["a" * 12]
        assert report.to_dict()["rows"][0]["escape"]["events"] == 35
        assert field_report(store, "plates", version=7).rows == []


def test_a_reference_period_calibrates_the_estimates(tmp_path: Path) -> None:
    with opened(store_url("sqlite", tmp_path)) as store:
        early = cells(pass_ok={0: 90}, pass_defect={0: 10}, reject_defect={9: 40})
        late = cells(pass_ok={0: 5}, reject_ok={9: 20})
        store.add(window(start=DAY0, score_pass={0: 500}, score_reject={9: 50}, feedback=[(1, early, None)]))
        store.add(window(start=DAY0 + 7200, score_pass={0: 500}, score_reject={9: 50}, feedback=[(1, late, None)]))
        whole = field_report(store, "plates", scopes=("version",))
        ref = field_report(store, "plates", scopes=("version",), since=DAY0 + 3600, reference_until=DAY0 + 3600)
        assert whole.calibrations[1].labelled == 165 and ref.calibrations[1].labelled == 140
        row = ref.row(1)
        assert row is not None and row.totals.windows == 1 and row.estimate is not None
        assert row.estimate.calibrated_on == 140


def test_feedback_on_rejects_only_is_called_out() -> None:
    # 1000 passed, 100 rejected; the operator checked 50 rejects and no passed part
    only_rejects = window(
        score_pass={0: 1000}, score_reject={9: 100}, feedback=[(1, cells(reject_defect={9: 50}), None)]
    )
    t = _totals(only_rejects)
    assert t.side_shares() == (0.0, 0.5)
    warning = t.sampling_warning()
    assert warning is not None and "0.0% of passed parts, 50.0% of rejected parts" in warning
    random = cells(pass_ok={0: 48}, pass_defect={0: 2}, reject_defect={9: 5})
    assert (
        _totals(window(score_pass={0: 1000}, score_reject={9: 100}, feedback=[(1, random, None)])).sampling_warning()
        is None
    )


def test_the_estimate_is_checked_against_the_feedback_where_both_exist() -> None:
    # 10% of the passed and of the rejected parts got feedback: 10 escapes of 38 defects
    fb = cells(pass_ok={0: 290}, pass_defect={0: 10}, reject_ok={9: 2}, reject_defect={9: 28})
    row = build_field_report(
        [window(score_pass={0: 3000}, score_reject={9: 300}, feedback=[(1, fb, None)])], "plates"
    ).row(1)
    assert row is not None and row.estimate is not None and row.escape.status == "measured"
    assert row.agreement()["escape"] is (row.escape.low <= row.estimate.escape <= row.escape.high)  # type: ignore[operator]
    assert row.agreement()["escape"] is True
    # feedback three times as often on rejects: the measured rate leans on them, the estimate does not
    skewed = cells(pass_ok={0: 290}, pass_defect={0: 10}, reject_ok={9: 6}, reject_defect={9: 84})
    row2 = build_field_report(
        [window(score_pass={0: 3000}, score_reject={9: 300}, feedback=[(1, skewed, None)])], "plates"
    ).row(1)
    assert row2 is not None and row2.agreement()["escape"] is False
    nothing = build_field_report([window(score_pass={0: 50})], "plates").row(1)
    assert nothing is not None and nothing.agreement() == {"escape": None, "false_reject": None}


def _noised(w: TelemetryWindow, b: float) -> TelemetryWindow:
    assert w.field_metrics is not None
    return w.model_copy(update={"field_metrics": w.field_metrics.model_copy(update={"noise_scale": b})})


def test_slices_leave_out_rates_the_noise_swamps_and_count_the_noise_of_the_rest() -> None:
    # 25/100 against 10/200 is worse without noise (above); at b = 3 per cell the 100 parts' rate has a
    # noise s.d. of about 20 pp: it is not stated, and not compared
    noisy = build_field_report([_noised(w, 3.0) for w in _lines(25, 100)], "plates")
    assert {r.escape.status for r in noisy.rows if r.scope == "line"} == {"noisy"}
    assert noisy.slice_alerts == []
    # the noise variance enters the test: the same z with and without, then with noise smaller
    z, p = two_proportion(25, 100, 10, 200)
    z2, p2 = two_proportion(25, 100, 10, 200, (0.002, 0.001))
    assert z2 < z and p2 > p
