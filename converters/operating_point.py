"""The operating point in the line's terms: escape rate and false-reject rate, with their intervals.

* escape: defective parts passed as good (verdict ``ok``), out of all defective parts;
* false reject: good parts not passed (verdict ``defect`` or ``unknown``: scrapped or sent to
  rework), out of all good parts.

A part is rejected when its defect score ``d = 1 - p(ok)`` reaches the threshold, or when it is
``unknown`` whatever its score. Thresholds are chosen on held-out (out-of-fold) scores for the
target the user names; the gate's figures come from *cross-fitting*: the threshold chosen on one
half of the held-out parts is counted on the other half and vice versa, so the counts measure the
whole procedure, not a threshold fitted to the very parts it is judged on. Pure numpy and scipy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy.stats import beta, norm

Target = Literal["max_false_reject", "max_escape"]


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval for ``k`` events in ``n`` trials; (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def parts_needed(
    rate_limit: float, confidence: float = 0.95, events: int = 0, cap: int = 1_000_000, observed: float = 0.0
) -> int:
    """The fewest parts whose interval's upper bound is at most ``rate_limit``, with ``events``
    events, or (``observed`` > 0) with events at the observed share: how much held-out data would
    settle a claim. ``cap`` when no amount would (the observed share itself is above the limit)."""
    if rate_limit <= 0 or observed >= rate_limit:
        return cap
    n = max(events + 1, 1)
    while n < cap:
        k = int(np.ceil(observed * n)) if observed > 0 else events
        if clopper_pearson(k, n, confidence)[1] <= rate_limit:
            return n
        n = max(n + 1, int(n * 1.05))
    return cap


@dataclass(frozen=True)
class Rate:
    """``events`` out of ``n`` with its interval."""

    events: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float | None:
        return self.events / self.n if self.n else None

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "value": self.value}

    def text(self) -> str:
        if not self.n:
            return "unmeasured (no parts)"
        share = 100 * self.events / self.n
        return f"{share:.2f}% ({self.events}/{self.n}, 95% CI {100 * self.low:.2f}-{100 * self.high:.2f}%)"


def rate(events: int, n: int, confidence: float = 0.95) -> Rate:
    lo, hi = clopper_pearson(events, n, confidence)
    return Rate(int(events), int(n), lo, hi)


def rejected(d: np.ndarray, unknown: np.ndarray, threshold: float) -> np.ndarray:
    return (np.asarray(d) >= threshold) | np.asarray(unknown, dtype=bool)


def choose_threshold(
    d_good: np.ndarray, d_defect: np.ndarray, unknown_good: np.ndarray, target: Target, value: float
) -> float:
    """The threshold on the defect score meeting the target on these parts.

    ``max_false_reject``: the lowest threshold whose false-reject share is at most ``value`` (the most
    defects caught within the false-reject budget). ``max_escape``: the highest threshold whose escape
    share is at most ``value`` (the fewest good parts rejected within the escape budget)."""
    d_good = np.asarray(d_good, dtype=np.float64)
    d_defect = np.asarray(d_defect, dtype=np.float64)
    if target == "max_false_reject":
        if not len(d_good):
            return 0.5
        budget = int(np.floor(value * len(d_good) + 1e-9)) - int(np.sum(unknown_good))
        scores = np.sort(d_good[~np.asarray(unknown_good, dtype=bool)])[::-1]
        if budget < 0 or not len(scores):
            return float(np.nextafter(scores[0], 2.0)) if len(scores) else 0.5
        if budget >= len(scores):
            return float(scores[-1])
        # reject the `budget` highest good scores at most: threshold just above the next one
        empirical = float(min(1.0, np.nextafter(scores[budget], 2.0)))
        return max(empirical, gaussian_tail(scores, value))
    if not len(d_defect):
        return 0.5
    allowed = int(np.floor(value * len(d_defect) + 1e-9))
    scores = np.sort(d_defect)
    # at most `allowed` defects may score below the threshold: put it at the (allowed)-th lowest score
    return float(scores[min(allowed, len(scores) - 1)])


def gaussian_tail(d_good: np.ndarray, share: float) -> float:
    """The ``1 - share`` quantile of a normal fitted to the logits of good parts' defect scores.

    With a few hundred good parts the empirical 99th percentile rests on one or two parts; the
    fitted tail does not, so :func:`choose_threshold` takes the higher of the two (a threshold that
    holds on the next parts as well as on these)."""
    if len(d_good) < 10:
        return 0.0
    eps = 1e-9
    logits = np.log(np.clip(d_good, eps, 1 - eps)) - np.log(np.clip(1 - d_good, eps, 1 - eps))
    z = float(norm.ppf(1.0 - share))
    q = float(np.mean(logits) + z * np.std(logits, ddof=1))
    return float(1.0 / (1.0 + np.exp(-q)))


@dataclass(frozen=True)
class Counts:
    false_reject: Rate
    escape: Rate
    review: int  # parts passed but flagged uncertain (good and defective)

    def to_dict(self) -> dict[str, object]:
        return {"false_reject": self.false_reject.to_dict(), "escape": self.escape.to_dict(), "review": self.review}


def count(
    d_good: np.ndarray,
    d_defect: np.ndarray,
    unknown_good: np.ndarray,
    unknown_defect: np.ndarray,
    threshold: float,
    review: float | None = None,
) -> Counts:
    rej_g = rejected(d_good, unknown_good, threshold)
    rej_d = rejected(d_defect, unknown_defect, threshold)
    rv = 0
    if review is not None:
        rv = int(np.sum(~rej_g & (np.asarray(d_good) >= review)) + np.sum(~rej_d & (np.asarray(d_defect) >= review)))
    return Counts(rate(int(rej_g.sum()), len(rej_g)), rate(int((~rej_d).sum()), len(rej_d)), rv)


def cross_fitted(
    d_good: np.ndarray,
    d_defect: np.ndarray,
    unknown_good: np.ndarray,
    unknown_defect: np.ndarray,
    target: Target,
    value: float,
    seed: int = 0,
    parts: int = 5,
) -> Counts:
    """Counts of the threshold procedure on parts it did not choose the threshold on: the parts are
    cut into ``parts`` shares; each share is counted at the threshold chosen on the others."""
    rng = np.random.default_rng(seed)
    g_part = rng.permutation(len(d_good)) % parts
    d_part = rng.permutation(len(d_defect)) % parts
    fr = esc = 0
    for h in range(parts):
        fit_g, fit_d = g_part != h, d_part != h
        t = choose_threshold(d_good[fit_g], d_defect[fit_d], unknown_good[fit_g], target, value)
        c = count(d_good[~fit_g], d_defect[~fit_d], unknown_good[~fit_g], unknown_defect[~fit_d], t)
        fr += c.false_reject.events
        esc += c.escape.events
    return Counts(rate(fr, len(d_good)), rate(esc, len(d_defect)), 0)


def curve(
    d_good: np.ndarray, d_defect: np.ndarray, unknown_good: np.ndarray, unknown_defect: np.ndarray, points: int = 101
) -> list[dict[str, float]]:
    """False reject against escape over thresholds from 0 to 1 (the operating-point curve)."""
    out: list[dict[str, float]] = []
    for t in np.linspace(0.0, 1.0, points):
        c = count(d_good, d_defect, unknown_good, unknown_defect, float(t))
        esc = c.escape.value
        out.append(
            {
                "threshold": float(t),
                "false_reject": c.false_reject.value or 0.0,
                "escape": esc if esc is not None else float("nan"),
            }
        )
    return out


def auroc(good: np.ndarray, defect: np.ndarray) -> float | None:
    """Area under the ROC curve of a score (higher = more defective); None without both kinds."""
    g, d = np.asarray(good, dtype=np.float64), np.asarray(defect, dtype=np.float64)
    if not len(g) or not len(d):
        return None
    allv = np.concatenate([g, d])
    ranks = _rankdata(allv)
    return float((ranks[len(g) :].sum() - len(d) * (len(d) + 1) / 2) / (len(g) * len(d)))


def _rankdata(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), dtype=np.float64)
    sv = v[order]
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks
