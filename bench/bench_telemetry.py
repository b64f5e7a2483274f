"""Telemetry costs, measured side by side in one run.

* ingest rate: N realistic windows published at QoS 1 to a Mosquitto started for the run, received
  by a raw paho subscriber that only counts them (baseline) and by the ingest service (schema
  validation, dedupe, SQLite store, alert engine), in alternating rounds; windows/s and the ratio.
  Also the ingest path without MQTT (``Ingestor.handle`` in a loop), and the writer's own CPU per
  window in batches of 1,000 (validate; store and alert engine), with its GC pause and without.
* outbox write cost per window: ``Outbox.put`` of an encoded window (WAL, synchronous=NORMAL, cap and
  drop policy) against the floor of a bare SQLite INSERT in the same mode and against a durable
  file per window (``write_atomic``: fsync + rename); plus building and encoding a window, and the
  per-frame cost of ``TelemetryPlugin.on_result`` on the inference thread.
* ``--drift``: the drift detector on the synthetic line (false alarms on undrifted windows,
  detection delay under a darker line) for window sizes and noise levels; the figures of
  docs/drift.md. Builds a v1 model with the converters pipeline first (about a minute).

    python bench/bench_telemetry.py [--windows 3000] [--rounds 3] [--drift]
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import emit, time_per_call  # noqa: E402
from cloud_registry.telemetry.alerts import AlertEngine  # noqa: E402
from cloud_registry.telemetry.ingest import Ingestor, IngestService  # noqa: E402
from cloud_registry.telemetry.store import TelemetryStore  # noqa: E402
from edge_agent.outbox.store import Outbox  # noqa: E402
from edge_agent.plugins import FrameResult  # noqa: E402
from edge_agent.preprocessing import STAT_RANGES  # noqa: E402
from edge_agent.telemetry.drift import Calibrator, reference_histogram, reference_input_stats  # noqa: E402
from edge_agent.telemetry.privacy import LaplaceNoise  # noqa: E402
from edge_agent.telemetry.windows import (  # noqa: E402
    CONF_EDGES,
    DriftContext,
    ModelKey,
    RawWindow,
    WindowAggregator,
    build_window,
)
from edge_agent.verdict import Verdict  # noqa: E402
from edgeline.core.fsutil import write_atomic  # noqa: E402
from edgeline.core.mqtt_link import LinkSettings  # noqa: E402
from edgeline.core.protocol.manifest import Reference  # noqa: E402
from edgeline.core.protocol.topics import Topics  # noqa: E402
from edgeline.demo.broker import MosquittoBroker  # noqa: E402

TOPICS = Topics()
LABELS = ("ok", "scratch", "dent", "missing_hole")
KEY = ModelKey("plates", 1, "a" * 64)


def frame_result(rng: np.random.Generator, i: int) -> FrameResult:
    label = LABELS[int(rng.integers(4))]
    v = Verdict(i, "ok" if label == "ok" else "defect", label, float(rng.uniform(0.5, 1)), False, "plates", 1,
                float(rng.uniform(1, 4)), 0.0)  # fmt: skip
    stats = {n: float(rng.uniform(lo, hi)) for n, (lo, hi) in STAT_RANGES.items()}
    return FrameResult(v, np.zeros(4, np.float32), stats, KEY.sha256)


def raw_window(rng: np.random.Generator, frames: int = 60) -> RawWindow:
    agg = WindowAggregator(window_s=1e9)
    for i in range(frames):
        agg.add(frame_result(rng, i), KEY, LABELS)
    w = agg.flush()
    assert w is not None
    return w


def context() -> DriftContext:
    """A manifest-like reference, so windows carry all six drift entries as on a real line."""
    rng = np.random.default_rng(5)
    stats = [{n: float(rng.uniform(lo, hi)) for n, (lo, hi) in STAT_RANGES.items()} for _ in range(500)]
    conf = reference_histogram(rng.uniform(0.5, 1.0, 500), CONF_EDGES)
    ref = Reference(input_stats=reference_input_stats(stats), confidence=conf, class_mix=dict.fromkeys(LABELS, 0.25))
    return DriftContext(ref, LABELS)


def encoded_windows(n: int) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(0)
    cal = Calibrator()
    base = raw_window(rng)
    ctx = context()
    out = []
    for i in range(n):
        w = build_window(base, key=uuid.uuid4().hex, device=f"{i % 50:032x}", group="hall-1", ctx=ctx, calibrator=cal)
        out.append((TOPICS.device_telemetry(f"dev-{i % 50}"), w.encode()))
    return out


class Publisher:
    def __init__(self, port: int) -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=mqtt.MQTTv5)
        self.c.max_inflight_messages_set(256)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def send(self, msgs: list[tuple[str, bytes]]) -> None:
        infos = [self.c.publish(t, p, qos=1) for t, p in msgs]
        for info in infos:
            info.wait_for_publish(30)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def raw_round(port: int, msgs: list[tuple[str, bytes]], pub: Publisher) -> float:
    n = len(msgs)
    done = threading.Event()
    got = [0]

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        got[0] += 1
        if got[0] == n:
            done.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    sub.subscribe(TOPICS.all_device_telemetry(), qos=1)
    subscribed.wait(10)
    t0 = time.perf_counter()
    pub.send(msgs)
    done.wait(120)
    dt = time.perf_counter() - t0
    sub.loop_stop()
    sub.disconnect()
    assert got[0] == n, f"raw subscriber got {got[0]} of {n}"
    return n / dt


def ingest_round(port: int, msgs: list[tuple[str, bytes]], pub: Publisher, tmp: Path, r: int) -> float:
    store = TelemetryStore(tmp / f"ingest-{r}.db")
    engine = AlertEngine(store)
    svc = IngestService(
        Ingestor(store, TOPICS, listeners=[engine.on_window]),
        LinkSettings(port=port, client_id=f"bench-ingest-{r}", clean_start=True),
        shared=False,
    )
    svc.start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    pub.send(msgs)
    deadline = time.monotonic() + 120
    while svc.ingestor.stats.received < len(msgs) and time.monotonic() < deadline:
        time.sleep(0.002)
    dt = time.perf_counter() - t0
    svc.stop()
    assert store.count() == len(msgs), f"stored {store.count()} of {len(msgs)}: {svc.ingestor.stats.as_dict()}"
    store.close()
    return len(msgs) / dt


def outbox_costs(tmp: Path, n: int) -> dict[str, Any]:
    msgs = encoded_windows(n)
    size = statistics.median(len(p) for _, p in msgs)
    ob = Outbox(tmp / "outbox.db", max_bytes=8 * 1024 * 1024)  # small cap: the drop policy works too
    it = iter(range(10**9))

    def put() -> None:
        i = next(it)
        t, p = msgs[i % n]
        ob.put(t, p, kind="telemetry", key=f"k{i}")

    db = sqlite3.connect(tmp / "floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE m(id INTEGER PRIMARY KEY, key TEXT UNIQUE, topic TEXT, payload BLOB)")
    it2 = iter(range(10**9))

    def floor() -> None:
        i = next(it2)
        t, p = msgs[i % n]
        db.execute("INSERT INTO m(key, topic, payload) VALUES (?,?,?)", (f"k{i}", t, p))

    files = tmp / "files"
    it3 = iter(range(10**9))

    def durable_file() -> None:
        i = next(it3)
        write_atomic(files / f"{i}.json", msgs[i % n][1])

    rng = np.random.default_rng(1)
    base = raw_window(rng)
    cal = Calibrator()
    ctx = context()

    def build() -> None:
        build_window(base, key=uuid.uuid4().hex, device="f" * 32, group="g", ctx=ctx, calibrator=cal).encode()

    agg = WindowAggregator(window_s=1e12)
    results = [frame_result(rng, i) for i in range(256)]
    it4 = iter(range(10**9))

    def on_result() -> None:
        agg.add(results[next(it4) % 256], KEY, LABELS)

    timed: dict[str, dict[str, float]] = {
        "outbox_put": time_per_call(put, repeat=5, number=400),
        "sqlite_insert_floor": time_per_call(floor, repeat=5, number=400),
        "file_per_window_fsync": time_per_call(durable_file, repeat=3, number=50, warmup=2),
        "build_and_encode_window": time_per_call(build, repeat=5, number=200),
        "aggregate_one_frame": time_per_call(on_result, repeat=5, number=5000),
    }
    put_s = timed["outbox_put"]["median_s"]
    out: dict[str, Any] = {"window_bytes_median": size, **timed, "outbox_dropped_during_bench": ob.dropped()}
    out["ratio_put_vs_sqlite_floor"] = put_s / timed["sqlite_insert_floor"]["median_s"]
    out["ratio_put_vs_file_fsync"] = put_s / timed["file_per_window_fsync"]["median_s"]
    return out


def ingest_pure(tmp: Path, n: int) -> float:
    msgs = encoded_windows(n)
    store = TelemetryStore(tmp / "pure.db")
    ing = Ingestor(store, TOPICS, listeners=[AlertEngine(store).on_window])
    t0 = time.perf_counter()
    for t, p in msgs:
        ing.handle(t, p)
    return n / (time.perf_counter() - t0)


def ingest_path_costs(tmp: Path, n: int, batch: int = 1000) -> dict[str, float]:
    """The ingest writer's own work per window, without MQTT: batches of ``batch`` messages
    validated (``Ingestor.prepare``), then stored in one transaction with the alert engine
    (``Ingestor.commit``) and freed; CPU microseconds per window (``time.process_time``), with the
    cyclic GC paused for each batch as the writer runs it, and without the pause."""
    from cloud_registry.telemetry.ingest import gc_paused

    out: dict[str, float] = {}
    for paused in (True, False):
        msgs = encoded_windows(n)
        store = TelemetryStore(tmp / f"path-{'paused' if paused else 'running'}.db")
        ing = Ingestor(store, TOPICS, listeners=[AlertEngine(store).on_window])
        validate = commit = total = 0.0
        for i in range(0, n, batch):
            t0 = time.process_time()
            with gc_paused() if paused else contextlib.nullcontext():
                prepared = [ing.prepare(t, p) for t, p in msgs[i : i + batch]]
                t1 = time.process_time()
                ing.commit(prepared)
                t2 = time.process_time()
                del prepared
            validate, commit, total = validate + t1 - t0, commit + t2 - t1, total + time.process_time() - t0
        store.close()
        name = "gc_paused" if paused else "gc_running"
        out |= {f"{name}_validate_us": validate / n * 1e6, f"{name}_store_and_alerts_us": commit / n * 1e6}
        out[f"{name}_total_us"] = total / n * 1e6
    return out


def drift_figures() -> dict[str, Any]:
    from converters.keys import KeyPaths, init_keys
    from converters.pipeline import build_bundle
    from converters.synth import Lighting, generate_dataset
    from edge_agent.inference import load_and_check
    from edgeline.core.protocol.signing import TrustStore
    from edgeline.demo.drift_eval import evaluate_drift

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        init_keys(root / "keys")
        generate_dataset(root / "data", per_class=150, seed=1)
        build_bundle(root / "data", root / "v1", name="plates", version=1, key_dir=root / "keys")
        model = load_and_check(root / "v1", TrustStore.load(KeyPaths(root / "keys").trust))
        out: dict[str, Any] = {}
        for fpw in (25, 50, 100):
            ev = evaluate_drift(model, frames_per_window=fpw, normal_windows=200, drift_trials=10, seed=fpw)
            out[f"frames_{fpw}"] = ev.to_dict()
        for name, light in (("mild_-15", Lighting(-15.0, 1.0)), ("contrast_0.8", Lighting(0.0, 0.8))):
            ev = evaluate_drift(model, frames_per_window=50, normal_windows=20, drift_trials=10, lighting=light)
            out[f"lighting_{name}"] = ev.to_dict()
        for eps in (4.0, 1.0):
            for fpw in (50, 200):
                noise = LaplaceNoise(eps, rng=np.random.default_rng(int(eps * 1000 + fpw)))
                ev = evaluate_drift(model, frames_per_window=fpw, normal_windows=60, drift_trials=5, noise=noise)
                out[f"noise_eps{eps:g}_frames_{fpw}"] = ev.to_dict()
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--drift", action="store_true", help="also run the drift evaluation (slow)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        # Mosquitto's default max_queued_messages (1000) DROPS QoS 1 messages queued for a subscriber
        # that falls behind a burst; an ingest deployment must lift it (docs/benchmarks.md)
        broker = MosquittoBroker(tmp / "broker", persistence=False, extra_config="max_queued_messages 0\n")
        broker.start()
        try:
            msgs = encoded_windows(args.windows)
            pub = Publisher(broker.port)
            raw, ing = [], []
            for r in range(args.rounds):
                raw.append(raw_round(broker.port, msgs, pub))
                msgs = encoded_windows(args.windows)  # fresh keys: every round stores everything
                ing.append(ingest_round(broker.port, msgs, pub, tmp, r))
            pub.close()
        finally:
            broker.stop()
        results: dict[str, Any] = {
            "windows_per_round": args.windows,
            "raw_paho_windows_per_s": raw,
            "ingest_windows_per_s": ing,
            "ratio_ingest_vs_raw_median": statistics.median(ing) / statistics.median(raw),
            "ingest_without_mqtt_windows_per_s": ingest_pure(tmp, args.windows),
            "ingest_writer_cpu_us_per_window": ingest_path_costs(tmp, max(args.windows, 5000)),
            "outbox": outbox_costs(tmp, 2000),
        }
    if args.drift:
        results["drift"] = drift_figures()
    checks = {
        # 500 windows/s is 30,000 devices sending one window a minute, per ingest worker
        "ingest_at_least_500_windows_per_s": statistics.median(results["ingest_windows_per_s"]) >= 500,
        "ingest_at_least_a_fifth_of_raw_paho": results["ratio_ingest_vs_raw_median"] >= 0.2,
        "outbox_put_under_1ms": results["outbox"]["outbox_put"]["median_s"] < 1e-3,
    }
    return emit("telemetry", results, checks)


if __name__ == "__main__":
    raise SystemExit(main())
