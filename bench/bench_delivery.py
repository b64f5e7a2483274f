"""Delivery of a 5 MB model to 50 simulated agents through a local Mosquitto, against a raw baseline
measured side by side in the same run.

* baseline: the same bytes, in the same chunk size, published at QoS 1 and fanned out to 50 plain
  paho subscribers (one client each); time until all 50 hold every chunk.
* edgeline: the registry's publisher puts the artifact (retained chunks) and one signed desired
  state per device on the broker; 50 agents (a real ``UpdaterPlugin`` + ``CloudLink`` each, one MQTT
  client each, a simulated inspection loop) verify the signature, subscribe only to the chunks they
  miss, check every chunk's hash and the whole artifact's, stage it in an A/B slot, load it, run
  the self-test and a trial of live frames, and commit.
  Reported: time until all 50 hold the VERIFIED artifact (check: <= 1.5x baseline), time until all
  50 COMMITTED, and the median per-device breakdown (download, verify, stage, load, self-test, trial).
* floor: the baseline's subscribers, each also checking every chunk's sha256 and writing it into a
  file at its offset: the least work any device must do before it can say it holds a verified
  artifact. It shows how much of edgeline's figure is that work and how much is edgeline's own.

All three arms run in the same layout: ``--procs`` worker processes (default 10, five clients each)
share the 50 clients. A real fleet is 50 processes on 50 machines; 25 agents behind one interpreter lock
(``--procs 2``) measure lock contention more than delivery, 50 processes on two cores measure the
scheduler. Each device is held between VERIFIED and staging until all are VERIFIED (``--no-hold``
lets early devices load and trial while others still download, on the same two cores).
The simulated cameras feed frames only while a trial runs (50 free-running inspection loops on a
2-core machine would measure CPU contention, not delivery). Rounds alternate baseline / floor /
edgeline; medians are compared.

    python bench/bench_delivery.py [--devices 50] [--size-mb 5] [--rounds 3] [--chunk-kib 128] [--procs 10]
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import emit  # noqa: E402

if TYPE_CHECKING:
    from cloud_registry.publisher import Publisher

# Every worker process (spawned) runs this module's top level again. The baseline and floor workers
# are meant to be plain paho subscribers: with edgeline's modules imported here they carried a heap
# of pydantic models and such, and Python's garbage collector walked it (11% of the floor arm's CPU,
# measured with perf). So edgeline is imported where it is used, never at the top.

PHASES = ("download", "verify", "stage", "load", "selftest", "trial")


def padded(data: bytes, size: int) -> bytes:
    """A real ONNX model grown to ``size`` bytes with an unused initializer of random bytes."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(data)
    pad = np.random.default_rng(0).integers(0, 255, size=max(0, size - len(data) - 64), dtype=np.uint8)
    m.graph.initializer.append(numpy_helper.from_array(pad, "padding"))
    return m.SerializeToString()


# -- worker processes ------------------------------------------------------------------------------
def subscribers_worker(
    port: int, tag: str, n: int, total: int, protocol: str, floor: tuple[str, list[str], int] | None, conn: Any
) -> None:
    """Baseline: ``n`` plain paho subscribers; report when each holds all ``total`` chunks.

    ``floor=(workdir, chunk_sha256, chunk_size)`` makes them do the least any verifying device must
    do with each chunk: check its sha256 against the expected one and write it into a file at its
    offset (no signature, no state record, no events). Nothing that skips these can call the artifact
    verified and held, so this arm is the floor under edgeline's figure on this machine."""
    import hashlib

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    finished: list[float] = []
    lock = threading.Lock()
    subscribed = threading.Semaphore(0)
    clients = []
    fds: list[int] = []
    for i in range(n):
        got: dict[int, bytes] = {}
        proto = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{tag}-{i}", protocol=proto)
        fd = -1
        if floor is not None:
            fd = os.open(Path(floor[0]) / f"{tag}-{i}.part", os.O_RDWR | os.O_CREAT, 0o644)
            fds.append(fd)

        def on_message(c: Any, u: Any, msg: Any, got: dict[int, bytes] = got, fd: int = fd) -> None:
            index = int(msg.topic.rsplit("/", 1)[1])
            if floor is not None:
                if hashlib.sha256(msg.payload).hexdigest() != floor[1][index]:
                    raise SystemExit(f"floor arm: chunk {index} does not match its hash")
                os.pwrite(fd, msg.payload, index * floor[2])
                got[index] = b""
            else:
                got[index] = msg.payload
            if len(got) == total:
                with lock:
                    finished.append(time.time())

        c.on_message = on_message
        c.on_subscribe = lambda *a: subscribed.release()
        c.on_connect = lambda c, *a: c.subscribe("bench/raw/chunks/+", qos=1)
        c.connect("127.0.0.1", port)
        c.loop_start()
        clients.append(c)
    for _ in range(n):
        subscribed.acquire(timeout=60)
    conn.send("ready")
    deadline = time.monotonic() + 120
    while len(finished) < n and time.monotonic() < deadline:
        time.sleep(0.005)
    conn.send(list(finished))
    for c in clients:
        c.disconnect()
        c.loop_stop()
    for fd in fds:
        os.close(fd)


