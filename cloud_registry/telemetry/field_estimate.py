"""Field escape and false-reject rates estimated without labels, pure (no I/O): the idea of
confidence-based performance estimation (CBPE), on the aggregates a window carries.

A window has the defect-score histograms of the verdicts that passed and that rejected parts
(``field_metrics.score_pass`` / ``score_reject``) and the count of ``unknown`` verdicts. Given
``q[b]`` = P(part defective | defect score in bin b), the expected confusion matrix of any set of
windows is::

    expected escapes         = sum_b pass[b] * q_pass[b]
    expected caught defects  = sum_b reject[b] * q_reject[b] + unknown * q_unknown
    expected false rejects   = sum_b reject[b] * (1 - q_reject[b]) + unknown * (1 - q_unknown)
    expected good passed     = sum_b pass[b] * (1 - q_pass[b])

and the estimates are escapes / defects and false rejects / good parts. :func:`calibrate` learns
``q`` from the operator feedback of a model version (the feedback cells are binned by the same
defect score), as CBPE calibrates scores on a labelled reference set: per side (passed, rejected:
the defect score of an ``ok`` verdict and of a ``defect`` verdict are not the same quantity for a
classifier without an operating point), a logistic curve in the logit of the bin's score (Platt
scaling: two parameters, fitted to the binned counts by Newton's method with a ridge towards a prior
curve, so a handful of parts cannot make it infinitely steep). The prior curve is the identity
(the scores at face value, CBPE's own starting point), which the feedback then bends; ``flat`` (the
share of defects among the side's parts with feedback, whatever their score) and ``select`` (the
better of the two in penalised likelihood) are the alternatives measured in bench/bench_field.py,
where with 5% feedback a flat passed side could not follow a darkened line's escapes. Two
parameters are what sparse feedback supports: a free value per bin would rest on a few parts. The
estimate then holds for windows, lines and slices with little or no feedback of their own. Its
assumptions are stated in docs/drift.md.

Under Laplace noise the feedback cells are signed sums (``field_metrics.noise_scale``): the fit's
score equations are linear in the counts, so it takes them signed (unbiased in expectation), the
Newton steps weighing each bin by its count clipped at 0. A bin whose counts are mostly noise would
still pull the curve anywhere, so each bin's counts are scaled by its reliability
``info / (info + noise)`` (:func:`noise_weights`: ``info = n p (1 - p)`` the binomial information
at the prior curve's ``p``, ``noise`` the noise variance of ``d - p n``): with exact counts the
weights are 1; where noise dominates, the prior curve does. The histograms are summed signed too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from cloud_registry.telemetry.field_rates import MAX_NOISE_SD, Z95, FieldTotals
from edgeline.core.protocol.field_window import SCORE_BINS

#: pseudo-parts at 0.5 that the unknown verdicts' share of defects starts from
PRIOR_WEIGHT = 2.0
#: weight of the ridge that pulls a calibration curve towards its prior curve
RIDGE = 1.0
#: the score of a bin when nothing else is known: its middle
BIN_MIDS = (np.arange(SCORE_BINS) + 0.5) / SCORE_BINS


@dataclass(frozen=True)
class Calibration:
    """P(defective | defect-score bin) of passed verdicts (``p_defect``) and of rejected ones
    (``p_defect_reject``; the same as ``p_defect`` when not given), and of ``unknown`` verdicts;
    ``labelled``: parts with feedback it was learned from (per bin in ``per_bin``)."""

    p_defect: np.ndarray
    p_unknown: float
    labelled: int
    per_bin: np.ndarray
    #: (a, b) of the passed verdicts' curve ``sigmoid(a + b * logit(score))``
    curve: tuple[float, float] = (0.0, 1.0)
    p_defect_reject: np.ndarray | None = None
    curve_reject: tuple[float, float] = (0.0, 1.0)
    #: covariance of each curve's (a, b) (the inverse of the penalised likelihood's Hessian at the
    #: fit: a Laplace approximation; with little feedback the ridge's own, ``I / ridge``), and the
    #: variance of ``p_unknown`` (its beta's)
    cov_pass: np.ndarray | None = None
    cov_reject: np.ndarray | None = None
    var_unknown: float = 0.0
    #: whether the feedback it was learned from carried Laplace noise
    noised: bool = False

    @property
    def q_reject(self) -> np.ndarray:
        return self.p_defect if self.p_defect_reject is None else self.p_defect_reject

    def to_dict(self) -> dict[str, Any]:
        return {
            "p_defect": [round(float(x), 6) for x in self.p_defect],
            "p_unknown": round(self.p_unknown, 6),
            "labelled": self.labelled,
            "per_bin": [int(x) for x in self.per_bin],
            "p_defect_reject": [round(float(x), 6) for x in self.q_reject],
            "curve": [round(self.curve[0], 6), round(self.curve[1], 6)],
            "curve_reject": [round(self.curve_reject[0], 6), round(self.curve_reject[1], 6)],
        }


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 0.01, 0.99)
    return np.asarray(np.log(q / (1 - q)))


#: the logit of each bin's score: the abscissa of the calibration curve
BIN_LOGITS = _logit(BIN_MIDS)


def platt(
    defects: np.ndarray,
    n: np.ndarray,
    ridge: float = RIDGE,
    prior: tuple[float, float] = (0.0, 1.0),
    iters: int = 100,
) -> tuple[float, float]:
    """(a, b) of ``q = sigmoid(a + b * logit(score))`` maximising the binomial likelihood of
    ``defects`` of ``n`` per bin, with the penalty ``ridge * ((a - a0)**2 + (b - b0)**2) / 2`` around
    ``prior = (a0, b0)``."""
    x = BIN_LOGITS
    a0, b0 = prior
    a, b = a0, b0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(a + b * x)))
        r = n * p - defects
        g = np.array([r.sum() + ridge * (a - a0), (r * x).sum() + ridge * (b - b0)])
        w = np.maximum(n, 0) * p * (1 - p)  # signed (noised) counts: a positive definite step
        h = np.array([[w.sum() + ridge, (w * x).sum()], [(w * x).sum(), (w * x * x).sum() + ridge]])
        step = np.clip(np.linalg.solve(h, g), -2.0, 2.0)
        a, b = a - float(step[0]), b - float(step[1])
        if float(np.abs(step).max()) < 1e-9:
            break
    return a, b


def penalised_loglik(
    defects: np.ndarray, n: np.ndarray, curve: tuple[float, float], prior: tuple[float, float], ridge: float
) -> float:
    a, b = curve
    p = np.clip(1.0 / (1.0 + np.exp(-(a + b * BIN_LOGITS))), 1e-12, 1 - 1e-12)
    ll = float((defects * np.log(p) + (n - defects) * np.log(1 - p)).sum())
    return ll - ridge * ((a - prior[0]) ** 2 + (b - prior[1]) ** 2) / 2


Prior = Literal["identity", "flat", "select"]


def _sigmoid_curve(c: tuple[float, float]) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-(c[0] + c[1] * BIN_LOGITS))))


def noise_weights(
    defects: np.ndarray, labelled: np.ndarray, noise: tuple[np.ndarray, np.ndarray] | None, centre: tuple[float, float]
) -> np.ndarray:
    """Per bin, ``info / (info + noise)``: ``info = max(n, 0) p (1 - p)`` at the curve ``centre``,
    ``noise = (1 - p)**2 var_defects + p**2 var_ok`` from ``noise = (var_ok, var_defects)`` (1 without noise)."""
    if noise is None or not (noise[0].any() or noise[1].any()):
        return np.ones_like(labelled, dtype=float)
    p = _sigmoid_curve(centre)
    info = np.maximum(labelled, 0.0) * p * (1 - p)
    var = (1 - p) ** 2 * noise[1] + p**2 * noise[0]
    total = info + var
    return np.divide(info, total, out=np.zeros_like(info, dtype=float), where=total > 0)


def _curve(
    defects: np.ndarray,
    labelled: np.ndarray,
    ridge: float,
    prior: Prior,
    noise: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Without feedback, the scores at face value (the identity). With some, the curve pulled towards
    ``prior``: ``identity`` (the scores mean what they say), ``flat`` (the share of defects among the
    parts with feedback, whatever their score: a few parts give that share, only many give the curve
    a slope), or ``select``: the better of the two in penalised likelihood. ``noise``: the noise
    variance of the ok and defect cells per bin (:func:`noise_weights`)."""
    m = max(0.0, float(labelled.sum()))
    k = min(max(0.0, float(defects.sum())), m)
    centres = [(0.0, 1.0)]
    if m > 0 and prior != "identity":
        flat = (float(np.log((k + 0.5) / (m - k + 0.5))), 0.0)
        centres = [flat] if prior == "flat" else [*centres, flat]
    fits = []
    for centre in centres:
        w = noise_weights(defects, labelled, noise, centre)
        c = platt(w * defects, w * labelled, ridge, centre)
        fits.append((penalised_loglik(w * defects, w * labelled, c, centre, ridge), c))
    best = max(fits, key=lambda f: f[0])
    a, b = best[1]
    return np.clip(1.0 / (1.0 + np.exp(-(a + b * BIN_LOGITS))), 0.0, 1.0), (a, b)


