"""Broker restarts and network faults during rollouts and during telemetry.

Two real agents (``edgeline agent run``, updater + telemetry) reach a real Mosquitto through one TCP
fault proxy each; the registry (rollout runner, fleet view), the telemetry ingest and the event
ledger talk to the broker directly. While rollouts run, a seeded random schedule keeps breaking
things: connections cut, new connections refused, bytes stalled, bytes black-holed, latency added,
and the broker itself restarted gracefully or SIGKILLed and started again.

Two broker configurations. Mosquitto saves its database periodically (``autosave_interval``): a
broker that is SIGKILLed forgets the QoS 1 messages and retained messages it acknowledged since its
last save. With ``autosave_on_changes true`` (save after every change) nothing is ever forgotten.
With periodic saving only (the default) a broker crash can lose what it had acknowledged: the
registry publishes again what a crashed broker may have lost when its connection comes back, and a
device deletes a window or an event only when the ingest acknowledges it (end to end, not on the
broker's PUBACK), so in both configurations nothing may be lost.

Must hold: every rollout completes (its runner restarted, as a service supervisor would, if the
broker vanished under it); each device serves the rolled-out model; each deployment's event history,
as the ingest stored it, is complete with no step twice; and the ingest holds exactly the telemetry
windows each device's outbox delivered (the ingest confirmed them), each once, none overlapping
another of the same model. The event ledger, a plain subscriber, only counts redeliveries: with
periodic saving a broker crash can take from it what the ingest got.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloud_registry.errors import RegistryError
from cloud_registry.fleet import FleetWatcher
from cloud_registry.publisher import Publisher
from cloud_registry.registry import Registry
from cloud_registry.rollout import Rollout
from cloud_registry.rollout_runner import RolloutRunner
from cloud_registry.telemetry.ingest import IngestService
from cloud_registry.telemetry.store import TelemetryStore
from converters.keys import KeyPaths
from edge_agent.telemetry.privacy import pseudonym
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.delivery import DeviceEvent, parse_event
from edgeline.core.protocol.signing import TrustStore
from edgeline.demo.broker import MosquittoBroker
from tests.delivery.agent_proc import write_frames
from tests.delivery.conftest import BuiltBundle, Cloud, wait_for
from tests.faults.conftest import PSEUDONYM_SECRET, CampaignReport, Counts
from tests.faults.tools.agent import FaultAgent
from tests.faults.tools.ledger import EventLedger, history_problems, stored_windows, window_problems
from tests.faults.tools.proxy import FaultProxy

GROUP = "line-f"
DEVICES = ("net-1", "net-2")
#: fault -> weight in the random schedule
FAULTS = {"cut": 3, "refuse": 2, "stall": 2, "drop": 2, "delay": 2, "broker_restart": 1, "broker_kill": 1}


@dataclass
class Schedule:
    """Breaks the network at random until stopped; every fault is healed before the next one."""

    proxies: list[FaultProxy]
    broker: MosquittoBroker
    rng: random.Random
    stop: threading.Event = field(default_factory=threading.Event)
    applied: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.once()
                self.stop.wait(self.rng.uniform(0.2, 0.8))
        except Exception as exc:  # surfaced by the test
            self.errors.append(repr(exc))
        finally:
            for p in self.proxies:
                p.heal()
            if not self.broker.running:
                self.broker.start()

    def once(self) -> None:
        kind = self.rng.choices(list(FAULTS), weights=list(FAULTS.values()))[0]
        hold = self.rng.uniform(0.3, 2.0)
        targets = self.proxies if self.rng.random() < 0.5 else [self.rng.choice(self.proxies)]
        self.applied[kind] += 1
        if kind == "broker_restart":
            self.broker.stop()
            self.stop.wait(hold)
            self.broker.start()
            return
        if kind == "broker_kill":
            self.broker.kill()
            self.stop.wait(hold)
            self.broker.start()
            return
        for p in targets:
            if kind == "cut":
                p.cut()
            elif kind == "refuse":
                p.refuse()
                p.cut()
            elif kind == "stall":
                p.stall()
            elif kind == "drop":
                p.drop()
            elif kind == "delay":
                p.delay(self.rng.uniform(0.02, 0.3))
        if kind != "cut":
            self.stop.wait(hold)
            for p in targets:
                p.heal()


def stored_events(store: TelemetryStore, device_id: str) -> list[DeviceEvent]:
    """One device's deployment events as the ingest stored them (each once, by ``event_id``)."""
    rows = store.execute("SELECT body FROM events WHERE device_id = ? ORDER BY ts", (device_id,))
    return [parse_event(str(r[0]).encode()) for r in rows]


SAVE_ON_CHANGE = "save-on-change"
PERIODIC = "periodic-save"


