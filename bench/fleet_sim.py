"""The processes of bench_fleet.py, each driven by lines on stdin and answering on stdout:

* ``device FIRST COUNT PORT PARTITIONS``: COUNT light simulated devices (ids ``dev-FIRST`` ...), one
  MQTT 3.1.1 connection each (persistent session), speaking the real protocol: realistic windows
  (``build_window``, 60 frames, every class, six drift entries), the keyed pseudonym, the partitioned
  telemetry topic, QoS 1, and the end-to-end acknowledgements on their own ``acks`` topic (a window
  is kept until acknowledged, as the outbox does). ``pub K``: every device publishes K fresh windows
  (interleaved across devices, as a fleet draining its outboxes after an outage); ``acks``: how many
  keys were acknowledged so far.
* ``raw PORT CLIENT_ID [auto|manual]``: the baseline, a plain paho subscriber (QoS 1, one session, one
  filter) that only counts; ``auto`` (the default) PUBACKs as paho does by itself, ``manual`` with
  paho's manual acknowledgements, one ``ack()`` per message in the callback.
* ``floor PORT CLIENT_ID PARTITIONS``: the ingest's MQTT path and nothing else: the worker's sessions
  (one per partition filter and one for the unpartitioned topic, :class:`AckingLink`), every message
  handed to a queue and PUBACKed in batches by a second thread (``ack_many``, as the ingest does
  after a commit), nothing parsed, stored or acknowledged to the devices.
* ``worker URL PORT PARTITIONS WORKERS INDEX CLIENT_ID``: one ingest worker (:class:`IngestService` with the
  alert engine, as ``edgeline ingest`` runs it) on MQTT 3.1.1, its partitions only.

Consumers first register their persistent session (``ready``), disconnect, and connect again on
``go``, so the windows published meanwhile are queued for them by the broker: the drain measures the
consumer, not the publishers. On ``quit`` they end their session (a fresh client id per arm).
"""

from __future__ import annotations

import gc
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeline.core.protocol.partitions import TelemetryTopics  # noqa: E402
from edgeline.core.protocol.topics import Topics  # noqa: E402

TOPICS = Topics()
SECRET = b"bench-fleet-pseudonym-secret-0123456789"
#: the raw subscriber's one filter: the fleet publishes on partition topics only (one QoS 1
#: subscription: on NATS a second one in the same session stalls the drain for its 30 s ack wait)
ALL_TELEMETRY = [f"{TOPICS.base}/devices/+/telemetry/+"]
#: devices of one process whose acks subscription is not granted yet (bench/fleet_rollout.py)
BOOT_WINDOW = 25


def say(*words: object) -> None:
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


def template() -> bytes:
    """One realistic encoded window with placeholder key and device (same lengths as real ones)."""
    import numpy as np

    from bench.bench_telemetry import context, raw_window
    from edge_agent.telemetry.drift import Calibrator
    from edge_agent.telemetry.windows import build_window

    raw = raw_window(np.random.default_rng(0))
    w = build_window(raw, key="1" * 32, device="2" * 32, group="hall-1", ctx=context(), calibrator=Calibrator())
    now = time.time()  # the aggregator's clock started at 0: a window of the last minute, as on a device
    return w.model_copy(update={"start": now - 60.0, "end": now}).encode()