def curve_cov(labelled: np.ndarray, curve: tuple[float, float], ridge: float, weights: np.ndarray) -> np.ndarray:
    """The covariance of a curve's (a, b): the inverse of the penalised log-likelihood's Hessian at
    ``curve`` (the bins' counts weighed by ``weights``, as the fit weighed them)."""
    x = BIN_LOGITS
    p = _sigmoid_curve(curve)
    w = np.maximum(weights * labelled, 0.0) * p * (1 - p)
    h = np.array([[w.sum() + ridge, (w * x).sum()], [(w * x).sum(), (w * x * x).sum() + ridge]])
    return np.asarray(np.linalg.inv(h))


def calibrate(
    t: FieldTotals,
    ridge: float = RIDGE,
    prior_weight: float = PRIOR_WEIGHT,
    *,
    pass_prior: Prior = "identity",
    reject_prior: Prior = "identity",
) -> Calibration:
    """The calibration a version's feedback gives (see the module's docstring): one curve for the
    passed verdicts and one for the rejected (the defect score of an ``ok`` verdict and of a
    ``defect`` verdict are not the same quantity for a classifier without an operating point)."""
    n = t.cells.astype(float)  # signed under noise: the fit is linear in the counts
    v = t.noise_var[:, :SCORE_BINS]
    lab_pass, lab_rej = n[0, :SCORE_BINS] + n[1, :SCORE_BINS], n[2, :SCORE_BINS] + n[3, :SCORE_BINS]
    q_pass, c_pass = _curve(n[1, :SCORE_BINS], lab_pass, ridge, pass_prior, (v[0], v[1]))
    q_rej, c_rej = _curve(n[3, :SCORE_BINS], lab_rej, ridge, reject_prior, (v[2], v[3]))
    w_pass = noise_weights(n[1, :SCORE_BINS], lab_pass, (v[0], v[1]), c_pass)
    w_rej = noise_weights(n[3, :SCORE_BINS], lab_rej, (v[2], v[3]), c_rej)
    u_ok = max(0.0, n[2, SCORE_BINS])
    u_def = max(0.0, n[3, SCORE_BINS])
    q_u = (u_def + prior_weight * 0.5) / (u_def + u_ok + prior_weight)
    var_u = q_u * (1 - q_u) / (u_def + u_ok + prior_weight + 1)
    per_bin = np.maximum(n[:, :SCORE_BINS].sum(axis=0), 0).astype(np.int64)
    total = max(0, int(n.sum()))
    return Calibration(
        q_pass,
        float(q_u),
        total,
        per_bin,
        c_pass,
        q_rej,
        c_rej,
        cov_pass=curve_cov(lab_pass, c_pass, ridge, w_pass),
        cov_reject=curve_cov(lab_rej, c_rej, ridge, w_rej),
        var_unknown=float(var_u),
        noised=bool(t.noise_var.any()),
    )


