"""A rollout to 1,000 light simulated devices in waves until every one is COMMITTED (bench_fleet's
``rollout`` arm), and how fresh the registry's fleet view is meanwhile.

Devices (``python bench/fleet_rollout.py device FIRST COUNT PORT TRUST``, 4 processes of 250 MQTT
3.1.1 connections, persistent sessions) speak the real delivery protocol: a retained birth state
with their group and a retained presence, a minimal Will; on a signed desired state they verify the
signature against the trust store (Ed25519, ``TrustStore.verify``) and the manifest, refuse a
sequence they have seen, subscribe to the artifact's exact chunk topics (retained), check every
chunk's sha256 and the whole artifact's, then report ``downloading`` .. ``committed`` (QoS 1 events)
and a retained COMMITTED state. Like the agent's link they read every SUBACK and ask again for a
filter the broker refused (0.5 s, doubling up to 10 s): a NATS cluster node refuses a QoS 1
subscription whose JetStream consumer it could not create within its 4 s API timeout, which a wave
of devices subscribing at once provokes; devices that ignored it never heard of their offer or
chunk, and the rollout stalled (``--no-resubscribe`` brings that back). They have no updater (no
A/B slot, no ONNX Runtime load, no trial): ``bench/bench_delivery.py`` measures those on 50 real
agents. ``status``: what each device that did not commit saw (offers, chunks, refusals).

The registry side is this process: ``Registry`` (SQLite) with a signed tiny bundle, the
``Publisher``, the ``FleetWatcher`` with the registry store as its book, and the ``RolloutRunner``
driving ``group:fleet`` with a canary and waves (``--waves``) until COMMITTED; the registry is up
before the devices start, so it learns them from their births. Reported: the time
from ``create`` to settled, each wave's, the registry process's CPU (this process: runner,
publisher, fleet view, MQTT thread), and the fleet view's freshness: for every state message the
devices sent, the time from the device's timestamp to the view holding it (one clock: one machine).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GROUP = "fleet"
#: devices of one process whose first desired-state subscription is not granted yet: new devices
#: connect as earlier ones are granted. On a fresh NATS cluster each is a replicated JetStream
#: consumer to create; 1,000 never-seen devices at once (here, 4 x 250 in a second) had most of
#: them refused after the 4 s API timeout, and their retries kept the cluster saturated (65 refused
#: a second for minutes, load average 30-45). A real fleet is commissioned over days, and a known
#: device's session keeps its consumers across reconnects: the fleet's first boot is set-up, not
#: the rollout being measured.
BOOT_WINDOW = 25


def say(*words: object) -> None:
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


class LightDevice:
    """One simulated device: the delivery protocol without an updater behind it."""

    def __init__(self, device_id: str, port: int, trust: Any, topics: Any, *, resubscribe: bool = True) -> None:
        from edgeline.core.protocol.delivery import DevicePresence

        self.id = device_id
        self.resubscribe = resubscribe
        self.trust = trust
        self.t = topics
        self.seq = 0
        self.model: Any = None
        self.manifest: Any = None
        self.chunks: dict[int, bytes] = {}
        self.committed = 0
        self.offers = 0  # signed desired states taken
        self.chunk_msgs = 0  # chunk messages received
        self.refused = 0  # filters the broker refused in a SUBACK
        self.retried = 0  # filters asked for again after a refusal
        self.lock = threading.Lock()
        self.sub_lock = threading.Lock()
        self._suback: dict[int, list[tuple[str, int]]] = {}  # SUBSCRIBE mid -> its filters
        self._backoff: dict[str, float] = {}  # filter -> the delay of its last retry
        #: the broker granted the desired-state subscription (or refused it, to a device that never retries)
        self.booted = threading.Event()
        self.t_offer = 0.0  # when the offer was taken, and what happened since (seconds after it)
        self.trail: list[tuple[float, str]] = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311, clean_session=False)
        offline = DevicePresence(device_id=device_id, online=False).model_dump_json(by_alias=True)
        c.will_set(topics.device_online(device_id), offline, qos=1, retain=True)
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        self.c = c
        c.connect_async("127.0.0.1", port, keepalive=120)
        c.loop_start()

    def state(self, updater: str) -> bytes:
        from edgeline.core.protocol.delivery import DeviceState, UpdaterState

        st = DeviceState(
            device_id=self.id,
            online=True,
            ts=time.time(),
            heartbeat_s=600.0,
            groups=(GROUP,),
            model=self.model,
            slot="A" if self.model is not None else None,
            updater=UpdaterState(updater),
            sequence=self.seq,
            health="ok" if self.model is not None else "no_model",
        )
        return st.model_dump_json(by_alias=True).encode()

    def _subscribe(self, filters: list[tuple[str, int]]) -> None:
        """SUBSCRIBE, remembering which filters the SUBACK will answer for."""
        with self.sub_lock:
            _rc, mid = self.c.subscribe(filters)
            if mid is not None:
                self._suback[mid] = filters

    def _wanted(self, topic: str) -> bool:
        """A filter still worth asking for: the desired state always, a chunk while it is missing."""
        if topic == self.t.device_desired(self.id):
            return True
        with self.lock:
            m = self.manifest
            if m is None:
                return False
            index = int(topic.rsplit("/", 1)[1])
            return topic == self.t.artifact_chunk(m.artifact.sha256, index) and index not in self.chunks

    def _note(self, what: str) -> None:
        if self.t_offer and len(self.trail) < 40:
            self.trail.append((round(time.time() - self.t_offer, 3), what))

    def _kind(self, topic: str) -> str:
        return "desired" if topic == self.t.device_desired(self.id) else "chunk"

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, codes: Any, _p: Any) -> None:
        """The agent's link (``SubackBook``) asks again for a refused filter, doubling from 0.5 s up
        to 10 s: so does the simulated device. A NATS cluster node refuses a QoS 1 subscription when
        it cannot create the filter's replicated JetStream consumer in time (a wave of devices
        subscribing at once), and nothing, retained or live, then arrives on that filter."""
        with self.sub_lock:
            filters = self._suback.pop(mid, [])
        for (topic, qos), code in zip(filters, codes, strict=False):
            if not getattr(code, "is_failure", False):
                if self._backoff.pop(topic, None) is not None:
                    self._note(f"granted {self._kind(topic)}")
                if topic == self.t.device_desired(self.id):
                    self.booted.set()
                continue
            self.refused += 1
            self._note(f"refused {self._kind(topic)}")
            if not self.resubscribe:
                if topic == self.t.device_desired(self.id):
                    self.booted.set()
                continue
            delay = min(10.0, self._backoff.get(topic, 0.25) * 2)
            self._backoff[topic] = delay
            timer = threading.Timer(delay, self._retry, args=(topic, qos))
            timer.daemon = True
            timer.start()

    def _retry(self, topic: str, qos: int) -> None:
        if self.c.is_connected() and self._wanted(topic):
            self.retried += 1
            self._note(f"retry {self._kind(topic)}")
            self._subscribe([(topic, qos)])

    def _on_connect(self, c: mqtt.Client, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        from edgeline.core.protocol.delivery import DevicePresence

        self._subscribe([(self.t.device_desired(self.id), 1)])
        c.publish(self.t.device_state(self.id), self.state("IDLE" if self.model is None else "COMMITTED"), 1, True)
        online = DevicePresence(device_id=self.id, online=True, ts=time.time()).model_dump_json(by_alias=True)
        c.publish(self.t.device_online(self.id), online, 1, True)

    def _event(self, kind: str, state: str) -> None:
        from edgeline.core.protocol.delivery import DeviceEvent, EventKind, UpdaterState

        e = DeviceEvent(
            device_id=self.id, kind=EventKind(kind), state=UpdaterState(state), sequence=self.seq, model=self.model
        )
        self.c.publish(self.t.device_events(self.id), e.model_dump_json(by_alias=True), 1)

    def _on_message(self, c: mqtt.Client, _u: Any, msg: Any) -> None:
        try:
            if msg.topic == self.t.device_desired(self.id):
                self._offer(c, bytes(msg.payload))
            else:
                self._chunk(c, msg.topic, bytes(msg.payload))
        except Exception as exc:  # a refused offer: counted by the registry as no progress
            sys.stderr.write(f"{self.id}: {exc}\n")

    def _offer(self, c: mqtt.Client, payload: bytes) -> None:
        from edgeline.core.protocol.manifest import parse_manifest
        from edgeline.core.protocol.model_ref import ModelRef

        if not payload:
            return
        manifest = parse_manifest(self.trust.verify(json.loads(payload)))
        with self.lock:
            if manifest.sequence <= self.seq:
                return  # replayed or already taken
            self.seq = manifest.sequence
            self.manifest = manifest
            self.chunks = {}
            self.pending_model = ModelRef(name=manifest.name, version=manifest.version, sha256=manifest.artifact.sha256)
            self.offers += 1
            self.t_offer, self.trail = time.time(), []
        self._event("downloading", "DOWNLOADING")
        art = manifest.artifact
        n = -(-art.size // art.chunk_size)
        self._subscribe([(self.t.artifact_chunk(art.sha256, i), 1) for i in range(n)])

    def _chunk(self, c: mqtt.Client, topic: str, payload: bytes) -> None:
        with self.lock:
            m = self.manifest
            self.chunk_msgs += 1
            self._note("chunk")
            if m is None or not payload:
                return
            art = m.artifact
            index = int(topic.rsplit("/", 1)[1])
            if art.chunk_sha256 and hashlib.sha256(payload).hexdigest() != art.chunk_sha256[index]:
                raise ValueError(f"chunk {index} hash mismatch")
            self.chunks[index] = payload
            n = -(-art.size // art.chunk_size)
            if len(self.chunks) < n:
                return
            data = b"".join(self.chunks[i] for i in range(n))
            if hashlib.sha256(data).hexdigest() != art.sha256:
                raise ValueError("artifact hash mismatch")
            self.manifest = None
            c.unsubscribe([self.t.artifact_chunk(art.sha256, i) for i in range(n)])
            self.model = self.pending_model
        for kind, state in (("verified", "VERIFIED"), ("staged", "STAGED"), ("activated", "TRIAL")):
            self._event(kind, state)
        self._event("committed", "COMMITTED")
        c.publish(self.t.device_state(self.id), self.state("COMMITTED"), 1, True)
        self.committed += 1
        self._note("committed")

    def status(self) -> dict[str, Any]:
        return {
            "device": self.id,
            "offers": self.offers,
            "chunk_msgs": self.chunk_msgs,
            "committed": self.committed,
            "refused": self.refused,
            "retried": self.retried,
            "offer_at": self.t_offer,  # epoch: compare with the rollout's wave_dispatched_at
            "trail": self.trail,  # seconds after the offer
        }

    @property
    def offer_to_commit_s(self) -> float:
        done = [t for t, what in self.trail if what == "committed"]
        return done[-1] if done else float("inf")


def device_main(first: int, count: int, port: int, trust_path: str, resubscribe: bool = True) -> None:
    from edgeline.core.protocol.signing import TrustStore
    from edgeline.core.protocol.topics import Topics

    trust = TrustStore.load(Path(trust_path))
    topics = Topics()
    devices: list[LightDevice] = []
    t0 = time.monotonic()
    for i in range(first, first + count):  # commissioned a few at a time (BOOT_WINDOW)
        while sum(1 for d in devices if not d.booted.is_set()) >= BOOT_WINDOW:
            time.sleep(0.01)
        devices.append(LightDevice(f"dev-{i:04d}", port, trust, topics, resubscribe=resubscribe))
    while not all(d.c.is_connected() and d.booted.is_set() for d in devices):
        time.sleep(0.05)
    say("ready", count, f"{time.monotonic() - t0:.2f}", sum(d.refused for d in devices))
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "committed":
            say("committed", sum(d.committed for d in devices))
        elif cmd[0] == "status":  # totals, and every device that did not commit
            stuck = [d.status() for d in devices if d.committed == 0]
            totals = {k: sum(d.status()[k] for d in devices) for k in ("committed", "offers", "refused", "retried")}
            slowest = [d.status() for d in sorted(devices, key=lambda d: -d.offer_to_commit_s)[:5] if d.committed]
            offers = {d.id: d.t_offer for d in devices if d.t_offer}
            say("status", json.dumps({**totals, "not_committed": stuck, "slowest": slowest, "offer_at": offers}))
        elif cmd[0] == "quit":
            break
    for d in devices:
        d.c.disconnect()
        d.c.loop_stop()


def _start_devices(first: int, count: int, port: int, trust: Path, resubscribe: bool) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(Path(__file__)), "device", str(first), str(count), str(port), str(trust)]
    if not resubscribe:
        cmd.append("no-resubscribe")
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def _ask(p: subprocess.Popen[str], cmd: str) -> None:
    assert p.stdin is not None
    p.stdin.write(cmd + "\n")
    p.stdin.flush()


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        with contextlib.suppress(OSError):
            _ask(p, "quit")
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def _read(p: subprocess.Popen[str], word: str) -> list[str]:
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line.startswith(word):
        raise RuntimeError(f"expected {word!r} from a device process, got {line!r}")
    return line.split()[1:]


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    s = sorted(values)
    return {
        "n": len(s),
        "p50_ms": s[len(s) // 2] * 1000,
        "p99_ms": s[min(len(s) - 1, int(len(s) * 0.99))] * 1000,
        "max_ms": s[-1] * 1000,
        "mean_ms": statistics.fmean(s) * 1000,
    }


def rollout_arm(
    ports: list[int],
    devices: int,
    work: Path,
    *,
    canary: int,
    waves: str,
    timeout_s: float = 600.0,
    resubscribe: bool = True,
) -> dict[str, Any]:
    """One rollout of a tiny model to ``devices`` light devices spread over ``ports``.
    ``resubscribe=False``: devices that do not ask again for a refused subscription (the stall)."""
    from cloud_registry.fleet import FleetWatcher
    from cloud_registry.publisher import Publisher
    from cloud_registry.registry import Registry
    from cloud_registry.rollout_runner import RolloutRunner
    from converters.keys import KeyPaths, init_keys, load_signing_key
    from edgeline.core.mqtt_link import LinkSettings, MqttLink
    from edgeline.core.protocol.delivery import DeviceState
    from edgeline.core.protocol.signing import TrustStore
    from edgeline.core.protocol.topics import Topics
    from tests.factories import write_tiny_bundle

    _log_registry_side()
    # a run stopped with SIGTERM still stops its device processes (the finally below)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    init_keys(work / "keys")
    key = load_signing_key(work / "keys")
    trust_path = KeyPaths(work / "keys").trust
    bundle = write_tiny_bundle(work / "bundle", key)
    reg = Registry.open(f"sqlite:///{work / 'registry.db'}", f"file://{work / 'artifacts'}")
    mv = reg.add_bundle(bundle, TrustStore.load(trust_path))
    procs = 4
    per = devices // procs
    host_port, *rest = [("127.0.0.1", p) for p in ports]
    link = MqttLink(LinkSettings(port=host_port[1], brokers=tuple(rest), client_id="bench-registry", clean_start=True))
    topics = Topics()
    fleet = FleetWatcher(link, topics, book=reg.store)
    lags: list[float] = []

    def on_fleet(kind: str, _device: str, msg: Any) -> None:
        if kind == "state" and isinstance(msg, DeviceState):
            lags.append(time.time() - msg.ts)

    fleet.add_listener(on_fleet)
    link.connect(30)
    fleet_procs: list[subprocess.Popen[str]] = []
    try:
        # the registry first, the devices then: their births reach it live (RabbitMQ would not deliver
        # the retained ones to the fleet view's wildcard; a registry restarted later has its book)
        t_known = time.perf_counter()
        fleet_procs = [
            _start_devices(i * per, per, ports[i % len(ports)], trust_path, resubscribe) for i in range(procs)
        ]
        boots = [_read(p, "ready") for p in fleet_procs]  # count, seconds, desired subscriptions refused
        boot_s = time.perf_counter() - t_known
        while len(fleet.view.members(GROUP)) < per * procs and time.perf_counter() - t_known < boot_s + 120:
            time.sleep(0.05)
        known_s = time.perf_counter() - t_known
        runner = RolloutRunner(reg, Publisher(link, topics, key), fleet)
        lags.clear()  # the births' retained states are as old as they are: freshness counts what comes now
        cpu0, t0 = time.process_time(), time.perf_counter()
        r = runner.create(f"{mv.name}@{mv.version}", f"group:{GROUP}", canary=canary, waves=waves)
        wave_done: list[float] = []
        dispatched_at: list[float] = [time.time()]  # the canary is dispatched by create

        def on_update(roll: Any) -> None:
            sent = sum(1 for w in roll.plan.waves if any(roll.devices[d].status.value != "pending" for d in w))
            while len(dispatched_at) < sent:
                dispatched_at.append(time.time())
            done = sum(1 for w in roll.plan.waves if all(roll.devices[d].status.value == "committed" for d in w))
            while len(wave_done) < done:
                wave_done.append(time.perf_counter() - t0)

        r = runner.run(r.plan.id, on_update=on_update, timeout_s=timeout_s)
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        committed = sum(1 for t in r.devices.values() if t.status.value == "committed")
        for p in fleet_procs:
            _ask(p, "status")
        status = [json.loads(" ".join(_read(p, "status"))) for p in fleet_procs]
        out: dict[str, Any] = {
            "devices": per * procs,
            "status": r.status.value,
            "committed": committed,
            "devices_reporting_committed": sum(int(s["committed"]) for s in status),
            "seconds": seconds,
            "waves": [len(w) for w in r.plan.waves],
            "wave_done_s": wave_done,
            "wave_dispatched_at": dispatched_at,  # epoch, when this process saw each wave dispatched
            "registry_cpu_s": cpu,
            "registry_cpu_per_device_ms": cpu / max(1, committed) * 1000,
            "fleet_boot_s": boot_s,  # devices started until every one's desired subscription was granted
            "fleet_boot_refused": sum(int(b[2]) for b in boots),
            "fleet_births_s": known_s,  # devices started until the view knew all
            "fleet_view_freshness": _spread(lags),
            "artifact_bytes": mv.size if hasattr(mv, "size") else None,
            "devices_resubscribe": resubscribe,
            "subscriptions_refused": sum(int(s["refused"]) for s in status),
            "subscriptions_retried": sum(int(s["retried"]) for s in status),
            "registry_link": {"sub_refused": link.stats.sub_refused, "sub_retried": link.stats.sub_retried},
        }
        if committed < per * procs:  # what the runner saw of each device left, and what the device saw
            seen = {d: (t.status.value, t.wave) for d, t in r.devices.items() if t.status.value != "committed"}
            left = [s for st in status for s in st["not_committed"]]
            out["not_committed"] = [  # the devices of dispatched waves (a pending wave's are only counted)
                {**s, "runner": seen[s["device"]]}
                for s in left
                if seen.get(s["device"], ("",))[0] not in ("", "pending")
            ]
            out["not_committed_by_runner_status"] = _count(v[0] for v in seen.values())
        # from a wave's dispatch (its desired states acknowledged by the broker) to each device's offer
        offer_at = {d: t for st in status for d, t in st["offer_at"].items()}
        offer_lags: list[list[float]] = [[] for _ in r.plan.waves]
        for d, t in offer_at.items():
            w = r.devices[d].wave
            if w < len(dispatched_at):
                offer_lags[w].append(t - dispatched_at[w])
        out["offer_after_dispatch"] = [_spread(v) for v in offer_lags]
        slow = [s for st in status for s in st["slowest"]]  # offer to COMMITTED, as each device saw it
        out["slowest_devices"] = sorted(slow, key=lambda s: -max((t for t, _ in s["trail"]), default=0.0))[:8]
    finally:
        link.stop()
        _stop(fleet_procs)
        reg.close()
    return out


def _log_registry_side() -> None:
    """The registry's link (connects, losses, refused subscriptions) and the runner, timestamped on
    stderr: what happened to the registry side is read from there when a run goes wrong."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("edgeline.core.mqtt_link", "cloud_registry"):
        lg = logging.getLogger(name)
        if not lg.handlers:
            lg.addHandler(handler)
            lg.setLevel(logging.INFO)


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    if role != "device":
        raise SystemExit(f"unknown role {role!r}")
    device_main(int(rest[0]), int(rest[1]), int(rest[2]), rest[3], resubscribe=rest[4:] != ["no-resubscribe"])
