"""Drift scores with thresholds calibrated for the window size, and episodes of sustained drift.

Pure numpy, used on the device (per window, offline) and in the cloud (reports and alerts).

* :func:`psi`: population stability index of a window's counts against reference frequencies. The
  window side gets a pseudo-count of 0.5 per bin, so empty bins never produce an infinite score.
* :class:`Calibrator`: PSI of a small window is biased upwards (roughly ``(bins - 1) / n`` with no drift
  at all), so a fixed threshold such as the usual 0.25 either fires on every 50-frame window or misses
  everything on big ones. The threshold for ``n`` frames is the ``quantile`` of PSI under *no drift*,
  simulated by Monte Carlo from the reference itself (the true distribution drawn around the
  reference as if it had been estimated from ``ref_n`` images, a window of ``n`` frames drawn from
  it, scored against the reference), and never below ``floor`` (0.1, the
  customary "stable" limit: with thousands of frames a statistically significant shift can still be
  too small to matter).
* :class:`Sustained`: one drifted window is noise; an episode starts when ``need`` of the last ``of``
  windows drifted and ends after ``clear`` clean windows in a row. Alarms fire once per episode.

Measured false-alarm rate and detection delay: docs/drift.md.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from edge_agent.errors import EdgeAgentError
from edge_agent.preprocessing import STAT_BINS, STAT_RANGES, stat_edges
from edgeline.core.protocol.manifest import Histogram

#: Pseudo-count per bin added to field counts (and to reference samples) before taking logs.
PSEUDO = 0.5
#: Lowest reference frequency of a bin, so a bin the reference never saw still has a finite log.
REF_FLOOR = 1e-4


class DriftError(EdgeAgentError):
    """Drift inputs are malformed: lengths differ, negative counts, no reference."""


def ref_freqs(freqs: Sequence[float] | np.ndarray) -> np.ndarray:
    """Reference frequencies floored at :data:`REF_FLOOR` and normalised to sum 1."""
    p = np.asarray(freqs, dtype=np.float64)
    if p.ndim != 1 or p.size < 2 or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise DriftError("reference frequencies must be >= 2 finite, non-negative values with a positive sum")
    p = np.maximum(p / p.sum(), REF_FLOOR)
    return p / p.sum()


def _check_counts(counts: Sequence[float] | np.ndarray, bins: int) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    if c.shape[-1] != bins:
        raise DriftError(f"{c.shape[-1]} counts for a reference of {bins} bins")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise DriftError("counts must be finite and non-negative")
    return c


def psi_many(p: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """PSI of each row of ``counts`` (shape (m, bins)) against floored reference ``p``."""
    n = counts.sum(axis=-1, keepdims=True)
    q = (counts + PSEUDO) / (n + PSEUDO * counts.shape[-1])
    return np.asarray(np.sum((q - p) * np.log(q / p), axis=-1), dtype=np.float64)


def psi(reference: Sequence[float] | np.ndarray, counts: Sequence[float] | np.ndarray) -> float:
    """Population stability index of ``counts`` against reference frequencies (0 for an empty window)."""
    p = ref_freqs(reference)
    c = _check_counts(counts, p.size)
    if c.sum() <= 0:
        return 0.0
    return float(psi_many(p, c[None, :])[0])


def rebin(
    src_edges: Sequence[float], src_freqs: Sequence[float], dst_edges: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Move a histogram onto other bin edges, assuming mass spreads uniformly inside each source bin.
    Mass outside the destination range lands in its first or last bin."""
    se = np.asarray(src_edges, dtype=np.float64)
    sf = np.asarray(src_freqs, dtype=np.float64)
    de = np.asarray(dst_edges, dtype=np.float64)
    if se.size != sf.size + 1 or de.size < 3:
        raise DriftError("rebin needs n+1 source edges for n frequencies and >= 2 destination bins")
    cdf = np.concatenate([[0.0], np.cumsum(np.maximum(sf, 0.0))])
    at = np.interp(de, se, cdf)
    at[0], at[-1] = 0.0, cdf[-1]
    out = np.diff(at)
    total = out.sum()
    if total <= 0:
        raise DriftError("reference histogram has no mass")
    return np.asarray(out / total, dtype=np.float64)


