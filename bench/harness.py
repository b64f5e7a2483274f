"""Tiny benchmark harness: time callables side by side and print one JSON document.

Speed lives here, never in tests. Every script measures its subject and its baseline in the same
process and run, and reports ratios, so numbers from a busy or a different machine stay comparable.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def time_per_call(fn: Callable[[], Any], *, repeat: int = 5, number: int = 100, warmup: int = 10) -> dict[str, float]:
    """Median and best seconds per call over ``repeat`` rounds of ``number`` calls."""
    for _ in range(warmup):
        fn()
    rounds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        rounds.append((time.perf_counter() - t0) / number)
    return {"median_s": statistics.median(rounds), "best_s": min(rounds)}


def emit(name: str, results: dict[str, Any], checks: dict[str, bool] | None = None) -> int:
    """Print the JSON report; return a non-zero exit code when a declared check failed."""
    doc = {"benchmark": name, "machine": machine(), "results": results, "checks": checks or {}}
    json.dump(doc, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0 if all((checks or {}).values()) else 1