@pytest.fixture
def mosquitto(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MosquittoBroker]:
    """The real Mosquitto of the campaign, saving its database after every change or periodically
    (every second, Mosquitto's own default being 30 minutes and edgeline's production template 60 s)."""
    mode = getattr(request, "param", SAVE_ON_CHANGE)
    extra = "autosave_on_changes true" if mode == SAVE_ON_CHANGE else ""
    broker = MosquittoBroker(tmp_path / "mosquitto", extra_config=extra)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@dataclass
class RegistrySide:
    registry: Registry
    link: MqttLink
    fleet: FleetWatcher
    runner: RolloutRunner
    restarts: int = 0

    def rollout(self, ref: str, *, downgrade: bool, timeout_s: float) -> Rollout:
        """Create and drive a rollout to its end. When the broker vanishes under the registry, the
        command is retried and the runner started again on the stored rollout, as an operator or the
        runner's service supervisor would."""
        deadline = time.monotonic() + timeout_s
        rollout_id: str | None = None
        r: Rollout | None = None
        while time.monotonic() < deadline:
            try:
                if rollout_id is None:
                    created = self.runner.create(ref, f"group:{GROUP}", waves="1,all", allow_downgrade=downgrade)
                    rollout_id = created.plan.id
                r = self.runner.run(rollout_id, timeout_s=max(1.0, deadline - time.monotonic()))
            except RegistryError:
                self.restarts += 1
                time.sleep(0.5)
                continue
            if r.settled:
                break
        assert rollout_id is not None, f"rollout of {ref} never created"
        return r if r is not None else self.runner.load(rollout_id)


@pytest.fixture
def registry_side(
    cloud: Cloud, chunky: dict[int, BuiltBundle], trust: TrustStore, tmp_path: Path
) -> Iterator[RegistrySide]:
    reg = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}", f"file://{tmp_path / 'artifacts'}")
    for b in chunky.values():
        reg.add_bundle(b.path, trust, selftest=False)
    link = MqttLink(
        LinkSettings(port=cloud.broker.port, client_id="faults-registry", clean_start=True, reconnect_max_s=1.0)
    )
    fleet = FleetWatcher(link, cloud.topics)
    link.connect(10)
    side = RegistrySide(reg, link, fleet, RolloutRunner(reg, Publisher(link, cloud.topics, cloud.signer), fleet))
    try:
        yield side
    finally:
        link.stop()
        reg.close()