def reference_on(hist: Histogram, edges: np.ndarray) -> np.ndarray:
    """Reference frequencies of a manifest histogram on ``edges`` (re-binned only when edges differ)."""
    if len(hist.edges) == edges.size and np.allclose(hist.edges, edges):
        return ref_freqs(hist.freqs)
    return ref_freqs(rebin(hist.edges, hist.freqs, edges))


def histogram_of(values: Iterable[float], edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` on ``edges``; values outside the range are clipped into the end bins."""
    v = np.clip(np.asarray(list(values), dtype=np.float64), edges[0], edges[-1])
    idx = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, edges.size - 2)
    return np.bincount(idx, minlength=edges.size - 1).astype(np.int64)


def reference_histogram(values: Iterable[float], edges: np.ndarray) -> Histogram:
    """Reference histogram of training values, smoothed with :data:`PSEUDO` per bin (a bin with no
    training sample is 'rare', not 'impossible')."""
    counts = histogram_of(values, edges).astype(np.float64)
    freqs = (counts + PSEUDO) / (counts.sum() + PSEUDO * counts.size)
    return Histogram(edges=tuple(float(e) for e in edges), freqs=tuple(float(f) for f in freqs))


def reference_input_stats(stats: Sequence[Mapping[str, float]]) -> dict[str, Histogram]:
    """Reference histograms of every input statistic (on the fixed ``stat_edges``) from the per-image
    statistics of a training set. This is what a manifest's ``reference.input_stats`` should hold."""
    return {name: reference_histogram((s[name] for s in stats), stat_edges(name)) for name in STAT_RANGES}


def hist_mean_std(counts: Sequence[float] | np.ndarray, edges: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of a histogram, taking bin centres."""
    c = np.asarray(counts, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    if c.sum() <= 0:
        raise DriftError("empty histogram")
    mid = (e[:-1] + e[1:]) / 2
    mean = float(np.sum(c * mid) / c.sum())
    return mean, float(np.sqrt(np.sum(c * (mid - mean) ** 2) / c.sum()))


def emd(reference: Sequence[float] | np.ndarray, counts: Sequence[float] | np.ndarray, edges: np.ndarray) -> float:
    """Earth mover's distance between reference and field, in the statistic's own units (e.g. 0.2 for a
    brightness drop of a fifth of the range). Unlike PSI it says how far, not only how different."""
    p = np.asarray(reference, dtype=np.float64)
    c = _check_counts(counts, p.size)
    if c.sum() <= 0:
        return 0.0
    cdf_gap = np.abs(np.cumsum(p / p.sum()) - np.cumsum(c / c.sum()))
    return float(np.sum(cdf_gap * np.diff(np.asarray(edges, dtype=np.float64))))


@dataclass
class Calibrator:
    """Per-window PSI thresholds calibrated by simulation under 'no drift'. Deterministic (fixed seed)
    and cached per (reference, n); window sizes are rounded *down* to a geometric grid, which only
    raises the threshold (fewer false alarms), so the cache stays small."""

    quantile: float = 0.995
    floor: float = 0.1
    ref_n: int = 1000
    draws: int = 2000
    seed: int = 20240607
    cache_size: int = 512
    _cache: OrderedDict[tuple[bytes, int], float] = field(default_factory=OrderedDict, init=False, repr=False)

    @staticmethod
    def bucket(n: int) -> int:
        if n <= 32:
            return max(1, n)
        k = int(np.floor(np.log(n / 32) / np.log(1.25)))
        return int(32 * 1.25**k)

    def threshold(self, reference: np.ndarray, n: int, noise_scale: float = 0.0, ref_n: int | None = None) -> float:
        """PSI above which a window of ``n`` frames counts as drifted against ``reference``. With
        ``noise_scale`` > 0 the windows carry Laplace noise of that scale on every count (see
        :mod:`.privacy`), and the simulation adds the same noise, so noise alone does not alarm.
        ``ref_n``: how many samples the reference was measured on, when known (default ``self.ref_n``)."""
        if n <= 0:
            return float("inf")
        p = ref_freqs(reference)
        nb = self.bucket(int(n))
        rn = max(10, int(ref_n if ref_n is not None else self.ref_n))
        key = (p.tobytes() + np.float64(noise_scale).tobytes() + rn.to_bytes(8, "little"), nb)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        rng = np.random.default_rng(self.seed)
        # The true field distribution differs from the reference by the reference's own estimation
        # error (it came from ref_n training images): draw it, draw a window from it, score it.
        truth = rng.dirichlet(rn * p, size=self.draws)
        field_counts = np.stack([rng.multinomial(nb, t) for t in truth]).astype(np.float64)
        if noise_scale > 0:
            noisy = field_counts + rng.laplace(0.0, noise_scale, size=field_counts.shape)
            field_counts = np.maximum(np.rint(noisy), 0.0)
        null = psi_many(p, field_counts)
        value = max(self.floor, float(np.quantile(null, self.quantile)))
        self._cache[key] = value
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return value


@dataclass(frozen=True)
class Score:
    psi: float
    threshold: float

    @property
    def drifted(self) -> bool:
        return self.psi > self.threshold


def score(
    reference: np.ndarray,
    counts: Sequence[float] | np.ndarray,
    calibrator: Calibrator,
    *,
    n: int | None = None,
    noise_scale: float = 0.0,
    ref_n: int | None = None,
) -> Score:
    """PSI of ``counts`` and its calibrated threshold. ``n`` is the window's frame count when the
    counts are noised (their sum then overstates it: noise is clipped at zero)."""
    c = _check_counts(counts, len(reference))
    frames = round(float(c.sum())) if n is None else n
    if frames <= 0 or c.sum() <= 0:
        return Score(0.0, float("inf"))
    return Score(psi(reference, c), calibrator.threshold(reference, frames, noise_scale, ref_n))


def class_mix_vectors(
    class_mix: Mapping[str, float], counts: Mapping[str, int], labels: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Align a reference class mix and field class counts on one label order (labels first, then any
    other label seen on either side, sorted)."""
    order = list(dict.fromkeys([*labels, *sorted(set(class_mix) | set(counts))]))
    if len(order) < 2:
        order.append("__other__")
    ref = np.array([max(float(class_mix.get(k, 0.0)), 0.0) for k in order])
    obs = np.array([max(float(counts.get(k, 0)), 0.0) for k in order])
    return ref, obs


Transition = Literal["start", "end"]


@dataclass
class Sustained:
    """Per-window drift verdicts -> episodes. ``update`` returns "start" once when an episode begins and
    "end" once when it is over; otherwise None."""

    need: int = 3
    of: int = 4
    clear: int = 3
    active: bool = False
    _recent: deque[bool] = field(default_factory=deque, repr=False)
    _clean_run: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.need <= self.of or self.clear < 1:
            raise DriftError("sustained rule needs 1 <= need <= of and clear >= 1")
        self._recent = deque(self._recent, maxlen=self.of)

    def update(self, drifted: bool) -> Transition | None:
        self._recent.append(bool(drifted))
        self._clean_run = 0 if drifted else self._clean_run + 1
        if not self.active and sum(self._recent) >= self.need:
            self.active = True
            return "start"
        if self.active and self._clean_run >= self.clear:
            self.active = False
            self._recent.clear()
            return "end"
        return None

    def state(self) -> dict[str, object]:
        return {"active": self.active, "recent": list(self._recent), "clean_run": self._clean_run}

    def restore(self, state: Mapping[str, object]) -> None:
        recent = state.get("recent", [])
        clean = state.get("clean_run", 0)
        self.active = bool(state.get("active", False))
        self._recent = deque((bool(x) for x in recent) if isinstance(recent, list) else (), maxlen=self.of)
        self._clean_run = int(clean) if isinstance(clean, int) else 0


__all__ = [
    "STAT_BINS",
    "Calibrator",
    "DriftError",
    "Score",
    "Sustained",
    "class_mix_vectors",
    "emd",
    "hist_mean_std",
    "histogram_of",
    "psi",
    "rebin",
    "reference_histogram",
    "reference_input_stats",
    "reference_on",
    "score",
]
