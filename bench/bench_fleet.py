"""A fleet of 1,000 light simulated devices on a broker (Mosquitto, one nats-server node, a 3-node
NATS cluster or a RabbitMQ node: the tests' own servers of tests/brokers/servers.py, never the
system's), the telemetry ingest draining it, and a rollout to it.

**ingest** arm. Devices (``bench/fleet_sim.py device``, 4 processes of 250 MQTT 3.1.1 connections,
spread over the cluster's nodes) speak the real protocol: realistic windows on their partitioned
telemetry topic (4 partitions), QoS 1, persistent sessions, end-to-end acknowledgements on their own
``acks`` topic. Each arm registers its consumers' persistent sessions, the fleet publishes
``--windows`` windows per device while they are away (a fleet draining its outboxes after an
outage), and the consumers connect at once on ``go``; the time until the last window is STORED
(committed) is the arm's figure, and the CPU each process used meanwhile is read from /proc
(consumers, broker, PostgreSQL backends of the workers). Arms, interleaved in each round: the raw
paho subscriber (baseline: QoS 1, one session, automatic PUBACK, counts only) and, with ``--floors``,
two floors beside it: ``raw_manual`` (the same with paho's manual ack per message) and ``floor`` (the
ingest's own MQTT path alone: its sessions, one per partition filter, and its PUBACKs in batches,
nothing parsed or stored); the ingest with 1, 2 and 4 workers (one process
each, ``IngestService`` with the alert engine, split by partition, a session per partition filter,
MQTT 3.1.1, no shared subscriptions) into SQLite (one file) and into PostgreSQL (one schema). Every
arm stores into a fresh database.

**rollout** arm (``bench/fleet_rollout.py``): the registry, publisher, fleet view and rollout runner
in this process, a tiny signed model to the whole fleet in waves (``--canary``, ``--waves``) until
every device is COMMITTED: time, each wave's, the registry's CPU, and the fleet view's freshness;
the subscriptions the broker refused and retried, and the slowest devices' own account
(``--rollout-timeout``; ``--no-resubscribe``: devices that never ask again for a refused
subscription, the NATS cluster stall).

    python bench/bench_fleet.py [--devices 1000] [--windows 10] [--rounds 2] [--pg postgresql://...]
        [--broker mosquitto|nats|nats-cluster|rabbitmq] [--arms ingest,rollout] [--floors raw_manual,floor]

Each ingest arm also reports its workers' CPU per window by thread role (the writer: validate,
store, acknowledge; paho's network threads) and the median CPU per window of every arm's processes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import emit  # noqa: E402
from edgeline.demo.broker import MosquittoBroker  # noqa: E402

PARTITIONS = 4
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def group_cpu_s(pgids: list[int]) -> float:
    """CPU of every process in these process groups (a broker's script and the VM it starts)."""
    total = 0.0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in pgids:
            total += (int(fields[11]) + int(fields[12])) / TICK
    return total


@dataclass
class Broker:
    """The broker under test: its MQTT ports (the fleet is spread over them, consumers use the
    first), what CPU is its, and how long a session's consumers keep receiving after it went away."""

    handle: Any
    ports: list[int]
    pids: list[int]
    settle_s: float = 0.0
    #: the pids lead process groups of their own: count every process in them
    groups: bool = True

    @property
    def port(self) -> int:
        return self.ports[0]

    def cpu(self) -> float:
        return group_cpu_s(self.pids) if self.groups else sum(cpu_s(p) for p in self.pids)


@dataclass
class Proc:
    p: subprocess.Popen[str]

    @classmethod
    def start(cls, *args: str) -> Proc:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        p = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "fleet_sim.py"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        return cls(p)

    def send(self, line: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def read(self, expect: str) -> list[str]:
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        words = line.split()
        if not words or words[0] != expect:
            raise RuntimeError(f"expected {expect!r} from {self.p.args!r}, got {line!r}")
        return words[1:]

    def close(self) -> None:
        try:
            self.send("quit")
            self.p.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.p.kill()


class Fleet:
    def __init__(self, devices: int, ports: list[int], procs: int = 4) -> None:
        per = devices // procs
        self.devices = per * procs
        self.procs = [
            Proc.start("device", str(i * per), str(per), str(ports[i % len(ports)]), str(PARTITIONS))
            for i in range(procs)
        ]
        for p in self.procs:
            p.read("ready")

    def publish(self, windows: int) -> float:
        t0 = time.perf_counter()
        for p in self.procs:
            p.send(f"pub {windows}")
        for p in self.procs:
            p.read("published")
        return time.perf_counter() - t0

    def acks(self) -> int:
        for p in self.procs:
            p.send("acks")
        return sum(int(p.read("acks")[0]) for p in self.procs)

    def close(self) -> None:
        for p in self.procs:
            p.close()


def pg_backends(url: str, app: str) -> list[int]:
    import psycopg

    dsn = url.split("?", maxsplit=1)[0]
    with psycopg.connect(dsn, autocommit=True) as db:
        rows = db.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)).fetchall()
    return [int(r[0]) for r in rows]


#: the subscribers that only count (``fleet_sim.py``): the goal's baseline and two floors beside it
FLOORS = {
    "raw": ("raw", "auto"),  # the baseline: one session, paho's own PUBACK
    "raw_manual": ("raw", "manual"),  # one session, paho's manual ack per message
    "floor": ("floor",),  # the ingest's sessions and batched manual acks, nothing parsed or stored
}


def raw_arm(broker: Broker, fleet: Fleet, windows: int, live: bool, kind: str = "raw") -> dict[str, Any]:
    role, *extra = FLOORS[kind]
    cid = f"bench-{kind.replace('_', '-')}-{uuid.uuid4().hex[:8]}"
    extra = [str(PARTITIONS)] if role == "floor" else extra
    raw = Proc.start(role, str(broker.port), cid, *extra)
    raw.read("ready")
    time.sleep(broker.settle_s)
    total = fleet.devices * windows
    publish_s = 0.0 if live else fleet.publish(windows)
    c0, b0 = cpu_s(raw.p.pid), broker.cpu()
    t0 = time.perf_counter()
    raw.send(f"go {total}")
    raw.read("started")
    connect_s = time.perf_counter() - t0
    if live:
        t0 = time.perf_counter()
        publish_s = fleet.publish(windows)
    got = int(raw.read("done")[0])
    dt = time.perf_counter() - t0
    out: dict[str, Any] = {"windows": got, "seconds": dt, "windows_per_s": got / dt, "publish_s": publish_s}
    out |= {"cpu_s": {"consumers": cpu_s(raw.p.pid) - c0, "broker": broker.cpu() - b0}}
    out |= connected_rate(got, dt, 0.0 if live else connect_s)
    raw.close()
    return out


def ingest_arm(
    broker: Broker, fleet: Fleet, windows: int, url: str, workers: int, backend: str, live: bool
) -> dict[str, Any]:
    from cloud_registry.telemetry.store import open_telemetry_store

    app = f"edgeline-bench-{uuid.uuid4().hex[:8]}"
    if backend == "postgresql":
        url = f"{url}&application_name={app}"
    probe = open_telemetry_store(url)
    arm = uuid.uuid4().hex[:8]
    procs = [
        Proc.start("worker", url, str(broker.port), str(PARTITIONS), str(workers), str(i), f"bench-ingest-{arm}-{i}")
        for i in range(workers)
    ]
    for p in procs:
        p.read("ready")
    time.sleep(broker.settle_s)
    total = fleet.devices * windows
    acks0 = fleet.acks()
    publish_s = 0.0 if live else fleet.publish(windows)
    pids = [p.p.pid for p in procs]
    backends = pg_backends(url, app) if backend == "postgresql" else []
    c0 = sum(cpu_s(p) for p in pids)
    b0, g0 = broker.cpu(), sum(cpu_s(p) for p in backends)
    t0 = time.perf_counter()
    for p in procs:
        p.send("go")
    for p in procs:
        p.read("started")  # connected, the session restored
    connect_s = time.perf_counter() - t0
    if live:
        t0 = time.perf_counter()
        publish_s = fleet.publish(windows)
    deadline = time.monotonic() + 600
    while probe.count() < total and time.monotonic() < deadline:
        time.sleep(0.05)  # a COUNT(*) costs the database too: not too often
    dt = time.perf_counter() - t0
    stored = probe.count()
    cpu = {
        "consumers": sum(cpu_s(p) for p in pids) - c0,
        "broker": broker.cpu() - b0,
        "postgresql_backends": sum(cpu_s(p) for p in backends) - g0,
    }
    while fleet.acks() - acks0 < total and time.perf_counter() - t0 < dt + 60:
        time.sleep(0.1)
    acked_s = time.perf_counter() - t0
    stats = []
    for p in procs:
        p.send("stats")
        stats.append(json.loads(" ".join(p.read("stats"))))
    for p in procs:
        p.close()
    out: dict[str, Any] = {"windows": stored, "seconds": dt, "windows_per_s": stored / dt, "publish_s": publish_s}
    out |= {"all_acknowledged_s": acked_s, "acked": fleet.acks() - acks0, "cpu_s": cpu}
    out |= connected_rate(stored, dt, 0.0 if live else connect_s)
    out["batches"] = [s["batch_sizes"] for s in stats]
    # CPU per window by thread role (writer: validate, store, acknowledge; paho: the network threads)
    out["thread_cpu_us_per_window"] = [
        {role: round(sec / max(int(s["stored"]), 1) * 1e6, 1) for role, sec in s.get("thread_cpu_s", {}).items()}
        for s in stats
    ]
    out["duplicates"] = sum(int(s["duplicates"]) for s in stats)
    drop = getattr(probe, "drop_schema", None)
    if drop is not None:
        drop()
    probe.close()
    return out