def hold_after_verified(hold: Any) -> dict[str, float]:
    """Bench only: stop each device between VERIFIED and staging until every device of the run is
    VERIFIED, so the delivery measurement is not slowed by other simulated devices loading models
    on the same two cores (real devices have a CPU each). Returns device id -> seconds held."""
    held: dict[str, float] = {}
    if hold is None:
        return held
    from edge_agent.updater.slots import SlotDisk

    counter, everyone, total = hold
    original = SlotDisk.stage

    def stage(self: Any, *a: Any, **k: Any) -> Any:
        t = time.monotonic()
        with counter.get_lock():
            counter.value += 1
            if counter.value == total:
                everyone.set()
        everyone.wait(120)
        held[self.state_dir.name] = time.monotonic() - t
        return original(self, *a, **k)

    SlotDisk.stage = stage  # type: ignore[method-assign]
    return held


def agents_worker(
    port: int, ids: list[str], workdir: str, trust: str, window: int, protocol: str, hold: Any, conn: Any
) -> None:
    """edgeline: one UpdaterPlugin + CloudLink + simulated loop per device id; report their events."""
    logging.basicConfig(level=logging.ERROR)
    from edge_agent.cloud_link import CloudLink, DeviceIdentity
    from edge_agent.updater.events import ListEventPublisher
    from edge_agent.updater.machine import Identity
    from edge_agent.updater.plugin import UpdaterPlugin
    from firmware_configs.cloud_section import CloudSection
    from firmware_configs.updater_section import UpdaterSection
    from tests.delivery.sim_agent import SimAgent
    from tests.factories import tiny_frames

    frames = tiny_frames(4, seed=3)[0]
    held = hold_after_verified(hold)
    cloud = CloudSection(port=port, heartbeat_s=30.0, protocol="5" if protocol == "5" else "3.1.1")
    devices = []
    for dev_id in ids:
        cfg = UpdaterSection(
            state_dir=str(Path(workdir) / dev_id),
            trust_file=trust,
            trial_frames=5,
            trial_timeout_s=60.0,
            trial_latency_budget_ms=1000.0,
            min_free_bytes=0,
            chunk_window=window,
        )
        link = CloudLink(cloud, DeviceIdentity(dev_id, "bench", ("bench",)))
        events = ListEventPublisher()
        plugin = UpdaterPlugin(cfg, Identity(dev_id, "bench", frozenset({"bench"})), link, events)
        agent = SimAgent(dev_id, frames)
        link.start()
        agent.add(plugin)
        agent.run(0.01, gate=lambda p=plugin: p.state == "TRIAL")
        devices.append((agent, plugin, link, events))
    for _, _, link, _ in devices:
        link.link.wait_connected(60)
    conn.send("ready")
    seq = conn.recv()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        done = ("committed", "rolled_back", "rejected")
        if all(any(e.kind in done and e.sequence == seq for e in ev.events) for _, _, _, ev in devices):
            break
        time.sleep(0.01)
    report = []
    for _, p, _, ev in devices:
        kinds = ("downloading", "verified", "staged", "committed")
        first = {k: min((e.ts for e in ev.events if e.kind == k), default=math.nan) for k in kinds}
        timings = dict(next((e.timings for e in ev.events if e.kind == "committed"), {}))
        if "stage" in timings:
            timings["stage"] = max(0.0, timings["stage"] - held.get(p.me.device_id, 0.0))
        kinds = [f"{e.kind.value}:{e.sequence}:{e.reason}" for e in ev.events]
        report.append({"state": p.state.value, **first, "timings": timings, "events": kinds})
    conn.send(report)
    for agent, _, link, _ in devices:
        agent.stop()
        link.stop()