@dataclass(frozen=True)
class Estimate:
    """Expected field rates of a set of windows, from their histograms and a calibration, each with
    its standard deviation (:func:`estimate`) and whether it is stated (``status``)."""

    escape: float | None
    false_reject: float | None
    expected_defects: float
    expected_good: float
    #: verdicts the estimate is computed from (passed + rejected + unknown)
    verdicts: int
    #: parts with feedback behind the calibration
    calibrated_on: int
    #: standard deviation of each estimate: which parts of the windows are defective given the
    #: calibration (binomial), the calibration's own uncertainty, and the histograms' Laplace noise
    escape_sd: float = 0.0
    false_reject_sd: float = 0.0
    #: the part of each standard deviation that the Laplace noise brings (0 for exact counts)
    escape_noise_sd: float = 0.0
    false_reject_noise_sd: float = 0.0

    def sd(self, name: str) -> float:
        return self.escape_sd if name == "escape" else self.false_reject_sd

    def interval(self, name: str) -> tuple[float, float] | None:
        """The 95% interval of one estimate (normal, clipped into [0, 1]); None without an estimate."""
        value = self.escape if name == "escape" else self.false_reject
        if value is None:
            return None
        half = Z95 * self.sd(name)
        return max(0.0, value - half), min(1.0, value + half)

    def status(self, name: str) -> str:
        """``stated``, ``noisy`` (its noise alone above :data:`.field_rates.MAX_NOISE_SD`: too little
        feedback to tell, for the noise) or ``none``."""
        value = self.escape if name == "escape" else self.false_reject
        if value is None:
            return "none"
        noise = self.escape_noise_sd if name == "escape" else self.false_reject_noise_sd
        return "noisy" if noise > MAX_NOISE_SD else "stated"

    def text(self, name: str) -> str:
        value = self.escape if name == "escape" else self.false_reject
        st = self.status(name)
        if st == "none" or value is None:
            return "-"
        if st == "noisy":
            noise = self.escape_noise_sd if name == "escape" else self.false_reject_noise_sd
            return f"too little feedback to tell (noise): the noise alone s.d. {100 * noise:.0f} pp"
        lo, hi = self.interval(name) or (0.0, 1.0)
        return f"{100 * value:.2f}% [{100 * lo:.2f}-{100 * hi:.2f}%]"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "escape": self.escape,
            "false_reject": self.false_reject,
            "expected_defects": round(self.expected_defects, 3),
            "expected_good": round(self.expected_good, 3),
            "verdicts": self.verdicts,
            "calibrated_on": self.calibrated_on,
        }
        for name in ("escape", "false_reject"):
            iv = self.interval(name)
            out[f"{name}_sd"] = round(self.sd(name), 6)
            out[f"{name}_ci95"] = None if iv is None else [round(iv[0], 6), round(iv[1], 6)]
            out[f"{name}_status"] = self.status(name)
            out[f"{name}_text"] = self.text(name)
        return out