def connected_rate(n: int, seconds: float, connect_s: float) -> dict[str, float]:
    """The drain's rate once every consumer was connected (a broker restoring sessions slowly,
    like NATS, shows in ``connect_s``, not in the rate)."""
    rest = seconds - connect_s
    return {"connect_s": connect_s, "windows_per_s_connected": n / rest if rest > 0 else float("nan")}


def start_broker(kind: str, tmp: Path) -> Broker:
    """The tests' own servers (tests/brokers/servers.py: own ports and data directories; never the
    system's nats-server or RabbitMQ), or a Mosquitto of the bench's own."""
    if kind in ("nats", "nats-cluster"):  # MQTT over JetStream: one node, or 3 routed nodes (R3 streams)
        from tests.brokers.servers import NatsCluster

        nats = NatsCluster(tmp / "nats", size=1 if kind == "nats" else 3)
        nats.start()
        pgids = [n.proc.pid for n in nats.nodes if n.proc is not None]
        # on a cluster a session's consumers keep pushing to it for a moment after it disconnected
        # (what they pushed comes back after the 30 s ack wait): the fleet publishes after that
        return Broker(nats, [n.mqtt_port for n in nats.nodes], pgids, settle_s=3.0 if kind != "nats" else 0.0)
    if kind == "rabbitmq":  # a node of its own (node name, ports, Mnesia), the MQTT plugin
        from tests.brokers.servers import RabbitNode

        rabbit = RabbitNode(tmp / "rabbit")
        rabbit.start()
        assert rabbit.proc is not None
        return Broker(rabbit, [rabbit.mqtt_port], [rabbit.proc.pid])
    mosquitto = MosquittoBroker(
        tmp / "broker", persistence=False, extra_config="max_queued_messages 0\nmax_inflight_messages 1000\n"
    )
    mosquitto.start()
    assert mosquitto._proc is not None
    return Broker(mosquitto, [mosquitto.port], [mosquitto._proc.pid], groups=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--windows", type=int, default=10, help="windows per device per arm")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--modes", default="drain,live", help="drain: consumers away while the fleet publishes; live")
    ap.add_argument(
        "--broker",
        choices=["mosquitto", "nats", "nats-cluster", "rabbitmq"],
        default="mosquitto",
        help="nats: one nats-server node; nats-cluster: 3 nodes, the fleet spread over them; rabbitmq: one node",
    )
    ap.add_argument(
        "--floors",
        default="raw_manual,floor",
        help="beside the raw subscriber (the goal's baseline): raw_manual (manual acks), floor (the "
        "ingest's sessions and batched acks alone); empty for none",
    )
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument(
        "--arms",
        default="ingest",
        help="ingest: windows/s against a raw subscriber; rollout: waves until COMMITTED (bench/fleet_rollout.py)",
    )
    ap.add_argument("--canary", type=int, default=10, help="rollout: devices in the canary wave")
    ap.add_argument("--waves", default="10%,50%,100%", help="rollout: cumulative wave sizes after the canary")
    ap.add_argument("--rollout-timeout", type=float, default=600.0, help="rollout: give up after this many seconds")
    ap.add_argument(
        "--no-resubscribe",
        action="store_true",
        help="rollout: devices never ask again for a subscription the broker refused (the NATS cluster stall)",
    )
    args = ap.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    modes = args.modes.split(",")
    arm_names = args.arms.split(",")
    arms: dict[str, list[dict[str, Any]]] = {}
    rollout: dict[str, Any] | None = None
    devices = args.devices
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broker = start_broker(args.broker, tmp)
        try:
            if "ingest" in arm_names:
                fleet = Fleet(args.devices, broker.ports)
                devices = fleet.devices
                try:
                    ingest_rounds(args, broker, fleet, tmp, worker_counts, modes, arms)
                finally:
                    fleet.close()
            if "rollout" in arm_names:  # after the telemetry fleet left: the same device ids
                from bench.fleet_rollout import rollout_arm

                (tmp / "rollout").mkdir()
                rollout = rollout_arm(
                    broker.ports,
                    args.devices,
                    tmp / "rollout",
                    canary=args.canary,
                    waves=args.waves,
                    timeout_s=args.rollout_timeout,
                    resubscribe=not args.no_resubscribe,
                )
                print(f"rollout: {rollout['committed']} committed in {rollout['seconds']:.1f} s", file=sys.stderr)
        finally:
            broker.handle.stop()
    results: dict[str, Any] = {"devices": devices, "broker": args.broker, "note": "2 cores shared with other work"}
    checks: dict[str, bool] = {}
    if arms:
        results |= ingest_summary(args, arms, worker_counts, modes, checks)
    if rollout is not None:
        results["rollout"] = rollout
        checks["rollout_every_device_committed"] = rollout["committed"] == rollout["devices"]
    return emit("fleet", results, checks)


