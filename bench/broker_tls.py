"""What the locked-down broker costs: connect latency and publish throughput over plain TCP (baseline),
TLS + password (PBKDF2 at Mosquitto's 101 iterations and at our default) and mTLS, side by side on the
same machine and run.

    python bench/broker_tls.py [--connects 30] [--messages 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import emit, time_per_call
from cloud_registry.security.broker_config import BrokerSpec
from cloud_registry.security.passwords import HUMAN_ITERATIONS, RANDOM_ITERATIONS, PasswordFile, hash_password
from cloud_registry.security.pki import Pki
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker
from edgeline.demo.lockdown import client_settings, local_spec, locked_broker

TOPICS = Topics("edgeline", "bench")


def spec_for(auth: str, pki: Pki, work: Path, passwd: Path) -> BrokerSpec:
    devices: dict[str, list[str]] = {"dev-fast": [], "dev-slow": []}
    return local_spec(
        auth, pki, work, topics=TOPICS, devices=devices, password_file=passwd, max_packet_size=8 * 1024 * 1024
    )


def broker_cpu_s(broker: MosquittoBroker) -> float:
    """CPU seconds (user + system) the broker process has used so far (Linux /proc)."""
    proc = broker._proc
    assert proc is not None
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_connect_ms(settings: LinkSettings) -> float:
    link = MqttLink(settings)
    t0 = time.perf_counter()
    link.connect(timeout=10)
    dt = (time.perf_counter() - t0) * 1000
    link.stop()
    return dt


def throughput(settings: LinkSettings, topic: str, payload: bytes, n: int) -> tuple[float, bool]:
    """Messages per second for ``n`` QoS 1 publishes in flight together, and whether all were acknowledged."""
    link = MqttLink(settings)
    link.connect(timeout=10)
    try:
        t0 = time.perf_counter()
        mids = [link.publish(topic, payload, qos=1) for _ in range(n)]
        acked = all(link.wait_published(mid, 60) for mid in mids)
        dt = time.perf_counter() - t0
    finally:
        link.stop()
    return n / dt, acked


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--connects", type=int, default=40, help="connects per configuration")
    ap.add_argument("--messages", type=int, default=2000, help="256-byte publishes per round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved throughput rounds")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pki = Pki.init(work / "pki")
        pki.issue("server", "broker", hosts=["127.0.0.1"])
        for dev in ("dev-fast", "dev-slow"):
            pki.issue("device", dev)
        pw = PasswordFile(work / "passwd")
        pw.set("dev-fast", "secret-fast", iterations=RANDOM_ITERATIONS)
        pw.set("dev-slow", "secret-slow", iterations=HUMAN_ITERATIONS)

        pw_spec, pw2_spec, mtls_spec = (
            spec_for(a, pki, work / n, pw.path) for a, n in (("password", "a"), ("password", "b"), ("mtls", "c"))
        )
        plain = MosquittoBroker(work / "plain")
        # one broker per configuration, so each one's CPU counter is that configuration's cost
        configs: dict[str, tuple[MosquittoBroker, LinkSettings]] = {
            "plain_tcp": (plain, LinkSettings(port=plain.port, client_id="dev-fast")),
            f"tls_password_{RANDOM_ITERATIONS}_iter": (
                locked_broker(pw_spec, work / "pw"),
                client_settings(pw_spec, "dev-fast", pki=pki, password="secret-fast"),
            ),
            f"tls_password_{HUMAN_ITERATIONS}_iter": (
                locked_broker(pw2_spec, work / "pw2"),
                client_settings(pw2_spec, "dev-slow", pki=pki, password="secret-slow"),
            ),
            "mtls": (locked_broker(mtls_spec, work / "mtls"), client_settings(mtls_spec, "dev-fast", pki=pki)),
        }
        for broker, _ in configs.values():
            broker.start()
        try:
            # interleaved, so background load on a shared machine hits every configuration alike
            samples: dict[str, list[float]] = {k: [] for k in configs}
            cpu0 = {k: broker_cpu_s(b) for k, (b, _) in configs.items()}
            for _ in range(args.connects):
                for name, (_, settings) in configs.items():
                    samples[name].append(one_connect_ms(settings))
            connects = {
                name: {
                    "median_ms": statistics.median(v),
                    "p90_ms": sorted(v)[int(0.9 * (len(v) - 1))],
                    "broker_cpu_ms_per_connect": (broker_cpu_s(configs[name][0]) - cpu0[name]) / len(v) * 1000,
                }
                for name, v in samples.items()
            }
            topic = TOPICS.device_telemetry("dev-fast")
            cases = {"256B": (b"x" * 256, args.messages), "1MiB": (b"x" * (1024 * 1024), 20)}
            rates: dict[str, list[float]] = {}
            all_acked = True
            for _ in range(args.rounds):
                for size, (payload, n) in cases.items():
                    for name in ("plain_tcp", "mtls"):
                        rate, acked = throughput(configs[name][1], topic, payload, n)
                        rates.setdefault(f"{name}_{size}", []).append(rate)
                        all_acked &= acked
            pub = {k: {"median_msgs_per_s": statistics.median(v)} for k, v in rates.items()}
            for k, v in pub.items():
                if k.endswith("1MiB"):
                    v["median_mb_per_s"] = v["median_msgs_per_s"] * 1.048576
        finally:
            for broker, _ in configs.values():
                broker.kill()

    hash_fast = time_per_call(lambda: hash_password("pw", iterations=RANDOM_ITERATIONS), repeat=3, number=50)
    hash_slow = time_per_call(lambda: hash_password("pw", iterations=HUMAN_ITERATIONS), repeat=3, number=5, warmup=1)
    base = connects["plain_tcp"]["median_ms"]
    results = {
        "connect": connects,
        "publish_qos1": pub,
        "pbkdf2_ms_in_python": {
            f"{RANDOM_ITERATIONS}_iter": hash_fast["median_s"] * 1000,
            f"{HUMAN_ITERATIONS}_iter": hash_slow["median_s"] * 1000,
        },
        "ratios": {
            **{f"{k}_vs_plain_connect": v["median_ms"] / base for k, v in connects.items() if k != "plain_tcp"},
            "mtls_vs_plain_256B_throughput": pub["mtls_256B"]["median_msgs_per_s"]
            / pub["plain_tcp_256B"]["median_msgs_per_s"],
            "mtls_vs_plain_1MiB_throughput": pub["mtls_1MiB"]["median_msgs_per_s"]
            / pub["plain_tcp_1MiB"]["median_msgs_per_s"],
        },
    }
    return emit("broker_tls", results, {"all_publishes_acknowledged": all_acked})


if __name__ == "__main__":
    raise SystemExit(main())