@pytest.mark.parametrize(
    "mosquitto", [SAVE_ON_CHANGE, pytest.param(PERIODIC, marks=pytest.mark.full_only)], indirect=True
)
def test_rollouts_and_telemetry_survive_network_faults_and_broker_restarts(
    mosquitto: MosquittoBroker,
    cloud: Cloud,
    registry_side: RegistrySide,
    chunky: dict[int, BuiltBundle],
    frames: list[Any],
    tmp_path: Path,
    ledger: EventLedger,
    ingest: IngestService,
    store: TelemetryStore,
    pseudonym_key: Path,
    counts: Counts,
    report: CampaignReport,
) -> None:
    durable = "autosave_on_changes" in mosquitto.extra_config  # reported; both must lose nothing
    seed = int(os.environ.get("EDGELINE_FAULT_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    report.figures.update(seed=seed, broker=SAVE_ON_CHANGE if durable else PERIODIC)
    frames_dir = write_frames(tmp_path / "frames", frames)
    proxies = [FaultProxy(cloud.broker.port) for _ in DEVICES]
    agents = [
        FaultAgent(
            dev,
            tmp_path / dev,
            proxy.port,
            KeyPaths(cloud.key_dir).trust,
            frames_dir,
            {"trial_frames": 10, "trial_timeout_s": 60.0, "trial_latency_budget_ms": 2000.0, "min_free_bytes": 0},
            {},
            pseudonym_key=pseudonym_key,
            groups=(GROUP,),
            telemetry={"window_s": 0.5},
        )
        for dev, proxy in zip(DEVICES, proxies, strict=True)
    ]
    schedule = Schedule(proxies, cloud.broker, rng)
    faults = threading.Thread(target=schedule.run, name="fault-schedule", daemon=True)
    side = registry_side
    try:
        for a in agents:
            a.start(with_faults=False)
        assert wait_for(lambda: len(side.fleet.view.members(GROUP)) == len(DEVICES), 30), [a.log_tail() for a in agents]
        first = side.rollout("tiny@1", downgrade=False, timeout_s=60)  # before any fault
        assert first.status == "completed", first.log
        time.sleep(1.3)  # > Mosquitto's autosave interval: what the registry published is on its disk

        started = time.monotonic()
        faults.start()
        plan = [2, 3, 1, 2, 3][: counts.network_rollouts]
        done: list[Rollout] = []
        for i, version in enumerate(plan):
            r = side.rollout(f"tiny@{version}", downgrade=i > 0 and version < plan[i - 1], timeout_s=180)
            assert r.status == "completed", f"seed {seed}: rollout of v{version}: {r.status} {r.reason} {r.log}"
            done.append(r)
        while time.monotonic() - started < counts.network_faults_s:
            time.sleep(0.2)  # telemetry under faults for the rest of the campaign
        schedule.stop.set()
        faults.join(30)
        assert schedule.errors == []
        fault_s = time.monotonic() - started

        want = chunky[plan[-1]].manifest.artifact.sha256
        for a in agents:
            assert wait_for(lambda a=a: a.serving() == want, 60), (
                f"{a.device_id} serves {a.serving()}, not {want}: record {a.record()}"
            )
            assert wait_for(lambda a=a: not a.events_outbox().keys and not a.windows_outbox().keys, 60), (
                f"{a.device_id}: outboxes not drained after the faults: events {a.events_outbox()}, "
                f"windows {a.windows_outbox().counters} {sorted(a.windows_outbox().keys)}"
            )
            a.terminate()
        stored = lost_windows = 0
        event_problems: list[str] = []
        for a in agents:
            problems = history_problems(stored_events(store, a.device_id))
            event_problems += problems
            out = a.windows_outbox()
            # the outbox was empty above, with the agent running; its graceful stop then closes the
            # running window into the outbox (and one more may have closed in between): kept, durable,
            # for the next start. None may be dropped. (Asserting an empty outbox here failed once in
            # five suite runs: one window, the one closed at the stop.)
            assert out.dropped() == 0 and len(out.keys) <= 2, (
                f"seed {seed}: {a.device_id}: outbox after the stop: {sorted(out.keys)} {out.counters}"
            )
            pseudo = pseudonym(a.device_id, bytes.fromhex(PSEUDONYM_SECRET))
            wait_for(lambda p=pseudo, n=out.delivered: len(stored_windows(store, p)) >= n, 20)
            spans = stored_windows(store, pseudo)
            assert window_problems(spans) == [], f"seed {seed}: {a.device_id}: windows duplicated"
            # a window still queued may already be stored: sent at the stop, its acknowledgement not
            # processed before the exit; it goes again at the next start and the ingest deduplicates it
            assert len(spans) <= out.delivered + len(out.keys)
            assert problems == [], f"seed {seed}: {a.device_id}: events lost or duplicated: {problems}"
            assert out.delivered <= len(spans) <= out.delivered + len(out.keys), (
                f"seed {seed}: {a.device_id}: {len(spans)} windows stored, the outbox delivered {out.delivered}"
                f" and still holds {len(out.keys)}"
            )
            assert out.counters.get("delivered.unconfirmed", 0) == 0, out.counters
            stored += len(spans)
            lost_windows += max(0, out.delivered - len(spans))
        assert ingest.ingestor.stats.rejected == {}
        report.figures.update(
            outcome="passed",
            fault_seconds=round(fault_s, 1),
            faults=dict(schedule.applied),
            proxy_connections_cut=sum(p.stats.cut + p.stats.reset_after_drop for p in proxies),
            proxy_connects_refused=sum(p.stats.refused for p in proxies),
            bytes_black_holed=sum(p.stats.bytes_dropped for p in proxies),
            rollouts_completed=len(done),
            runner_restarts=side.restarts,
            windows_stored=stored,
            windows_lost=lost_windows,
            event_history_problems=event_problems,
            ingest_duplicates=ingest.ingestor.stats.duplicates,
            events_unique=sum(len(store.event_ids(d)) for d in DEVICES),
            events_in_ledger=sum(len(ledger.of(d)) for d in DEVICES),
            event_redeliveries=ledger.redelivered,
            ingest_event_duplicates=ingest.ingestor.stats.events_duplicates,
        )
    finally:
        schedule.stop.set()
        for a in agents:
            a.sigkill()
        for p in proxies:
            p.close()


def test_a_broker_outage_at_dispatch_time_does_not_strand_the_rollout(
    cloud: Cloud, registry_side: RegistrySide, chunky: dict[int, BuiltBundle], frames: list[Any], tmp_path: Path
) -> None:
    """The broker goes away between the artifact upload and the wave's dispatch: ``rollout create``
    fails. The stored rollout must not be left waiting for deployments that were never published:
    running it again once the broker is back dispatches them, and the rollout completes."""
    side = registry_side
    dev = cloud.device("strand-1", groups=(GROUP,), frames=frames, state_dir=tmp_path / "strand-1")
    assert wait_for(lambda: side.fleet.view.members(GROUP) == ["strand-1"], 20)
    side.runner._ensure_artifact("tiny", 1)  # the upload went through ...
    time.sleep(1.3)  # ... and is on the broker's disk
    cloud.broker.stop()  # ... then the broker goes away before the wave is dispatched
    with pytest.raises(RegistryError):
        side.runner.create("tiny@1", f"group:{GROUP}", rollout_id="stranded")
    cloud.broker.start()
    assert wait_for(lambda: side.link.connected and dev.link.connected, 20)
    r = side.runner.run("stranded", timeout_s=30)
    assert r.status == "completed", (r.status, r.log, r.devices)
    assert dev.version() == 1