def ingest_rounds(
    args: argparse.Namespace,
    broker: Broker,
    fleet: Fleet,
    tmp: Path,
    worker_counts: list[int],
    modes: list[str],
    arms: dict[str, list[dict[str, Any]]],
) -> None:
    for r, mode in ((r, m) for r in range(args.rounds) for m in modes):
        live = mode == "live"
        for kind in ["raw", *[f for f in args.floors.split(",") if f]]:
            res = raw_arm(broker, fleet, args.windows, live, kind)
            arms.setdefault(f"{mode}_{kind}", []).append(res)
            print(f"round {r} {mode} {kind}: {res['windows_per_s']:.0f}/s", file=sys.stderr)
        for backend in ("sqlite", "postgresql"):
            for w in worker_counts:
                if backend == "sqlite":
                    url = f"sqlite:///{tmp / f'{r}-{mode}-{w}.db'}"
                else:
                    url = f"{args.pg}?schema=bench_fleet_{uuid.uuid4().hex[:8]}"
                res = ingest_arm(broker, fleet, args.windows, url, w, backend, live)
                arms.setdefault(f"{mode}_{backend}_{w}", []).append(res)
                print(f"round {r} {mode} {backend} x{w}: {res['windows_per_s']:.0f}/s", file=sys.stderr)


def ingest_summary(
    args: argparse.Namespace,
    arms: dict[str, list[dict[str, Any]]],
    worker_counts: list[int],
    modes: list[str],
    checks: dict[str, bool],
) -> dict[str, Any]:
    med = {k: statistics.median(a["windows_per_s"] for a in v) for k, v in arms.items()}
    cpu_us = {  # CPU per window of each arm's processes, median over rounds
        k: {
            part: statistics.median(a["cpu_s"][part] / a["windows"] * 1e6 for a in v if a["windows"])
            for part in v[0]["cpu_s"]
        }
        for k, v in arms.items()
    }
    ratios: dict[str, float] = {}
    for mode in modes:
        for backend in ("sqlite", "postgresql"):
            for w in worker_counts:
                ratios[f"{mode}_{backend}_{w}_vs_raw"] = med[f"{mode}_{backend}_{w}"] / med[f"{mode}_raw"]
                for kind in ("raw_manual", "floor"):
                    if f"{mode}_{kind}" in med:
                        ratios[f"{mode}_{backend}_{w}_vs_{kind}"] = med[f"{mode}_{backend}_{w}"] / med[f"{mode}_{kind}"]
                if w != worker_counts[0]:
                    one = med[f"{mode}_{backend}_{worker_counts[0]}"]
                    ratios[f"{mode}_{backend}_{w}_vs_{worker_counts[0]}"] = med[f"{mode}_{backend}_{w}"] / one
    for mode in modes:
        if worker_counts[0] == 1:
            one = min(ratios[f"{mode}_sqlite_1_vs_raw"], ratios[f"{mode}_postgresql_1_vs_raw"])
            checks[f"{mode}_one_worker_at_least_0.9_of_raw"] = one >= 0.9
            if 2 in worker_counts:
                checks[f"{mode}_two_workers_at_least_1.4x_one_into_postgresql"] = (
                    ratios[f"{mode}_postgresql_2_vs_1"] >= 1.4
                )
    return {
        "windows_per_device_per_arm": args.windows,
        "partitions": PARTITIONS,
        "median_windows_per_s": med,
        "median_cpu_us_per_window": cpu_us,
        "ratios": ratios,
        "arms": arms,
    }


if __name__ == "__main__":
    raise SystemExit(main())
