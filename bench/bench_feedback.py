"""The feedback store's costs on this machine's disk: a feedback (one fsync'd commit, FULL) against the
floor of a bare SQLite commit of one row, FULL and NORMAL, in the same directory and run; indexing a
triggered result (the outlet's work per result, alone and in batches of 256); ``confusion_since``
over a long log. Interleaved rounds, medians and p99s.

    python bench/bench_feedback.py [--feedback 400] [--results 4000] [--rounds 4] [--dir DIR]

``--dir`` puts the files on the disk to measure (default: a temporary directory)."""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import emit
from edge_agent.feedback.rules import FeedbackRequest
from edge_agent.feedback.store import FeedbackStore


def _result(n: int) -> dict[str, Any]:
    return {
        "type": "verdict",
        "result_id": f"st-1-18c0a1b2c3d-{n}",
        "part_id": f"P-{n}",
        "verdict": "ok" if n % 7 else "defect",
        "label": "good" if n % 7 else "scratch",
        "confidence": 0.93,
        "model": "gasket",
        "model_version": 4,
        "state": "ok",
        "ts": 1_764_750_000.0 + n,
    }


def _stats(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "p50_ms": round(statistics.median(s) * 1000, 3),
        "p99_ms": round(s[min(len(s) - 1, int(len(s) * 0.99))] * 1000, 3),
        "n": len(s),
    }


def _floor(path: Path, sync: str, n: int) -> list[float]:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={sync}")
    db.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t(v) VALUES (?)", (f"row-{i}",))
        db.execute("COMMIT")
        out.append(time.perf_counter() - t0)
    db.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--feedback", type=int, default=400, help="feedback writes per round")
    ap.add_argument("--results", type=int, default=4000, help="results indexed per round")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds")
    ap.add_argument("--dir", type=Path, default=None, help="directory on the disk to measure")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        give: list[float] = []
        full: list[float] = []
        normal: list[float] = []
        one: list[float] = []
        batch: list[float] = []
        for r in range(args.rounds):
            store = FeedbackStore(root / f"fb-{r}.db", keep_results=args.results * 2, max_feedback=100_000)
            store.note_model("gasket", 4, ("good", "scratch", "dent"), "good")
            for i in range(args.results):
                t0 = time.perf_counter()
                store.add_results([_result(i)])
                one.append(time.perf_counter() - t0)
            recs = [_result(args.results + i) for i in range(args.results)]
            t0 = time.perf_counter()
            for k in range(0, len(recs), 256):
                store.add_results(recs[k : k + 256])
            batch.append((time.perf_counter() - t0) / len(recs))
            for i in range(args.feedback):
                req = FeedbackRequest(truth="defect" if i % 3 else "confirm", result_id=f"st-1-18c0a1b2c3d-{i}")
                t0 = time.perf_counter()
                store.give(req, "api")
                give.append(time.perf_counter() - t0)
            store.close()
            full += _floor(root / f"floor-full-{r}.db", "FULL", args.feedback)
            normal += _floor(root / f"floor-normal-{r}.db", "NORMAL", args.feedback)
        store = FeedbackStore(root / "log.db", keep_results=20_000, max_feedback=100_000)
        store.add_results([_result(i) for i in range(10_000)])
        for i in range(10_000):
            store.give(
                FeedbackRequest(truth="ok" if i % 2 else "defect", result_id=f"st-1-18c0a1b2c3d-{i % 5000}"), "api"
            )
        t0 = time.perf_counter()
        counts, cursor = store.confusion_since(0)
        confusion_s = time.perf_counter() - t0
        store.close()
    g, f = _stats(give), _stats(full)
    results = {
        "feedback_give": g,
        "floor_commit_full": f,
        "floor_commit_normal": _stats(normal),
        "give_over_full_floor_p50": round(g["p50_ms"] / f["p50_ms"], 2) if f["p50_ms"] else None,
        "index_one_result": _stats(one),
        "index_per_result_in_batches_of_256_us": round(statistics.median(batch) * 1e6, 1),
        "confusion_since_0_over_10000_writes_ms": round(confusion_s * 1000, 1),
        "confusion_pairs": sum(sum(c.values()) for c in counts.net().values()),
        "cursor": cursor,
    }
    return emit("feedback-store", results, {"confusion_counts_rows": results["confusion_pairs"] == 5000})


if __name__ == "__main__":
    raise SystemExit(main())