def device(first: int, count: int, port: int, partitions: int) -> None:
    from edge_agent.telemetry.privacy import pseudonym

    tt = TelemetryTopics(TOPICS, partitions)
    body = template()
    acked = [0]
    lock = threading.Lock()
    clients: list[tuple[mqtt.Client, str, bytes]] = []

    def on_ack(_c: Any, _u: Any, msg: Any) -> None:
        doc = json.loads(msg.payload)
        with lock:
            acked[0] += len(doc.get("windows", [])) + len(doc.get("rejected_windows", []))

    granted: list[threading.Event] = []
    for i in range(first, first + count):
        # commissioned a few at a time, each acks subscription asked again when refused, as in
        # fleet_rollout.py (a fresh NATS cluster refused 444 of 1,000 at once: no acks for those)
        while sum(1 for g in granted if not g.is_set()) >= BOOT_WINDOW:
            time.sleep(0.01)
        dev = f"dev-{i:04d}"
        pseudo = pseudonym(dev, SECRET)
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=dev, protocol=mqtt.MQTTv311, clean_session=False)
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(0)
        c.on_message = on_ack
        g = threading.Event()
        c.on_connect = lambda cl, _u, _f, _rc, _p, dev=dev: cl.subscribe(TOPICS.device_acks(dev), 1)
        c.on_subscribe = _resubscribing(TOPICS.device_acks(dev), g)
        granted.append(g)
        c.connect_async("127.0.0.1", port, keepalive=120)
        c.loop_start()
        clients.append((c, tt.for_device(dev, pseudo), body.replace(b"2" * 32, pseudo.encode())))
    while not all(c.is_connected() for c, _, _ in clients) or not all(g.is_set() for g in granted):
        time.sleep(0.05)
    say("ready", count)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "pub":
            t0 = time.perf_counter()
            infos = []
            for _ in range(int(cmd[1])):
                for c, topic, payload in clients:
                    key = uuid.uuid4().hex.encode()
                    infos.append(c.publish(topic, payload.replace(b"1" * 32, key, 1), qos=1))
            for info in infos:
                info.wait_for_publish(120)
            say("published", len(infos), time.perf_counter() - t0)
        elif cmd[0] == "acks":
            with lock:
                say("acks", acked[0])
        elif cmd[0] == "quit":
            break
    for c, _, _ in clients:
        c.disconnect()
        c.loop_stop()


def _resubscribing(topic: str, granted: threading.Event) -> Any:
    """An ``on_subscribe`` that sets ``granted``, or subscribes ``topic`` again when refused (0.5 s
    doubling to 10 s, as the agent's link does): a NATS cluster node refuses a QoS 1 subscription
    whose JetStream consumer it could not create within 4 s, and nothing arrives on it then."""
    delay = [0.25]

    def on_subscribe(c: mqtt.Client, _u: Any, _mid: int, codes: Any, _p: Any) -> None:
        if not any(getattr(code, "is_failure", False) for code in codes):
            granted.set()
            return
        delay[0] = min(10.0, delay[0] * 2)
        t = threading.Timer(delay[0], lambda: c.subscribe(topic, 1) if c.is_connected() else None)
        t.daemon = True
        t.start()

    return on_subscribe


