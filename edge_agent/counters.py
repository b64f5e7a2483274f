"""Counters of one agent: frames, drops by reason, verdicts per class, errors, latency.

Memory is bounded whatever the uptime: latency percentiles come from a fixed-size ring of recent
values, and the Prometheus histogram has fixed buckets. One instance per agent (no module state), so
many agents can share a process.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import Counter
from typing import Any

import numpy as np

from edge_agent.verdict import Verdict

#: Histogram bucket upper bounds for per-frame latency, in milliseconds.
LATENCY_BUCKETS_MS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class LatencyWindow:
    """Recent latencies in a ring (for percentiles) plus a cumulative fixed-bucket histogram."""

    def __init__(self, size: int = 2048) -> None:
        self._ring = np.zeros(size, dtype=np.float64)
        self._size = size
        self._n = 0
        self.count = 0
        self.sum_ms = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)  # last is +Inf

    def add(self, ms: float) -> None:
        self._ring[self._n % self._size] = ms
        self._n += 1
        self.count += 1
        self.sum_ms += ms
        self.buckets[bisect_left(LATENCY_BUCKETS_MS, ms)] += 1

    def percentiles(self) -> dict[str, float]:
        n = min(self._n, len(self._ring))
        if n == 0:
            return {}
        p50, p90, p99, mx = np.percentile(self._ring[:n], [50, 90, 99, 100])
        return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "max_ms": float(mx)}


class AgentCounters:
    def __init__(self, latency_window: int = 2048) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self.inspected = 0
        self.dropped: Counter[str] = Counter()
        self.by_class: Counter[str] = Counter()
        self.by_verdict: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.plugin_errors: Counter[str] = Counter()
        self.models_activated = 0
        self.models_rejected = 0
        self.api_requests = 0
        self.latency = LatencyWindow(latency_window)

    def record(self, v: Verdict) -> None:
        with self._lock:
            self.inspected += 1
            self.by_class[v.label] += 1
            self.by_verdict[v.verdict] += 1
            if v.uncertain:
                self.by_verdict["uncertain"] += 1
            self.latency.add(v.latency_ms)

    def drop(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.dropped[reason] += n

    def error(self, kind: str) -> int:
        with self._lock:
            self.errors[kind] += 1
            return self.errors[kind]

    def plugin_error(self, name: str) -> int:
        with self._lock:
            self.plugin_errors[name] += 1
            return self.plugin_errors[name]

    def bump(self, attr: str) -> None:
        with self._lock:
            setattr(self, attr, getattr(self, attr) + 1)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            lat = self.latency
            return {
                "uptime_s": round(time.time() - self.started, 3),
                "inspected": self.inspected,
                "dropped": dict(self.dropped),
                "verdicts": {"by_class": dict(self.by_class), "by_verdict": dict(self.by_verdict)},
                "errors": dict(self.errors),
                "plugin_errors": dict(self.plugin_errors),
                "models_activated": self.models_activated,
                "models_rejected": self.models_rejected,
                "api_requests": self.api_requests,
                "latency": {
                    **lat.percentiles(),
                    "count": lat.count,
                    "sum_ms": lat.sum_ms,
                    "buckets_ms": list(LATENCY_BUCKETS_MS),
                    "bucket_counts": list(lat.buckets),
                },
            }
