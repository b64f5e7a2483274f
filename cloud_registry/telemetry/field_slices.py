"""Slices of the field rates, and the test that says one slice is worse than the others, pure.

A window belongs to one value of each slice:

* ``group``: the device group; ``line``: the device (its pseudonym, first 12 hex digits);
* ``shift``: the time of day of the window's start, in shifts starting at the configured hours
  (default 06, 14, 22, at the configured UTC offset);
* ``light``: the lighting band of the window, from its brightness histogram (the mean of its bins):
  ``dark`` below the first edge, ``bright`` above the second, ``normal`` between.

A slice is *worse* when its measured rate is above the rate of all the other slices of the same
scope together in a one-sided two-proportion z-test at ``alpha`` divided by the number of slices
compared (Bonferroni), both having at least ``min_parts`` parts with feedback in the denominator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from scipy.stats import norm

from cloud_registry.telemetry.field_rates import MIN_PARTS, FieldRate
from edgeline.core.protocol.telemetry import STAT_RANGES, TelemetryWindow


@dataclass(frozen=True)
class SliceSettings:
    #: hours at which shifts start (local time)
    shifts: tuple[int, ...] = (6, 14, 22)
    utc_offset_h: float = 0.0
    #: mean-brightness edges of the lighting bands dark | normal | bright (0..1)
    light_edges: tuple[float, float] = (0.35, 0.65)
    alpha: float = 0.01
    min_parts: int = MIN_PARTS
    #: the scopes whose slices are compared
    compare: tuple[str, ...] = ("line", "shift", "light")

    def __post_init__(self) -> None:
        if not self.shifts or any(not 0 <= h < 24 for h in self.shifts) or len(set(self.shifts)) != len(self.shifts):
            raise ValueError(f"shift start hours must be distinct hours 0-23, got {self.shifts}")
        lo, hi = self.light_edges
        if not 0.0 < lo < hi < 1.0:
            raise ValueError(f"lighting band edges must satisfy 0 < dark < bright < 1, got {self.light_edges}")
        if not 0.0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if not -14 <= self.utc_offset_h <= 14:
            raise ValueError(f"UTC offset must be within -14..14 hours, got {self.utc_offset_h}")


def shift_of(t: float, s: SliceSettings) -> str:
    hour = ((t + s.utc_offset_h * 3600.0) % 86400.0) / 3600.0
    starts = sorted(s.shifts)
    current = max((h for h in starts if h <= hour), default=starts[-1])
    nxt = starts[(starts.index(current) + 1) % len(starts)]
    return f"{current:02d}-{nxt:02d}"


def mean_brightness(w: TelemetryWindow) -> float | None:
    hist = w.input_stats.get("brightness")
    if not hist or sum(hist) <= 0:
        return None
    lo, hi = STAT_RANGES["brightness"]
    width = (hi - lo) / len(hist)
    return sum((lo + (i + 0.5) * width) * n for i, n in enumerate(hist)) / sum(hist)


def light_of(w: TelemetryWindow, s: SliceSettings) -> str:
    b = mean_brightness(w)
    if b is None:
        return "unmeasured"
    return "dark" if b < s.light_edges[0] else "bright" if b > s.light_edges[1] else "normal"


def slice_of(w: TelemetryWindow, scope: str, s: SliceSettings) -> str:
    if scope == "group":
        return w.group or "-"
    if scope == "line":
        return w.device[:12]
    if scope == "shift":
        return shift_of(w.start, s)
    if scope == "light":
        return light_of(w, s)
    raise ValueError(f"unknown slice scope {scope!r} (known: group, line, shift, light)")


def two_proportion(
    k1: int, n1: int, k2: int, n2: int, noise_var: tuple[float, float] = (0.0, 0.0)
) -> tuple[float, float]:
    """(z, one-sided p) of the first proportion being above the second (pooled variance, plus the
    Laplace noise's variance of each proportion, ``noise_var``)."""
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2) + noise_var[0] + noise_var[1])
    if se == 0:
        return 0.0, 1.0
    z = (k1 / n1 - k2 / n2) / se
    return z, float(norm.sf(z))


@dataclass(frozen=True)
class SliceVerdict:
    version: int
    scope: str
    value: str
    rate: str
    events: int
    n: int
    rest_events: int
    rest_n: int
    z: float
    p_value: float
    #: the p-value it had to be below (alpha over the slices compared)
    level: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def text(self) -> str:
        what = "escape" if self.rate == "escape" else "false reject"
        mine, rest = 100 * self.events / self.n, 100 * self.rest_events / self.rest_n
        return (
            f"v{self.version} {self.scope} {self.value}: field {what} {mine:.2f}% ({self.events}/{self.n}) "
            f"vs {rest:.2f}% on the others ({self.rest_events}/{self.rest_n}), p = {self.p_value:.2g}"
        )


SliceRates = tuple[int, str, str, FieldRate, FieldRate]


def worse_slices(rows: Sequence[SliceRates], s: SliceSettings) -> list[SliceVerdict]:
    """The slices significantly worse than the rest of their scope. ``rows``: (version, scope,
    value, escape, false reject) of one scope's slices."""
    out: list[SliceVerdict] = []
    versions = sorted({r[0] for r in rows})
    for version in versions:
        mine = [r for r in rows if r[0] == version]
        for index, name in ((3, "escape"), (4, "false_reject")):
            rates: list[tuple[str, str, FieldRate]] = [(r[1], r[2], r[index]) for r in mine]  # type: ignore[misc]
            # a rate the noise makes unusable is not compared; the noise of the others widens the test
            eligible = [(sc, v, r) for sc, v, r in rates if r.n >= s.min_parts and r.status != "noisy"]
            if len(eligible) < 2:
                continue
            level = s.alpha / len(eligible)
            k_all = sum(r.events for _, _, r in eligible)
            n_all = sum(r.n for _, _, r in eligible)
            noise_all = sum((r.noise_sd * r.n) ** 2 for _, _, r in eligible)  # noise variance of the events
            for scope, value, r in eligible:
                k_rest, n_rest = k_all - r.events, n_all - r.n
                if n_rest < s.min_parts:
                    continue
                noise = (r.noise_sd**2, (noise_all - (r.noise_sd * r.n) ** 2) / n_rest**2)
                z, p = two_proportion(r.events, r.n, k_rest, n_rest, noise)
                if p < level:
                    out.append(SliceVerdict(version, scope, value, name, r.events, r.n, k_rest, n_rest, z, p, level))
    return out
