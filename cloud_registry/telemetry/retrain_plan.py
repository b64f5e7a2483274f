"""Plan a retraining from the telemetry: is the drift sustained, and what does the field look like?

:func:`plan_retrain` reads the drift evidence of a model version from the telemetry store: enough
windows, and enough of them flagged on the input statistics, or there is nothing to retrain for
(:class:`NoSustainedDrift`, which names the version's open field-rate episodes, if any: the line is
losing parts without a drift the plan could fit the lighting from). From the pooled histograms it
reads how the field differs from the training images: the brightness offset and the contrast ratio
(:class:`MatchedLighting`), which :func:`fit_lighting` then refines by simulating the camera on
training images. The plan's evidence lists the open field-rate episodes too. The plan is carried
out by :func:`cloud_registry.telemetry.retrain.retrain`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cloud_registry.errors import NotFound, RegistryError
from cloud_registry.telemetry.drift_report import FieldShift, ReferenceFor, build_report, field_shift
from cloud_registry.telemetry.field_alerts import field_episodes
from cloud_registry.telemetry.store import TelemetryStore
from edge_agent.preprocessing import STAT_RANGES, Preprocessor, input_stats, stat_edges
from edge_agent.telemetry.drift import emd, histogram_of
from edgeline.core.protocol.manifest import PreprocessSpec

log = logging.getLogger(__name__)


class RetrainError(RegistryError):
    """Retraining was refused or failed (gate, drift gate, missing data); nothing was registered."""


class NoSustainedDrift(RetrainError):
    """The telemetry does not show sustained drift for this version: no reason to retrain."""


@dataclass(frozen=True)
class RetrainPolicy:
    #: evidence needed: at least this many windows, and this share of them flagged on any of ``stats``
    min_windows: int = 6
    min_drifted_share: float = 0.5
    stats: tuple[str, ...] = ("brightness", "contrast")
    #: augmentation around the measured lighting: +- grey levels and +- relative contrast
    spread_levels: float = 12.0
    spread_contrast: float = 0.08
    augment_copies: int = 2
    #: drift gate, in accuracy points on the held-out images
    min_gain_pp: float = 0.0
    max_normal_drop_pp: float = 3.0
    #: rollout policy: None = register only; else e.g. "group:hall-1", canary devices first
    rollout_target: str | None = None
    canary: int = 1
    waves: str = "100%"
    max_failure_pct: float = 0.0


@dataclass(frozen=True)
class MatchedLighting:
    """The lighting (``converters.synth.apply_lighting`` parameters) that maps training images onto
    the field: ``out = (v - 128) * contrast + 128 + brightness``."""

    brightness: float
    contrast: float

    @classmethod
    def from_shift(cls, shift: FieldShift) -> MatchedLighting:
        ev = shift.evidence
        ref_mean = float(ev["brightness"]["reference"]) * 255.0
        field_mean = float(ev["brightness"]["field"]) * 255.0
        gain = float(np.clip(shift.contrast_ratio, 0.2, 5.0))
        offset = field_mean - ((ref_mean - 128.0) * gain + 128.0)
        return cls(float(np.clip(offset, -200.0, 200.0)), gain)

    def augment(self, policy: RetrainPolicy) -> Any:
        from converters.synth import lighting_augment

        b, c = self.brightness, self.contrast
        lo_b, hi_b = max(-255.0, b - policy.spread_levels), min(255.0, b + policy.spread_levels)
        lo_c, hi_c = max(0.05, c * (1 - policy.spread_contrast)), min(10.0, c * (1 + policy.spread_contrast))
        return lighting_augment(brightness=(lo_b, hi_b), contrast=(lo_c, hi_c))

    def apply(self, img: np.ndarray) -> np.ndarray:
        from converters.synth import apply_lighting

        return apply_lighting(img, self.brightness, self.contrast)


def fit_lighting(
    field_hist: dict[str, list[int]],
    images: list[np.ndarray],
    spec: PreprocessSpec,
    start: MatchedLighting,
) -> tuple[MatchedLighting, float]:
    """The lighting that, applied to ``images`` (training frames), best reproduces the field's
    brightness and contrast histograms: earth mover's distance, coarse then fine grid around
    ``start``. The closed-form :meth:`MatchedLighting.from_shift` ignores saturation (dark pixels clip
    at 0), which makes it underestimate a strong darkening; simulating the camera does not."""
    from converters.synth import apply_lighting

    pre = Preprocessor(spec)
    names = [n for n in ("brightness", "contrast") if sum(field_hist.get(n, [])) > 0]
    if not names or not images:
        return start, float("nan")
    edges = {n: stat_edges(n) for n in names}
    target = {n: np.asarray(field_hist[n], np.float64) for n in names}

    def cost(b: float, c: float) -> float:
        stats = [input_stats(pre.prepare(apply_lighting(img, b, c))) for img in images]
        total = 0.0
        for n in names:
            sim = histogram_of((s[n] for s in stats), edges[n])
            lo, hi = STAT_RANGES[n]
            total += emd(target[n], sim, edges[n]) / (hi - lo)
        return total

    best = (cost(start.brightness, start.contrast), start.brightness, start.contrast)
    for db, dc in ((8.0, 0.1), (2.0, 0.025)):
        _, b0, c0 = best
        for b in b0 + db * np.arange(-4, 5):
            for c in c0 + dc * np.arange(-2, 3):
                if -255 <= b <= 255 and 0.05 <= c <= 10:
                    best = min(best, (cost(float(b), float(c)), float(b), float(c)))
    return MatchedLighting(round(best[1], 2), round(best[2], 4)), best[0]


@dataclass
class RetrainPlan:
    model: str
    parent_version: int
    next_version: int
    lighting: MatchedLighting
    shift: FieldShift
    field_hist: dict[str, list[int]] = field(default_factory=dict)
    closed_form: MatchedLighting | None = None
    fit_cost: float | None = None

    def lineage(self, policy: RetrainPolicy) -> dict[str, Any]:
        return {
            "parent_version": self.parent_version,
            "retrained_for": {
                "reason": "sustained input drift",
                "drift_evidence": self.shift.evidence,
                "matched_lighting": asdict(self.lighting),
                "closed_form_lighting": asdict(self.closed_form) if self.closed_form else None,
                "fit_emd": self.fit_cost,
                "policy": {k: v for k, v in asdict(policy).items() if k != "rollout_target"},
            },
        }


def plan_retrain(
    store: TelemetryStore,
    model: str,
    *,
    version: int | None = None,
    reference_for: ReferenceFor,
    next_version: int | None = None,
    since: float | None = None,
    policy: RetrainPolicy | None = None,
) -> RetrainPlan:
    """Read the drift evidence; raise :class:`NoSustainedDrift` when it does not justify retraining."""
    pol = policy or RetrainPolicy()
    versions = store.versions(model)
    if not versions:
        raise NotFound(f"no telemetry for model {model!r}")
    v = version if version is not None else versions[-1]
    [report] = build_report(store, model, version=v, since=since, reference_for=reference_for)
    shares = {s.name: s.windows_drifted / max(1, s.windows) for s in report.stats if s.name in pol.stats}
    field = [scope for _, scope in field_episodes(store, model, v)]
    if report.windows < pol.min_windows or not shares or max(shares.values()) < pol.min_drifted_share:
        also = f"; open field-rate episodes: {', '.join(field)}" if field else ""
        raise NoSustainedDrift(
            f"{model} v{v}: {report.windows} windows, drifted share {shares} "
            f"(need >= {pol.min_windows} windows and >= {pol.min_drifted_share:.0%} flagged){also}"
        )
    # the field as it is now: the windows flagged on the drift statistics, not the whole history
    [drifted] = build_report(
        store,
        model,
        version=v,
        since=since,
        reference_for=reference_for,
        select=lambda w: any(w.drift[k].drifted for k in pol.stats if k in w.drift),
    )
    shift = field_shift(drifted)
    shift.evidence["windows_total"] = report.windows
    shift.evidence["field_episodes"] = field  # field escape / false-reject episodes open on this version
    lighting = MatchedLighting.from_shift(shift)
    b, c = shift.brightness_delta, shift.contrast_ratio
    log.info("%s v%d drifted: brightness %+.3f, contrast x%.2f -> lighting %s", model, v, b, c, lighting)
    nxt = next_version if next_version is not None else v + 1
    return RetrainPlan(model, v, nxt, lighting, shift, drifted.field_hist, closed_form=lighting)
