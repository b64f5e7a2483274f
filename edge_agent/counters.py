"""Counters of one agent: frames, drops by reason, verdicts per class, errors, API requests, latency.

Memory is bounded whatever the uptime: latency percentiles come from a fixed-size ring of recent
values, the Prometheus histogram has fixed buckets, and every label set is bounded (API endpoints
outside :data:`API_ENDPOINTS` count as ``other``). One instance per agent (no module state), so many
agents can share a process.

The known label values listed here (verdicts, drop reasons, error kinds, API endpoints) are exported
from 0 by :func:`edge_agent.status.prometheus_text`, so their series exist from the first scrape; the
status document lists only what happened. A verdict is a string: values besides
:data:`KNOWN_VERDICTS` are counted as they come. An uncertain verdict is counted once under its
verdict and, separately, in ``uncertain``: never twice in one sum.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from bisect import bisect_left
from collections import Counter
from typing import Any

import numpy as np

from edge_agent.verdict import Verdict

#: Histogram bucket upper bounds for per-frame latency, in milliseconds.
LATENCY_BUCKETS_MS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
#: Verdict values exported from 0. Others (the verdict is a string) are counted when they occur.
KNOWN_VERDICTS: tuple[str, ...] = ("ok", "defect", "unknown")
#: Why a frame was not inspected: the frame loop's reasons (the queue's own ``queue_full`` is added
#: by the agent's status document).
DROP_REASONS: tuple[str, ...] = ("no_model", "error")
#: The errors the inspection of one frame raises, by class name (another class is counted as it comes).
ERROR_KINDS: tuple[str, ...] = ("PreprocessError", "ModelLoadError")
#: The local API's endpoints; the Open Inference Protocol's paths (``/v2...``) count as ``/v2``, any
#: other path as ``other``.
API_ENDPOINTS: tuple[str, ...] = ("/predict", "/status", "/metrics", "/healthz", "/v2", "other")


def _endpoint(path: str) -> str:
    if path == "/v2" or path.startswith("/v2/"):
        return "/v2"
    return path if path in API_ENDPOINTS else "other"


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
        self.uncertain = 0
        self.errors: Counter[str] = Counter()
        self.plugin_errors: Counter[str] = Counter()
        self.models_activated = 0
        self.models_rejected = 0
        #: predictions asked through the API (``api.requests`` of the status document)
        self.api_requests = 0
        self.api_by_endpoint: Counter[str] = Counter()
        self.api_errors_by_endpoint: Counter[str] = Counter()
        self.api_by_code: Counter[str] = Counter()
        self.latency = LatencyWindow(latency_window)

    def record(self, v: Verdict) -> None:
        with self._lock:
            self.inspected += 1
            self.by_class[v.label] += 1
            self.by_verdict[str(v.verdict)] += 1
            if v.uncertain:
                self.uncertain += 1
            self.latency.add(v.latency_ms)

    def api_request(self, path: str, code: int) -> None:
        """One answer of the local API: per endpoint, per status code, and as an error when >= 400."""
        endpoint = _endpoint(path)
        with self._lock:
            self.api_by_endpoint[endpoint] += 1
            self.api_by_code[str(int(code))] += 1
            if code >= 400:
                self.api_errors_by_endpoint[endpoint] += 1

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
                "verdicts": {
                    "by_class": dict(self.by_class),
                    "by_verdict": dict(self.by_verdict),
                    "uncertain": self.uncertain,
                },
                "errors": dict(self.errors),
                "plugin_errors": dict(self.plugin_errors),
                "models_activated": self.models_activated,
                "models_rejected": self.models_rejected,
                "api_requests": self.api_requests,
                "api": {
                    "by_endpoint": dict(self.api_by_endpoint),
                    "errors_by_endpoint": dict(self.api_errors_by_endpoint),
                    "by_code": dict(self.api_by_code),
                },
                "latency": {
                    **lat.percentiles(),
                    "count": lat.count,
                    "sum_ms": lat.sum_ms,
                    "buckets_ms": list(LATENCY_BUCKETS_MS),
                    "bucket_counts": list(lat.buckets),
                },
            }


def process_figures(pid: int | None = None) -> dict[str, float]:
    """CPU seconds, resident and virtual memory, start time and file descriptors of a process (this one
    by default), from ``/proc`` as the Prometheus client libraries read them. Without ``/proc`` (not
    Linux), this process's CPU time and peak memory from ``getrusage``; another process: nothing."""
    pid = os.getpid() if pid is None else pid
    try:
        return _proc_figures(pid)
    except (OSError, ValueError, IndexError):
        if pid != os.getpid():
            return {}
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_seconds": ru.ru_utime + ru.ru_stime, "resident_memory_bytes": float(ru.ru_maxrss) * 1024}


def _proc_figures(pid: int) -> dict[str, float]:
    root = f"/proc/{pid}"
    with open(f"{root}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 is fields[0]
    ticks = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    with open("/proc/stat", encoding="ascii") as fh:
        boot = next(float(line.split()[1]) for line in fh if line.startswith("btime "))
    out = {
        "cpu_seconds": (int(fields[11]) + int(fields[12])) / ticks,
        "start_time": boot + int(fields[19]) / ticks,
        "virtual_memory_bytes": float(fields[20]),
        "resident_memory_bytes": float(int(fields[21]) * page),
    }
    try:
        out["open_fds"] = float(len(os.listdir(f"{root}/fd")))
        with open(f"{root}/limits", encoding="ascii") as fh:
            line = next(x for x in fh if x.startswith("Max open files"))
        out["max_fds"] = float(line.split()[3])
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    return out