def purge(port: int, client_id: str) -> None:
    """End a persistent session (the broker would queue every later window for it)."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=True)
    c.connect("127.0.0.1", port)
    c.loop_start()
    time.sleep(0.2)
    c.disconnect()
    c.loop_stop()


def raw(port: int, client_id: str, acks: str = "auto") -> None:
    got = [0]
    want = [10**12]
    done = threading.Event()
    manual = acks == "manual"

    def on_message(c: mqtt.Client, _u: Any, m: Any) -> None:
        if manual:
            c.ack(m.mid, m.qos)
        got[0] += 1
        if got[0] >= want[0]:
            done.set()

    def session() -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=False)
        c.manual_ack_set(manual)
        c.on_message = on_message
        granted = threading.Event()
        c.on_subscribe = _resubscribing(ALL_TELEMETRY[0], granted)
        c.connect("127.0.0.1", port)
        c.loop_start()
        c.subscribe([(f, 1) for f in ALL_TELEMETRY])
        granted.wait(120)  # a refused subscription queues nothing for the session
        return c

    c = session()
    c.disconnect()
    c.loop_stop()
    say("ready")
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "go":
            want[0], got[0] = int(cmd[1]), 0
            done.clear()
            c = session()
            say("started")
            done.wait(600)
            say("done", got[0])
            c.disconnect()
            c.loop_stop()
        elif cmd[0] == "quit":
            break
    purge(port, client_id)


def floor(port: int, client_id: str, partitions: int) -> None:
    from collections import deque

    from cloud_registry.telemetry.acking_link import AckingLink, Delivery
    from cloud_registry.telemetry.ingest_sessions import plan_sessions
    from edgeline.core.mqtt_link import LinkSettings

    filters = TelemetryTopics(TOPICS, partitions).filters(1, 0)
    plans = plan_sessions(client_id, filters, [], split=True)[1:]  # the telemetry sessions only
    queue: deque[Delivery] = deque()
    got = [0]
    want = [10**12]
    done = threading.Event()
    wake = threading.Event()

    def sessions() -> list[AckingLink]:
        links = []
        for i, plan in enumerate(plans):
            settings = LinkSettings(port=port, client_id=plan.client_id, protocol="3.1.1", clean_start=False)
            link = AckingLink(settings)
            link.source = i
            link.deliver(list(plan.filters), sink)
            links.append(link)
        for link in links:
            link.connect(10)
        for link in links:
            link.wait_granted(10)
        return links

    def sink(d: Delivery) -> None:
        queue.append(d)
        wake.set()

    def acker(links: list[AckingLink]) -> None:
        while not done.is_set():
            if not queue:
                wake.wait(0.5)
                wake.clear()
                continue
            batch = [queue.popleft() for _ in range(min(len(queue), 1000))]
            by_link: dict[int, list[Delivery]] = {}
            for d in batch:
                by_link.setdefault(d.source, []).append(d)
            for source, ds in by_link.items():
                links[source].ack_many(ds)
            got[0] += len(batch)
            if got[0] >= want[0]:
                done.set()

    for link in sessions():
        link.stop()
    say("ready")
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "go":
            want[0], got[0] = int(cmd[1]), 0
            done.clear()
            links = sessions()
            t = threading.Thread(target=acker, args=(links,), daemon=True)
            t.start()
            say("started")
            done.wait(600)
            say("done", got[0])
            t.join(5)
            for link in links:
                link.stop()
        elif cmd[0] == "quit":
            break
    for plan in plans:
        purge(port, plan.client_id)


def worker(url: str, port: int, partitions: int, workers: int, index: int, client_id: str) -> None:
    from cloud_registry.telemetry.alerts import AlertEngine
    from cloud_registry.telemetry.ingest import Ingestor, IngestService
    from cloud_registry.telemetry.store import open_telemetry_store
    from edgeline.core.mqtt_link import LinkSettings

    store = open_telemetry_store(url)

    def service() -> IngestService:
        settings = LinkSettings(port=port, client_id=client_id, protocol="3.1.1", clean_start=False)
        ing = Ingestor(store, TOPICS, listeners=[AlertEngine(store).on_window])
        return IngestService(ing, settings, shared=False, partitions=partitions, workers=workers, index=index)

    svc = service()
    svc.start()
    svc.stop()
    say("ready")
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "go":
            svc = service()
            svc.start()
            say("started")
        elif cmd[0] == "stats":
            gcs = [g["collections"] for g in gc.get_stats()]
            extra = {"batch_sizes": _spread(svc.batch_sizes), "thread_cpu_s": thread_cpu(), "gc_collections": gcs}
            say("stats", json.dumps(svc.ingestor.stats.as_dict() | extra))
        elif cmd[0] == "quit":
            svc.stop()
            break
    store.close()
    for cid in svc.client_ids:  # every session of the worker (one per telemetry filter when partitioned)
        purge(port, cid)


def thread_cpu() -> dict[str, float]:
    """CPU seconds of the process's live threads by role (the writer, paho's network threads, the
    links' supervisors, the main thread): where a worker's time goes, without a profiler."""
    out: dict[str, float] = {}
    for t in threading.enumerate():
        name = t.name
        role = "paho" if name.startswith("paho-mqtt-client") else name.split("-")[0] if "(" in name else name
        try:
            s = time.clock_gettime(time.pthread_getcpuclockid(t.ident or 0))
        except (OSError, OverflowError):
            continue
        out[role] = round(out.get(role, 0.0) + s, 3)
    return out


def _spread(sizes: list[int]) -> dict[str, float]:
    if not sizes:
        return {"batches": 0}
    s = sorted(sizes)
    return {"batches": len(s), "median": s[len(s) // 2], "max": s[-1], "mean": sum(s) / len(s)}


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    if role == "device":
        device(int(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]))
    elif role == "raw":
        raw(int(rest[0]), rest[1], *rest[2:3])
    elif role == "floor":
        floor(int(rest[0]), rest[1], int(rest[2]))
    elif role == "worker":
        worker(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), int(rest[4]), rest[5])
    else:
        raise SystemExit(f"unknown role {role!r}")
