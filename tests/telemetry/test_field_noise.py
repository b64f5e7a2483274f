"""Field metrics under Laplace noise: the device sends the noised counts signed (not clipped at 0),
the wire takes them within bounds and refuses hostile ones, and the cloud's sums over many windows
are unbiased against the true counts, where clipping each window's cells at 0 was not."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pydantic import ValidationError

from cloud_registry.telemetry.field_estimate import BIN_LOGITS, calibrate, noise_weights
from cloud_registry.telemetry.field_rates import MAX_NOISE_SD, FieldTotals, measured, rate
from converters.operating_point import clopper_pearson
from edge_agent.telemetry.field import CELLS, FieldTally
from edge_agent.telemetry.privacy import LaplaceNoise
from edge_agent.telemetry.windows import ModelKey, RawWindow
from edgeline.core.errors import ProtocolError
from edgeline.core.protocol.field_window import NOISE_TAIL, SCORE_BINS, FieldMetrics
from edgeline.core.protocol.telemetry import parse_window
from tests.telemetry.field_helpers import cells, window

#: windows summed; epsilon of the noise (scale b = 12 / 4 = 3 per count)
WINDOWS = 2000
EPSILON = 4.0
#: true feedback of one window: 11 parts, most of the 42 cells 0 (as at 5% feedback on 200 parts)
TRUE = {"pass_ok": (0, 7), "pass_defect": (1, 1), "reject_ok": (6, 1), "reject_defect": (9, 2)}
_ROW = {"pass_ok": 0, "pass_defect": 1, "reject_ok": 2, "reject_defect": 3}


def _tally() -> FieldTally:
    t = FieldTally()
    t.score_pass[0], t.score_reject[9] = 150, 40
    a = np.zeros((2, CELLS), np.int64)
    for name, (b, n) in TRUE.items():
        a[0, _ROW[name] * SCORE_BINS + b] = n
    t.feedback[("plates", 1)] = a
    return t


def _reports(noisy_of: str) -> list[FieldTotals]:
    """The cloud's totals of WINDOWS noised windows (each through the wire schema), in reports of 3
    windows (the benchmark's look-back)."""
    noise = LaplaceNoise(EPSILON, rng=np.random.default_rng(20261203))
    fn = noise.signed if noisy_of == "signed" else noise._noisy  # _noisy: rounded and clipped at 0
    reports: list[FieldTotals] = []
    for i in range(WINDOWS):
        if i % 3 == 0:
            reports.append(FieldTotals())
        fm = FieldMetrics.model_validate(_tally().noised(fn, noise.scale).wire().model_dump())
        reports[-1].add_served(190, fm, 0)
        for fv in fm.feedback:
            reports[-1].add_feedback(fv.added, fv.retracted, fm.feedback_gap, fm.noise_scale)
    return reports


def test_the_sum_of_many_noisy_windows_is_unbiased_and_the_clipped_sum_is_not() -> None:
    signed, clipped = _reports("signed"), _reports("clipped")
    total = signed[0]
    for t in signed[1:]:
        total = total.merge(t)
    for name, row in _ROW.items():
        true = TRUE[name][1] * WINDOWS
        # tolerance: 4 standard deviations of the sum's noise: 10 bins x WINDOWS x 1 block (the net
        # cells: no retracted block under noise) of Laplace(3) draws, variance 2 x 3**2 each
        sd = math.sqrt(float(total.noise_var[row, :SCORE_BINS].sum()))
        assert sd == pytest.approx(math.sqrt(10 * WINDOWS * 2 * 3.0**2))
        assert abs(total.counts()[name] - true) < 4 * sd, name
        assert abs(sum(t.counts()[name] for t in signed) - true) < 4 * sd, name  # the same, report by report
        # before: each window's cells clipped at 0 on the device, and each report's sums clipped per cell
        # (``net``): ~21-38 parts per report and row that were never there (true 3-21), > 10 sd in all
        old = sum(int(t.net[row, :SCORE_BINS].sum()) for t in clipped)
        assert old - true > 10 * sd, name
    assert abs(int(total.score_pass.sum()) - 150 * WINDOWS) < 4 * math.sqrt(10 * WINDOWS * 18.0)
    # the rates over all windows: true escape 1/3, false reject 1/8, within the stated noise
    esc, fr = measured(total)
    assert esc.value is not None and fr.value is not None
    assert abs(esc.value - 1 / 3) < 3 * esc.noise_sd and esc.low < 1 / 3 < esc.high
    assert abs(fr.value - 1 / 8) < 3 * fr.noise_sd and fr.low < 1 / 8 < fr.high


def test_the_device_sends_signed_counts_and_says_how_noisy_they_are() -> None:
    noise = LaplaceNoise(EPSILON, rng=np.random.default_rng(3))
    raw = RawWindow(ModelKey("plates", 1, "a" * 64), 0.0, 1.0, frames=190, field_metrics=_tally())
    out = noise.apply(raw)
    fm = out.field_metrics.wire()
    assert fm.noise_scale == pytest.approx(3.0) and fm.lowest() < 0  # signed, not clipped
    assert (out.confidence >= 0).all() and out.frames >= 0  # the window's other counts stay clipped
    assert FieldTally().wire().noise_scale is None  # exact windows say so


def test_the_interval_includes_the_noise() -> None:
    w = window(feedback=[(1, cells(pass_defect={0: 6}, reject_defect={9: 54}, pass_ok={0: 300}), None)])
    exact = measured(_totals_of(w, None))[0]
    noisy = measured(_totals_of(w, 3.0))[0]
    assert (exact.events, exact.n, exact.noise_sd) == (6, 60, 0.0)
    # by hand: var(pass_defect) = 10 x 2 x 9 = 180, var(reject_defect + unknown_defect) = 11 x 18 = 198,
    # sd = sqrt(0.9**2 * 180 + 0.1**2 * 198) / 60
    sd = math.sqrt(0.81 * 180 + 0.01 * 198) / 60
    assert noisy.noise_sd == pytest.approx(sd)
    lo, hi = clopper_pearson(6, 60)
    assert noisy.low == pytest.approx(max(0.0, 0.1 - math.hypot(0.1 - lo, 1.959964 * sd)), abs=1e-6)
    assert noisy.high == pytest.approx(0.1 + math.hypot(hi - 0.1, 1.959964 * sd), abs=1e-6)
    # the noise alone is 20 pp (above MAX_NOISE_SD): no figure, too little feedback to tell
    assert noisy.status == "noisy" and noisy.noise_sd > MAX_NOISE_SD
    assert noisy.text().startswith("too little feedback to tell (noise)") and "10.00%" not in noisy.text()
    assert "noise" not in exact.text()
    # a hundred times the parts: the same noise is 0.2 pp of the rate, the figure is stated with it
    many = measured(
        _totals_of(window(feedback=[(1, cells(pass_defect={0: 600}, reject_defect={9: 5400}), None)]), 3.0)
    )[0]
    assert many.status == "measured" and "noise sd" in many.text() and many.text().startswith("10.00%")
    # clipping: a noised sum with more events than parts, or fewer than none
    assert (rate("escape", 9, 5).events, rate("escape", -3, 5).events, rate("escape", 2, -4).status) == (5, 0, "none")


def _totals_of(w: object, scale: float | None) -> FieldTotals:
    t = FieldTotals()
    fm = w.field_metrics  # type: ignore[attr-defined]
    for fv in fm.feedback:
        t.add_feedback(fv.added, fv.retracted, False, scale)
    return t


def _body(**fm: object) -> dict[str, object]:
    body = json.loads(window(feedback=[(1, cells(pass_ok={0: 3}), None)]).encode())
    body["field_metrics"] |= fm
    return body


def test_the_wire_takes_signed_counts_within_bounds_and_refuses_hostile_ones() -> None:
    low = [-(NOISE_TAIL * 3)] + [0] * (SCORE_BINS - 1)
    assert parse_window(_body(noise_scale=3.0, score_pass=low)).field_metrics.lowest() == -120  # type: ignore[union-attr]
    cases = {
        "negative without noise_scale": _body(score_pass=[-1] + [0] * (SCORE_BINS - 1)),
        "below -40 x noise_scale": _body(noise_scale=3.0, score_pass=[-121] + [0] * (SCORE_BINS - 1)),
        "less than or equal to 1000000000": _body(noise_scale=3.0, score_pass=[10**12] + [0] * (SCORE_BINS - 1)),
        "greater than or equal to -1000000000": _body(noise_scale=1e7, score_pass=[-(10**12)] + [0] * 9),
        "noise_scale": _body(noise_scale=0.0),
        "integer": _body(noise_scale=3.0, score_pass=[2.5] + [0] * (SCORE_BINS - 1)),
    }
    for why, body in cases.items():
        with pytest.raises(ProtocolError, match=why):
            parse_window(body)
    raw = json.dumps(_body(noise_scale=3.0)).replace('"noise_scale": 3.0', '"noise_scale": NaN')
    with pytest.raises(ProtocolError):
        parse_window(raw.encode())
    with pytest.raises(ValidationError, match="noise_scale"):
        FieldMetrics(score_pass=[0] * SCORE_BINS, score_reject=[0] * SCORE_BINS, noise_scale=float("nan"))


def test_weighing_the_bins_by_their_noise_calibrates_closer_to_the_truth() -> None:
    # 1,400 labelled passed parts over the bins, the truth sigmoid(0.7 + logit(score)) (not the prior
    # identity); each cell sums 48 Laplace(3) draws (24 windows, added and retracted blocks)
    n = np.array([900, 150, 60, 30, 20, 20, 30, 40, 60, 90])
    q = 1 / (1 + np.exp(-(0.7 + BIN_LOGITS)))
    rng = np.random.default_rng(1)
    err_signed, err_weighted = [], []
    for _ in range(40):
        t = FieldTotals()
        d = rng.binomial(n, q)
        noise = rng.laplace(0, 3.0, size=(2, SCORE_BINS, 48)).sum(-1)
        t.cells[1, :SCORE_BINS], t.cells[0, :SCORE_BINS] = np.rint(d + noise[1]), np.rint(n - d + noise[0])
        plain = calibrate(t)  # the signed counts taken at face value
        t.noise_var[:2, :SCORE_BINS] = 48 * 2 * 3.0**2
        weighted = calibrate(t)
        err_signed.append(float(np.abs(plain.p_defect - q) @ n) / n.sum())
        err_weighted.append(float(np.abs(weighted.p_defect - q) @ n) / n.sum())
    # measured: about 0.08 and 0.045 (mean absolute error of P(defect | bin), weighted by parts)
    assert np.mean(err_weighted) < 0.7 * np.mean(err_signed)
    exact = noise_weights(np.zeros(SCORE_BINS), n.astype(float), None, (0.0, 1.0))
    assert exact.tolist() == [1.0] * SCORE_BINS  # exact counts are taken whole


def _blocks(t: FieldTally, seed: int) -> list[tuple[str, int, bool]]:
    """(model, version, has a retracted block) of a tally noised as the device noises a window."""
    noise = LaplaceNoise(EPSILON, rng=np.random.default_rng(seed))
    raw = RawWindow(ModelKey("plates", 2, "a" * 64), 0.0, 1.0, frames=190, field_metrics=t)
    fm = FieldMetrics.model_validate(noise.apply(raw).field_metrics.wire().model_dump())
    return [(fv.model, fv.version, fv.retracted is not None) for fv in fm.feedback]


def test_which_blocks_a_noised_window_carries_does_not_depend_on_the_feedback(caplog: pytest.LogCaptureFixture) -> None:
    """Without feedback, with feedback, with a replaced (retracted) feedback, with feedback on an older
    version only: the same single block, the window's own version's, and never a retracted block."""
    none = FieldTally()
    given = FieldTally()
    given.feedback[("plates", 2)] = np.zeros((2, CELLS), np.int64)
    given.feedback[("plates", 2)][0, 3] = 4
    replaced = FieldTally()
    replaced.feedback[("plates", 2)] = np.zeros((2, CELLS), np.int64)
    replaced.feedback[("plates", 2)][0, [3, 25]] = 1  # the new truth's cell, and the old one retracted
    replaced.feedback[("plates", 2)][1, 3] = 1
    older = FieldTally()
    older.feedback[("plates", 1)] = np.zeros((2, CELLS), np.int64)
    older.feedback[("plates", 1)][0, 3] = 2
    for seed in range(20):
        assert {tuple(_blocks(t, seed)) for t in (none, given, replaced, older)} == {(("plates", 2, False),)}
    assert "feedback on plates v1 in a noised window of plates v2: not sent" in caplog.text
    # without noise the blocks are as before: only versions with feedback, retracted when there is some
    assert given.wire().feedback[0].retracted is None and none.wire().feedback == []
    assert replaced.wire().feedback[0].retracted is not None


def test_the_net_cells_travel_once_so_the_noise_variance_is_one_blocks() -> None:
    """A replaced feedback nets to one part in the new cell: the noised net sums over many windows are
    unbiased with the variance of one noised block per window (2 b**2 per cell), as the cloud counts."""
    t = FieldTally()
    a = np.zeros((2, CELLS), np.int64)
    a[0, 0], a[0, SCORE_BINS + 0], a[1, 0] = 3, 1, 1  # 3 given ok, one of them replaced by defect
    t.feedback[("plates", 1)] = a
    noise = LaplaceNoise(EPSILON, rng=np.random.default_rng(11))
    total = FieldTotals()
    n = 1500
    for _ in range(n):
        fm = t.noised(noise.signed, noise.scale, ("plates", 1)).wire()
        [fv] = fm.feedback
        assert fv.retracted is None
        total.add_feedback(fv.added, fv.retracted, False, fm.noise_scale)
    sd = math.sqrt(n * 2 * noise.scale**2)
    assert float(total.noise_var[0, 0]) == pytest.approx(sd**2)
    assert abs(total.counts()["pass_ok"] - 2 * n) < 4 * math.sqrt(SCORE_BINS) * sd
    assert abs(int(total.cells[1, 0]) - n) < 4 * sd and abs(int(total.cells[0, 0]) - 2 * n) < 4 * sd
