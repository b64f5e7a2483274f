"""The trial of a freshly activated model, pure: N live frames within a latency budget, no NaN, no
errors. It fails CLOSED: a trial that has not seen its frames when the timeout passes fails."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from edgeline.core.protocol.delivery import Reason


@dataclass(frozen=True)
class TrialSpec:
    frames: int
    timeout_s: float
    latency_budget_ms: float
    max_errors: int = 0


@dataclass(frozen=True)
class TrialVerdict:
    passed: bool
    reason: str = ""
    detail: str = ""


def p95(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class Trial:
    """Fed from the inference thread (:meth:`add`), judged from the updater thread (:meth:`judge`)."""

    spec: TrialSpec
    started_at: float
    errors_at_start: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    nan_frames: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, latency_ms: float, finite: bool) -> None:
        with self._lock:
            if len(self.latencies_ms) >= self.spec.frames:
                return
            self.latencies_ms.append(float(latency_ms))
            if not finite:
                self.nan_frames += 1

    @property
    def seen(self) -> int:
        with self._lock:
            return len(self.latencies_ms)

    def judge(self, now: float, errors_now: int = 0) -> TrialVerdict | None:
        """A verdict, or None while the trial is still running."""
        with self._lock:
            lat = list(self.latencies_ms)
            nan = self.nan_frames
        errors = max(0, errors_now - self.errors_at_start)
        if nan:
            return TrialVerdict(False, Reason.NAN, f"{nan} of {len(lat)} trial frames produced NaN or infinity")
        if errors > self.spec.max_errors:
            return TrialVerdict(
                False, Reason.TRIAL_ERRORS, f"{errors} inference errors during the trial (max {self.spec.max_errors})"
            )
        if len(lat) >= self.spec.frames:
            worst = p95(lat)
            if worst > self.spec.latency_budget_ms:
                return TrialVerdict(
                    False,
                    Reason.TRIAL_LATENCY,
                    f"p95 latency {worst:.1f} ms over {len(lat)} frames exceeds {self.spec.latency_budget_ms} ms",
                )
            return TrialVerdict(True, detail=f"{len(lat)} frames, p95 {worst:.2f} ms")
        if now - self.started_at >= self.spec.timeout_s:
            return TrialVerdict(
                False,
                Reason.TRIAL_TIMEOUT,
                f"saw {len(lat)} of {self.spec.frames} frames in {self.spec.timeout_s:.0f} s (fails closed)",
            )
        return None


def error_count(counters: dict[str, object]) -> int:
    """Inference errors so far, from an agent's ``counters()`` (a number or a map of reason -> number)."""

    def total(value: object) -> int:
        if isinstance(value, bool):
            return 0
        if isinstance(value, int | float):
            return int(value)
        if isinstance(value, dict):
            return sum(total(v) for v in value.values())
        return 0

    return total(counters.get("errors"))
