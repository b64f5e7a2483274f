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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import emit, time_per_call
from cloud_registry.broker import MosquittoBroker, free_port
from cloud_registry.security.broker_config import parse_spec
from cloud_registry.security.lockdown import client_settings, locked_broker
from cloud_registry.security.passwords import HUMAN_ITERATIONS, RANDOM_ITERATIONS, PasswordFile, hash_password
from cloud_registry.security.pki import Pki
from edge_agent.mqtt_link import LinkSettings, MqttLink
from edge_agent.protocol.topics import Topics

TOPICS = Topics("edgeline", "bench")


def spec_for(auth: str, pki: Pki, work: Path) -> Any:
    return parse_spec(
        {
            "auth": auth,
            "bind": "127.0.0.1",
            "port": free_port(),
            "topic_root": TOPICS.root,
            "fleet": TOPICS.fleet,
            "tls": {
                "cafile": str(pki.ca_cert_path),
                "certfile": str(pki.cert_path("server", "broker")),
                "keyfile": str(pki.key_path("server", "broker")),
                "crlfile": str(pki.crl_path),
            },
            "acl_file": str(work / f"acl-{auth}"),
            "password_file": str(work / "passwd") if auth == "password" else None,
            "max_packet_size": 8 * 1024 * 1024,
            "devices": [{"id": "dev-fast"}, {"id": "dev-slow"}],
        }
    )


def broker_cpu_s(broker: MosquittoBroker) -> float:
    """CPU seconds (user + system) the broker process has used so far (Linux /proc)."""
    proc = broker._proc
    assert proc is not None
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connect_ms(broker: MosquittoBroker, settings: LinkSettings, n: int) -> dict[str, float]:
    """Client-side connect-to-CONNACK latency, and the broker's CPU per connect (Mosquitto is
    single-threaded: that CPU is what a reconnect storm after a broker restart queues up)."""
    samples = []
    cpu0 = broker_cpu_s(broker)
    for _ in range(n):
        link = MqttLink(settings)
        t0 = time.perf_counter()
        link.connect(timeout=10)
        samples.append((time.perf_counter() - t0) * 1000)
        link.stop()
    cpu = (broker_cpu_s(broker) - cpu0) / n * 1000
    return {
        "median_ms": statistics.median(samples),
        "p90_ms": sorted(samples)[int(0.9 * (n - 1))],
        "broker_cpu_ms_per_connect": cpu,
    }


def throughput(settings: LinkSettings, topic: str, payload: bytes, n: int) -> dict[str, float]:
    link = MqttLink(settings)
    link.connect(timeout=10)
    try:
        t0 = time.perf_counter()
        mids = [link.publish(topic, payload, qos=1) for _ in range(n)]
        acked = all(link.wait_published(mid, 60) for mid in mids)
        dt = time.perf_counter() - t0
    finally:
        link.stop()
    return {"msgs_per_s": n / dt, "mb_per_s": n * len(payload) / dt / 1e6, "all_acked": float(acked)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--connects", type=int, default=30)
    ap.add_argument("--messages", type=int, default=2000)
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

        plain = MosquittoBroker(work / "plain")
        pw_spec, mtls_spec = spec_for("password", pki, work), spec_for("mtls", pki, work)
        brokers = [plain, locked_broker(pw_spec, work / "pw"), locked_broker(mtls_spec, work / "mtls")]
        for b in brokers:
            b.start()
        try:
            s_plain = LinkSettings(port=plain.port, client_id="dev-fast")
            s_pw_fast = client_settings(pw_spec, "dev-fast", pki=pki, password="secret-fast")
            s_pw_slow = client_settings(pw_spec, "dev-slow", pki=pki, password="secret-slow")
            s_mtls = client_settings(mtls_spec, "dev-fast", pki=pki)
            n = args.connects
            connects = {
                "plain_tcp": connect_ms(brokers[0], s_plain, n),
                "tls_password_101_iter": connect_ms(brokers[1], s_pw_fast, n),
                f"tls_password_{HUMAN_ITERATIONS}_iter": connect_ms(brokers[1], s_pw_slow, n),
                "mtls": connect_ms(brokers[2], s_mtls, n),
            }
            topic = TOPICS.device_telemetry("dev-fast")
            small, big = b"x" * 256, b"x" * (1024 * 1024)
            m = args.messages
            pub = {
                "plain_256B": throughput(s_plain, topic, small, m),
                "mtls_256B": throughput(s_mtls, topic, small, m),
                "plain_1MiB": throughput(s_plain, topic, big, 40),
                "mtls_1MiB": throughput(s_mtls, topic, big, 40),
            }
        finally:
            for b in brokers:
                b.kill()

    hash_fast = time_per_call(lambda: hash_password("pw", iterations=101), repeat=3, number=50, warmup=2)
    hash_slow = time_per_call(lambda: hash_password("pw", iterations=HUMAN_ITERATIONS), repeat=3, number=5, warmup=1)
    base = connects["plain_tcp"]["median_ms"]
    results = {
        "connect": connects,
        "publish_qos1": pub,
        "pbkdf2_ms": {
            "101_iter": hash_fast["median_s"] * 1000,
            f"{HUMAN_ITERATIONS}_iter": hash_slow["median_s"] * 1000,
        },
        "ratios": {
            "tls_password_101_vs_plain_connect": connects["tls_password_101_iter"]["median_ms"] / base,
            "tls_password_default_vs_plain_connect": connects[f"tls_password_{HUMAN_ITERATIONS}_iter"]["median_ms"]
            / base,
            "mtls_vs_plain_connect": connects["mtls"]["median_ms"] / base,
            "mtls_vs_plain_256B_throughput": pub["mtls_256B"]["msgs_per_s"] / pub["plain_256B"]["msgs_per_s"],
            "mtls_vs_plain_1MiB_throughput": pub["mtls_1MiB"]["mb_per_s"] / pub["plain_1MiB"]["mb_per_s"],
        },
    }
    checks = {"all_publishes_acknowledged": all(v["all_acked"] == 1.0 for v in pub.values())}
    return emit("broker_tls", results, checks)


if __name__ == "__main__":
    raise SystemExit(main())
