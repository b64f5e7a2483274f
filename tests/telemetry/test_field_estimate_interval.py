"""The estimate without labels has a 95% interval (the parts' own chance, the calibration's
uncertainty, the histograms' noise), and the alerts open on an estimate only when that interval
excludes the limit."""

from __future__ import annotations

import numpy as np
import pytest

from cloud_registry.telemetry.field_alerts import crossing
from cloud_registry.telemetry.field_estimate import BIN_MIDS, calibrate, estimate
from cloud_registry.telemetry.field_rates import MAX_NOISE_SD, FieldTotals, rate
from edgeline.core.protocol.field_window import SCORE_BINS

#: P(defective | defect-score bin) of the simulated line: calibrated scores, a little overconfident
Q = np.clip(BIN_MIDS**1.3, 0.0, 1.0)
#: the share of parts in each score bin
MIX = np.array([0.50, 0.14, 0.07, 0.04, 0.03, 0.03, 0.04, 0.05, 0.04, 0.06])


def _line(rng: np.random.Generator, parts: int, share: float) -> tuple[FieldTotals, float, float]:
    """One stretch of the line: its histograms, feedback on a random ``share`` of its parts, and its
    true escape and false-reject rates (passed: bins 0-4, rejected: 5-9)."""
    t = FieldTotals()
    per_bin = rng.multinomial(parts, MIX)
    defects = rng.binomial(per_bin, Q)
    checked = rng.binomial(per_bin, share)
    checked_bad = rng.hypergeometric(defects, per_bin - defects, checked)
    half = SCORE_BINS // 2
    t.score_pass[:half], t.score_reject[half:] = per_bin[:half], per_bin[half:]
    t.cells[0, :half], t.cells[1, :half] = (checked - checked_bad)[:half], checked_bad[:half]
    t.cells[2, :SCORE_BINS][half:], t.cells[3, :SCORE_BINS][half:] = (checked - checked_bad)[half:], checked_bad[half:]
    t.frames = parts
    escapes, caught = defects[:half].sum(), defects[half:].sum()
    false_rejects, good_passed = (per_bin - defects)[half:].sum(), (per_bin - defects)[:half].sum()
    return t, escapes / (escapes + caught), false_rejects / (false_rejects + good_passed)


def test_the_interval_holds_the_true_rate_of_the_parts_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(20261204)
    covered = {"escape": 0, "false_reject": 0}
    trials = 300
    for _ in range(trials):
        reference, _, _ = _line(rng, 4000, 0.05)  # a reference period's feedback calibrates
        report, te, tf = _line(rng, 600, 0.05)
        e = estimate(report, calibrate(reference))
        for name, truth in (("escape", te), ("false_reject", tf)):
            lo, hi = e.interval(name) or (1.0, 0.0)
            covered[name] += lo <= truth <= hi
    for name, n in covered.items():
        assert 0.88 <= n / trials <= 1.0, (name, n / trials)


def test_more_feedback_narrows_the_interval() -> None:
    rng = np.random.default_rng(5)
    widths = []
    for share in (0.02, 0.2):
        ref, _, _ = _line(rng, 4000, share)
        rep, _, _ = _line(rng, 600, share)
        lo, hi = estimate(rep, calibrate(ref)).interval("escape") or (0.0, 0.0)
        widths.append(hi - lo)
    assert widths[1] < 0.7 * widths[0]


def test_an_estimate_the_noise_swamps_is_not_stated() -> None:
    rng = np.random.default_rng(9)
    ref, _, _ = _line(rng, 4000, 0.05)
    rep, _, _ = _line(rng, 600, 0.05)
    cal = calibrate(ref)
    exact = estimate(rep, cal)
    assert exact.status("escape") == "stated" and exact.escape_noise_sd == 0.0
    rep.hist_var = 3 * 2 * 3.0**2 * 40  # three windows' Laplace noise at a large scale, per bin
    noisy = estimate(rep, cal)
    assert noisy.escape_noise_sd > MAX_NOISE_SD and noisy.status("escape") == "noisy"
    assert noisy.text("escape").startswith("too little feedback to tell (noise)")
    assert "%" not in noisy.text("escape").split("s.d.")[0]  # no figure before the noise's size
    assert noisy.to_dict()["escape_status"] == "noisy"


def test_an_alert_opens_on_an_estimate_only_when_its_interval_excludes_the_limit() -> None:
    none = rate("escape", 0, 0)  # no feedback at all
    limit = 0.078
    # line-1 of the benchmark: an estimate above the limit whose interval reaches below it
    assert crossing(none, 0.087, 600, limit, 200, 0.8, (0.04, 0.13)) == (None, "undecided")
    assert crossing(none, 0.15, 600, limit, 200, 0.8, (0.09, 0.21)) == (True, "estimated")
    # an estimate the noise makes unusable is no evidence at all, however high
    assert crossing(none, 0.40, 600, limit, 200, 0.8, (0.30, 0.50), stated=False) == (None, "no evidence")
    # closing still follows the hysteresis on the estimate's value
    assert crossing(none, 0.05, 600, limit, 200, 0.8, (0.0, 0.12)) == (False, "below")
    # a measured rate below the limit overrules an estimate above it
    low = rate("escape", 1, 400)
    assert low.status == "measured" and low.high < limit
    assert crossing(low, 0.15, 600, limit, 200, 0.8, (0.09, 0.21)) == (False, "below")


def test_the_calibration_carries_its_covariance() -> None:
    rng = np.random.default_rng(3)
    few, _, _ = _line(rng, 400, 0.05)
    many, _, _ = _line(rng, 40000, 0.05)
    c_few, c_many = calibrate(few), calibrate(many)
    assert c_few.cov_pass is not None and c_many.cov_pass is not None
    assert np.trace(c_many.cov_pass) < 0.5 * np.trace(c_few.cov_pass)
    # no feedback at all: the ridge's own (identity / ridge)
    empty = calibrate(FieldTotals())
    assert empty.cov_pass == pytest.approx(np.eye(2)) and not empty.noised