def _rates(
    passed: np.ndarray, rejected: np.ndarray, unknown: float, q: np.ndarray, qr: np.ndarray, qu: float
) -> tuple[float, float, float, float, float, float]:
    """(escapes, caught, false rejects, good passed, defects, good) expected."""
    escapes = float(passed @ q)
    caught = float(rejected @ qr) + unknown * qu
    false_rejects = float(rejected @ (1 - qr)) + unknown * (1 - qu)
    good_passed = float(passed @ (1 - q))
    return escapes, caught, false_rejects, good_passed, escapes + caught, false_rejects + good_passed


def _ratio(num: float, den: float) -> float | None:
    return min(1.0, max(0.0, num / den)) if den > 0 else None  # signed sums under noise


def _calibration_var(t: FieldTotals, cal: Calibration) -> tuple[float, float]:
    """The variance the calibration's uncertainty gives each estimate (delta method, by finite
    differences over the two curves' parameters and ``p_unknown``)."""
    if cal.cov_pass is None or cal.cov_reject is None:
        return 0.0, 0.0
    passed, rejected, unknown = t.score_pass.astype(float), t.score_reject.astype(float), float(t.unknown)
    params = np.array([*cal.curve, *cal.curve_reject, cal.p_unknown])
    cov = np.zeros((5, 5))
    cov[:2, :2], cov[2:4, 2:4], cov[4, 4] = cal.cov_pass, cal.cov_reject, cal.var_unknown

    def both(x: np.ndarray) -> np.ndarray:
        q, qr = _sigmoid_curve((x[0], x[1])), _sigmoid_curve((x[2], x[3]))
        r = _rates(passed, rejected, unknown, q, qr, float(np.clip(x[4], 0.0, 1.0)))
        return np.array([r[0] / r[4] if r[4] > 0 else 0.0, r[2] / r[5] if r[5] > 0 else 0.0])

    eps = 1e-4
    grad = np.zeros((2, 5))
    for i in range(5):
        step = np.zeros(5)
        step[i] = eps
        grad[:, i] = (both(params + step) - both(params - step)) / (2 * eps)
    var = grad @ cov @ grad.T
    return max(0.0, float(var[0, 0])), max(0.0, float(var[1, 1]))


