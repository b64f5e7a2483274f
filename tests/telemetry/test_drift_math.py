"""PSI, calibration and episodes: pure numpy, checked against simulation and known answers."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.preprocessing import stat_edges
from edge_agent.telemetry.drift import (
    Calibrator,
    DriftError,
    Sustained,
    emd,
    hist_mean_std,
    histogram_of,
    psi,
    rebin,
    reference_histogram,
)


def test_psi_is_zero_for_identical_and_grows_with_shift() -> None:
    ref = np.array([0.1, 0.2, 0.4, 0.2, 0.1])
    assert psi(ref, ref * 10_000) == pytest.approx(0.0, abs=1e-3)
    small = psi(ref, [1500, 2500, 3500, 1500, 1000])
    big = psi(ref, [4000, 3000, 2000, 700, 300])
    assert 0 < small < big
    assert psi(ref, [0, 0, 0, 0, 0]) == 0.0


def test_psi_rejects_bad_input() -> None:
    with pytest.raises(DriftError):
        psi([0.5, 0.5], [1, 2, 3])
    with pytest.raises(DriftError):
        psi([0.5, 0.5], [1, -2])
    with pytest.raises(DriftError):
        psi([0.0, 0.0], [1, 2])
    with pytest.raises(DriftError):
        psi([np.nan, 1.0], [1, 2])


def test_rebin_preserves_mass_and_shape() -> None:
    src_edges = np.linspace(0, 1, 5)
    out = rebin(src_edges, [0.25, 0.25, 0.25, 0.25], np.linspace(0, 1, 11))
    assert out.sum() == pytest.approx(1.0)
    assert np.allclose(out, 0.1)
    coarse = rebin(np.linspace(0, 1, 11), [0.1] * 10, np.linspace(0, 1, 3))
    assert np.allclose(coarse, 0.5)


def test_emd_and_mean_read_the_shift_in_the_statistic_units() -> None:
    edges = stat_edges("brightness")
    rng = np.random.default_rng(0)
    ref_vals = rng.normal(0.6, 0.03, 5000)
    ref = np.array(reference_histogram(ref_vals, edges).freqs)
    field = histogram_of(rng.normal(0.4, 0.03, 500), edges)
    assert emd(ref, field, edges) == pytest.approx(0.2, abs=0.03)
    mean, std = hist_mean_std(field, edges)
    assert mean == pytest.approx(0.4, abs=0.02)
    assert std < 0.06


def test_calibrated_threshold_holds_its_false_alarm_rate_and_fixed_025_does_not() -> None:
    """Windows drawn from the reference itself: the fixed 0.25 rule fires on most 30-frame windows,
    the calibrated threshold on at most about its 0.5% quantile."""
    rng = np.random.default_rng(7)
    p = np.array(reference_histogram(rng.normal(0.5, 0.08, 3000), stat_edges("brightness")).freqs)
    cal = Calibrator()
    n = 30
    windows = rng.multinomial(n, p, size=2000)
    scores = np.array([psi(p, w) for w in windows])
    thr = cal.threshold(p, n)
    assert np.mean(scores > 0.25) > 0.3
    assert np.mean(scores > thr) < 0.01
    # larger windows get lower thresholds, never below the floor
    assert cal.threshold(p, 3000) < thr
    assert cal.threshold(p, 100_000) == pytest.approx(cal.floor)


def test_calibration_is_deterministic_and_cached() -> None:
    p = np.array([0.1, 0.2, 0.3, 0.4])
    a, b = Calibrator(), Calibrator()
    assert a.threshold(p, 50) == b.threshold(p, 50)
    assert a.threshold(p, 51) == a.threshold(p, 50)  # same bucket
    assert len(a._cache) == 1


def test_sustained_fires_once_per_episode() -> None:
    rule = Sustained(need=3, of=4, clear=3)
    seq = [True, False, True, True, True, True, True, False, False, False, True, False]
    out = [rule.update(x) for x in seq]
    assert out.count("start") == 1
    assert out.count("end") == 1
    assert out.index("start") == 3
    assert out.index("end") == 9
    # a new episode after the end (the True at index 10 still counts towards it)
    assert [rule.update(True) for _ in range(3)] == [None, "start", None]


def test_sustained_state_round_trip() -> None:
    a = Sustained()
    for x in (True, True, True):
        a.update(x)
    b = Sustained()
    b.restore(a.state())
    assert b.active
    assert b.update(True) is None
    with pytest.raises(DriftError):
        Sustained(need=5, of=4)