def start_workers(target: Any, args_per_worker: list[tuple[Any, ...]]) -> list[tuple[Any, Any]]:
    ctx = mp.get_context("spawn")
    out = []
    for args in args_per_worker:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=target, args=(*args, child), daemon=True)
        proc.start()
        out.append((proc, parent))
    for _, conn in out:
        if not conn.poll(180) or conn.recv() != "ready":
            raise SystemExit("a worker process did not get ready")
    return out


def split(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[i::parts] for i in range(parts)]


# -- the two arms ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setup:
    port: int
    devices: int
    procs: int
    protocol: str
    window: int
    work: Path
    trust: str
    hold: bool


def baseline_round(st: Setup, chunks: list[bytes], rnd: int, floor: tuple[list[str], int] | None = None) -> float:
    """Plain subscribers (``floor`` None) or the floor arm (sha256 check and write of every chunk)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    arm = "floor" if floor else "base"
    workdir = st.work / f"{arm}{rnd}"
    workdir.mkdir(parents=True, exist_ok=True)
    fl = (str(workdir), *floor) if floor else None
    counts = [len(x) for x in split(list(range(st.devices)), st.procs)]
    workers = start_workers(
        subscribers_worker,
        [(st.port, f"{arm}{rnd}-{w}", c, len(chunks), st.protocol, fl) for w, c in enumerate(counts)],
    )
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{arm}-pub-{rnd}")
    pub.connect("127.0.0.1", st.port)
    pub.loop_start()
    t0 = time.time()
    infos = [pub.publish(f"bench/raw/chunks/{i}", c, qos=1) for i, c in enumerate(chunks)]
    finished: list[float] = []
    for proc, conn in workers:
        finished += conn.recv()
        proc.join(30)
    for info in infos:
        info.wait_for_publish(10)
    pub.disconnect()
    pub.loop_stop()
    # unwritten page-cache data of these files would be flushed in the middle of the next arm
    shutil.rmtree(workdir, ignore_errors=True)
    if len(finished) != st.devices:
        raise SystemExit(f"{arm}: only {len(finished)} of {st.devices} subscribers got everything")
    return max(finished) - t0


def edgeline_round(st: Setup, pub: Publisher, manifest: Any, data: bytes, rnd: int) -> dict[str, Any]:
    from cloud_registry.publisher import reissue

    ids = [f"bench-{rnd}-{i:03d}" for i in range(st.devices)]
    ctx = mp.get_context("spawn")
    hold = (ctx.Value("i", 0), ctx.Event(), st.devices) if st.hold else None
    workers = start_workers(
        agents_worker,
        [(st.port, g, str(st.work / f"r{rnd}"), st.trust, st.window, st.protocol, hold) for g in split(ids, st.procs)],
    )
    seq = rnd + 1
    t0 = time.time()
    pub.publish_deployment(manifest, data, ((d, reissue(manifest, sequence=seq, devices=(d,))) for d in ids))
    for _, conn in workers:
        conn.send(seq)
    reports: list[dict[str, Any]] = []
    for proc, conn in workers:
        reports += conn.recv()
        proc.join(60)
    # each round starts from the same disk and page-cache state: the staged models would otherwise stay
    # cached, and the next rounds' writes land on memory this VM has not touched yet (much slower)
    shutil.rmtree(st.work / f"r{rnd}", ignore_errors=True)
    bad = [(r["state"], r["events"]) for r in reports if r["state"] != "COMMITTED" or math.isnan(r["committed"])]
    if bad:
        raise SystemExit(f"not every device committed: {bad}")
    # when each device reached each state (seconds after the publisher started): the spread of
    # "downloading" is the offer phase (desired state received, verified, chunks subscribed, recorded)
    timeline = {}
    for k in ("downloading", "verified", "committed"):
        xs = sorted(r[k] - t0 for r in reports)
        timeline[k] = {q: xs[min(len(xs) - 1, int(len(xs) * f))] for q, f in (("p10", 0.1), ("p50", 0.5), ("p90", 0.9))}
        timeline[k]["max"] = xs[-1]
    return {
        "verified_s": max(r["verified"] for r in reports) - t0,
        "committed_s": max(r["committed"] for r in reports) - t0,
        "timings": [r["timings"] for r in reports],
        "timeline": timeline,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--size-mb", type=float, default=5.0)
    ap.add_argument("--chunk-kib", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--procs",
        type=int,
        default=10,
        help="worker processes per arm (10: five clients each; 2 puts 25 agents behind one interpreter lock)",
    )
    ap.add_argument("--window", type=int, default=32, help="chunk subscriptions in flight per device")
    ap.add_argument("--protocol", choices=["5", "3.1.1"], default="5", help="MQTT version of both arms")
    ap.add_argument(
        "--no-hold",
        action="store_true",
        help="let early devices load and trial while others still download (they share this machine's CPUs)",
    )
    ap.add_argument("--no-floor", action="store_true", help="skip the floor arm (sha256 check + write per chunk)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    from cloud_registry.publisher import Publisher
    from converters.keys import KeyPaths, init_keys, load_signing_key
    from edge_agent.bundle import read_envelope
    from edgeline.core.mqtt_link import LinkSettings, MqttLink
    from edgeline.core.protocol.manifest import artifact_for, parse_manifest
    from edgeline.core.protocol.topics import Topics
    from edgeline.demo.broker import MosquittoBroker
    from tests.factories import write_tiny_bundle

    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        work = Path(tmp)
        init_keys(work / "keys")
        key = load_signing_key(work / "keys")
        bundle = write_tiny_bundle(work / "bundle", key)
        base = parse_manifest(read_envelope(bundle)["body"])
        data = padded((bundle / "model.onnx").read_bytes(), int(args.size_mb * 1024 * 1024))
        body = base.to_body()
        body["artifact"] = artifact_for(data, chunk_size=args.chunk_kib * 1024).model_dump(mode="json")
        manifest = parse_manifest(body)
        chunk = manifest.artifact.chunk_size
        chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
        trust = str(KeyPaths(work / "keys").trust)

        broker = MosquittoBroker(work / "mosquitto", persistence=False)
        broker.start()
        link = MqttLink(LinkSettings(port=broker.port, client_id="bench-registry", clean_start=True))
        link.connect(10)
        pub = Publisher(link, Topics(), key)
        st = Setup(broker.port, args.devices, args.procs, args.protocol, args.window, work, trust, not args.no_hold)
        base_s: list[float] = []
        floor_s: list[float] = []
        ours: list[dict[str, Any]] = []
        floor_work = (list(manifest.artifact.chunk_sha256), chunk)  # what the floor arm checks against
        try:
            for rnd in range(args.rounds):
                base_s.append(baseline_round(st, chunks, rnd))
                if not args.no_floor:
                    floor_s.append(baseline_round(st, chunks, rnd, floor_work))
                ours.append(edgeline_round(st, pub, manifest, data, rnd))
                # the next round starts with no retained artifact, like the baseline
                pub.retire_artifact(manifest.artifact.sha256, manifest.artifact.chunk_count)
        finally:
            link.stop()
            broker.kill()

    med = statistics.median
    breakdown = {ph: med([t.get(ph, 0.0) for r in ours for t in r["timings"]]) for ph in PHASES}
    b, v, c = med(base_s), med([r["verified_s"] for r in ours]), med([r["committed_s"] for r in ours])
    f = med(floor_s) if floor_s else math.nan
    timeline = {
        k: {q: round(med([r["timeline"][k][q] for r in ours]), 3) for q in ("p10", "p50", "p90", "max")}
        for k in ("downloading", "verified", "committed")
    }
    results = {
        "devices": args.devices,
        "procs_per_arm": args.procs,
        "protocol": args.protocol,
        "held_at_verified": not args.no_hold,
        "artifact_bytes": len(data),
        "chunk_bytes": chunk,
        "chunks": len(chunks),
        "window": args.window,
        "rounds": args.rounds,
        "baseline_all_hold_s": round(b, 3),
        "edgeline_all_verified_s": round(v, 3),
        "edgeline_all_committed_s": round(c, 3),
        "verified_over_baseline": round(v / b, 3),
        # the floor arm: plain subscribers that only check each chunk's sha256 and write it to a file
        "floor_all_verified_s": round(f, 3),
        "floor_over_baseline": round(f / b, 3),
        "verified_over_floor": round(v / f, 3),
        "verified_over_baseline_per_round": [round(r["verified_s"] / x, 3) for r, x in zip(ours, base_s, strict=True)],
        "committed_over_baseline": round(c / b, 3),
        "per_device_median_s": {k: round(x, 4) for k, x in breakdown.items()},
        # percentiles over the devices of when each reached a state, median over the rounds
        "edgeline_timeline_s": timeline,
        "rounds_detail": {
            "baseline_s": [round(x, 3) for x in base_s],
            "floor_s": [round(x, 3) for x in floor_s],
            "verified_s": [round(r["verified_s"], 3) for r in ours],
            "committed_s": [round(r["committed_s"], 3) for r in ours],
        },
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    return emit("delivery", results, {"verified_within_1.5x_baseline": v <= 1.5 * b})


if __name__ == "__main__":
    raise SystemExit(main())