def estimate(t: FieldTotals, cal: Calibration) -> Estimate:
    """The expected rates of ``t``'s windows and their standard deviations: ``X / (X + Y)`` with X
    the expected escapes (false rejects) and Y the caught defects (good parts passed); by the delta
    method, from (1) the parts' own chance (given the calibration, bin b holds a binomial number of
    defects: variance ``count q (1 - q)``), (2) the calibration's covariance (:func:`_calibration_var`)
    and (3) the histograms' Laplace noise (``t.hist_var`` per bin)."""
    passed = t.score_pass.astype(float)
    rejected = t.score_reject.astype(float)
    q, qr, qu, unknown = cal.p_defect, cal.q_reject, cal.p_unknown, float(t.unknown)
    escapes, caught, false_rejects, good_passed, defects, good = _rates(passed, rejected, unknown, q, qr, qu)
    pp, rp = np.maximum(passed, 0.0), np.maximum(rejected, 0.0)
    bern_pass, bern_rej = float(pp @ (q * (1 - q))), float(rp @ (qr * (1 - qr))) + max(unknown, 0.0) * qu * (1 - qu)
    cal_esc, cal_fr = _calibration_var(t, cal)
    hv = float(t.hist_var)
    # escape = X / (X + Y), X the escapes (passed side), Y the caught defects (rejected side);
    # false reject = X' / (X' + Y'), X' the false rejects (rejected side), Y' the good passed
    s_esc = n_esc = s_fr = n_fr = 0.0
    if defects > 0:
        s_esc = (caught**2 * bern_pass + escapes**2 * bern_rej) / defects**4
        g_pass, g_rej = q * caught / defects**2, -qr * escapes / defects**2
        n_esc = hv * float((g_pass**2).sum() + (g_rej**2).sum())
    if good > 0:
        s_fr = (good_passed**2 * bern_rej + false_rejects**2 * bern_pass) / good**4
        g_rej, g_pass = (1 - qr) * good_passed / good**2, -(1 - q) * false_rejects / good**2
        n_fr = hv * float((g_pass**2).sum() + (g_rej**2).sum())
    cal_noise = cal.noised  # under noise, the calibration's spread is largely the noise's (its weights)
    esc_noise = n_esc + (cal_esc if cal_noise else 0.0)
    fr_noise = n_fr + (cal_fr if cal_noise else 0.0)
    return Estimate(
        escape=_ratio(escapes, defects),
        false_reject=_ratio(false_rejects, good),
        expected_defects=defects,
        expected_good=good,
        verdicts=int(passed.sum() + rejected.sum() + unknown),
        calibrated_on=cal.labelled,
        escape_sd=float(np.sqrt(s_esc + n_esc + cal_esc)),
        false_reject_sd=float(np.sqrt(s_fr + n_fr + cal_fr)),
        escape_noise_sd=float(np.sqrt(esc_noise)),
        false_reject_noise_sd=float(np.sqrt(fr_noise)),
    )
