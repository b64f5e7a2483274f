"""A rollout to 1,000 light simulated devices in waves until every one is COMMITTED (bench_fleet's
``rollout`` arm), and how fresh the registry's fleet view is meanwhile.

Devices (``python bench/fleet_rollout.py device FIRST COUNT PORT TRUST``, 4 processes of 250 MQTT
3.1.1 connections, persistent sessions) speak the real delivery protocol: a retained birth state
with their group and a retained presence, a minimal Will; on a signed desired state they verify the
signature against the trust store (Ed25519, ``TrustStore.verify``) and the manifest, refuse a
sequence they have seen, subscribe to the artifact's exact chunk topics (retained), check every
chunk's sha256 and the whole artifact's, then report ``downloading`` .. ``committed`` (QoS 1 events)
and a retained COMMITTED state. They have no updater (no A/B slot, no ONNX Runtime load, no trial):
``bench/bench_delivery.py`` measures those on 50 real agents.

The registry side is this process: ``Registry`` (SQLite) with a signed tiny bundle, the
``Publisher``, the ``FleetWatcher`` with the registry store as its book, and the ``RolloutRunner``
driving ``group:fleet`` with a canary and waves (``--waves``) until COMMITTED; the registry is up
before the devices start, so it learns them from their births. Reported: the time
from ``create`` to settled, each wave's, the registry process's CPU (this process: runner,
publisher, fleet view, MQTT thread), and the fleet view's freshness: for every state message the
devices sent, the time from the device's timestamp to the view holding it (one clock: one machine).
"""

from __future__ import annotations

import hashlib
import json
import os
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


def say(*words: object) -> None:
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


class LightDevice:
    """One simulated device: the delivery protocol without an updater behind it."""

    def __init__(self, device_id: str, port: int, trust: Any, topics: Any) -> None:
        from edgeline.core.protocol.delivery import DevicePresence

        self.id = device_id
        self.trust = trust
        self.t = topics
        self.seq = 0
        self.model: Any = None
        self.manifest: Any = None
        self.chunks: dict[int, bytes] = {}
        self.committed = 0
        self.lock = threading.Lock()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311, clean_session=False)
        offline = DevicePresence(device_id=device_id, online=False).model_dump_json(by_alias=True)
        c.will_set(topics.device_online(device_id), offline, qos=1, retain=True)
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
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

    def _on_connect(self, c: mqtt.Client, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        from edgeline.core.protocol.delivery import DevicePresence

        c.subscribe([(self.t.device_desired(self.id), 1)])
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
        self._event("downloading", "DOWNLOADING")
        art = manifest.artifact
        n = -(-art.size // art.chunk_size)
        c.subscribe([(self.t.artifact_chunk(art.sha256, i), 1) for i in range(n)])

    def _chunk(self, c: mqtt.Client, topic: str, payload: bytes) -> None:
        with self.lock:
            m = self.manifest
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


def device_main(first: int, count: int, port: int, trust_path: str) -> None:
    from edgeline.core.protocol.signing import TrustStore
    from edgeline.core.protocol.topics import Topics

    trust = TrustStore.load(Path(trust_path))
    topics = Topics()
    devices = [LightDevice(f"dev-{i:04d}", port, trust, topics) for i in range(first, first + count)]
    while not all(d.c.is_connected() for d in devices):
        time.sleep(0.05)
    say("ready", count)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "committed":
            say("committed", sum(d.committed for d in devices))
        elif cmd[0] == "quit":
            break
    for d in devices:
        d.c.disconnect()
        d.c.loop_stop()


def _start_devices(first: int, count: int, port: int, trust: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(Path(__file__)), "device", str(first), str(count), str(port), str(trust)]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


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


def rollout_arm(ports: list[int], devices: int, work: Path, *, canary: int, waves: str) -> dict[str, Any]:
    """One rollout of a tiny model to ``devices`` light devices spread over ``ports``."""
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
    # the registry first, the devices then: their births reach it live (RabbitMQ would not deliver
    # the retained ones to the fleet view's wildcard; a registry restarted later has its book)
    t_known = time.perf_counter()
    fleet_procs = [_start_devices(i * per, per, ports[i % len(ports)], trust_path) for i in range(procs)]
    for p in fleet_procs:
        _read(p, "ready")
    while len(fleet.view.members(GROUP)) < per * procs and time.perf_counter() - t_known < 120:
        time.sleep(0.05)
    known_s = time.perf_counter() - t_known
    runner = RolloutRunner(reg, Publisher(link, topics, key), fleet)
    lags.clear()  # the births' retained states are as old as they are: freshness counts what comes now
    cpu0, t0 = time.process_time(), time.perf_counter()
    r = runner.create(f"{mv.name}@{mv.version}", f"group:{GROUP}", canary=canary, waves=waves)
    wave_done: list[float] = []

    def on_update(roll: Any) -> None:
        done = sum(1 for w in roll.plan.waves if all(roll.devices[d].status.value == "committed" for d in w))
        while len(wave_done) < done:
            wave_done.append(time.perf_counter() - t0)

    r = runner.run(r.plan.id, on_update=on_update, timeout_s=600)
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    committed = sum(1 for t in r.devices.values() if t.status.value == "committed")
    for p in fleet_procs:
        assert p.stdin is not None
        p.stdin.write("committed\n")
        p.stdin.flush()
    reported = sum(int(_read(p, "committed")[0]) for p in fleet_procs)
    out = {
        "devices": per * procs,
        "status": r.status.value,
        "committed": committed,
        "devices_reporting_committed": reported,
        "seconds": seconds,
        "waves": [len(w) for w in r.plan.waves],
        "wave_done_s": wave_done,
        "registry_cpu_s": cpu,
        "registry_cpu_per_device_ms": cpu / max(1, committed) * 1000,
        "fleet_births_s": known_s,  # devices started until the view knew all
        "fleet_view_freshness": _spread(lags),
        "artifact_bytes": mv.size if hasattr(mv, "size") else None,
    }
    link.stop()
    for p in fleet_procs:
        assert p.stdin is not None
        try:
            p.stdin.write("quit\n")
            p.stdin.flush()
            p.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            p.kill()
    reg.close()
    return out


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    if role != "device":
        raise SystemExit(f"unknown role {role!r}")
    device_main(int(rest[0]), int(rest[1]), int(rest[2]), rest[3])
