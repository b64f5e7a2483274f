"""Broker SIGKILLs against the end-to-end acknowledgement: nothing lost, nothing stored twice.

Real agents (``edgeline agent run``, updater + telemetry) publish telemetry windows every second and
deployment events during rollouts to a real Mosquitto that saves its database only every 60 s, as the
shipped production template does. A schedule SIGKILLs the broker again and again and starts it after
a short outage: each kill forgets every message and session change since the last save, the QoS 1
messages it had acknowledged (PUBACK) included. The ingest stores windows and events and acknowledges
them on ``devices/<id>/acks``; a device deletes a message only then.

The ground truth does not come from the devices' counters: a sampler reads every agent's two outbox
files (read-only, WAL) every 0.2 s and keeps every idempotency key it ever saw. A message can leave an
outbox without being stored only by a drop (counted, must be 0) or after three unconfirmed sends
(``delivered.unconfirmed``, must be 0: the ingest confirms), and both take far longer than 0.2 s, so
a lost message is one the sampler saw. At the end (agents stopped gracefully):

* every key seen is stored by the ingest or still in its outbox (kept for the next start), none lost;
* no window stored twice and no two windows of one model covering the same time; every frame the
  agent inspected is in exactly one window (stored, still queued, or held for the minimum count k);
* every deployment's event history in the ingest's store is complete, each step once.

Counts: ``--full``: 5 agents, 10 minutes, at least 50 broker SIGKILLs; CI: 3 agents, 25 seconds.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloud_registry.telemetry.ingest import IngestService
from cloud_registry.telemetry.store import TelemetryStore
from converters.keys import KeyPaths
from edge_agent.telemetry.privacy import pseudonym
from edgeline.demo.broker import MosquittoBroker
from tests.delivery.agent_proc import write_frames
from tests.delivery.conftest import BuiltBundle, Cloud, wait_for
from tests.faults.conftest import PSEUDONYM_SECRET, CampaignReport, Counts
from tests.faults.test_network import GROUP, RegistrySide, registry_side, stored_events  # noqa: F401
from tests.faults.tools.agent import FaultAgent, read_outbox
from tests.faults.tools.ledger import history_problems, stored_windows, window_problems

#: Mosquitto's autosave in the shipped production template
AUTOSAVE_S = 60


@dataclass(frozen=True)
class Size:
    agents: int
    seconds: float
    gap_s: tuple[float, float]  # broker up between two kills
    down_s: tuple[float, float]  # broker down after a kill
    min_kills: int
    rollouts: tuple[int, ...]


FULL = Size(5, 600.0, (5.0, 12.0), (0.3, 2.0), 50, (2, 3, 1, 2))
CI = Size(3, 25.0, (2.0, 4.0), (0.3, 1.0), 4, (2,))


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(tmp_path / "mosquitto", autosave_interval=AUTOSAVE_S)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@dataclass
class Killer:
    """SIGKILLs the broker and starts it again, at random, until stopped."""

    broker: MosquittoBroker
    size: Size
    rng: random.Random
    stop: threading.Event = field(default_factory=threading.Event)
    kills: int = 0
    down_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        try:
            while not self.stop.wait(self.rng.uniform(*self.size.gap_s)):
                self.broker.kill()
                self.kills += 1
                down = self.rng.uniform(*self.size.down_s)
                self.down_s += down
                time.sleep(down)
                self.broker.start()
        except Exception as exc:  # surfaced by the test
            self.errors.append(repr(exc))
        finally:
            if not self.broker.running:
                self.broker.start()


@dataclass
class Sampler:
    """Every key ever seen in each agent's outboxes (ground truth independent of their counters)."""

    agents: list[FaultAgent]
    stop: threading.Event = field(default_factory=threading.Event)
    windows: dict[str, set[str]] = field(default_factory=dict)
    events: dict[str, dict[str, bytes]] = field(default_factory=dict)
    reads: int = 0

    def sample(self) -> None:
        for a in self.agents:
            try:
                w = read_outbox(a.telemetry_outbox)
                e = read_outbox(a.state_dir / "events.db")
            except sqlite3.Error:  # a checkpoint in progress: next time
                continue
            self.windows.setdefault(a.device_id, set()).update(w.keys)
            self.events.setdefault(a.device_id, {}).update(e.payloads)
        self.reads += 1

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.sample()


def pending_frames(agent: FaultAgent) -> int:
    """Frames held in the outbox's state for the minimum count k (not yet in any window)."""
    db = sqlite3.connect(f"file:{agent.telemetry_outbox}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM state WHERE name = 'telemetry.pending'").fetchone()
    finally:
        db.close()
    return sum(int(w["frames"]) for w in json.loads(row[0])) if row else 0


def window_frames(payloads: dict[str, bytes], keys: frozenset[str] | set[str]) -> int:
    return sum(int(json.loads(payloads[k])["frames"]) for k in keys)


def test_broker_sigkills_lose_and_duplicate_nothing_end_to_end(
    mosquitto: MosquittoBroker,
    cloud: Cloud,
    registry_side: RegistrySide,  # noqa: F811
    chunky: dict[int, BuiltBundle],
    frames: list[Any],
    tmp_path: Path,
    ingest: IngestService,
    store: TelemetryStore,
    pseudonym_key: Path,
    counts: Counts,
    report: CampaignReport,
) -> None:
    size = FULL if counts.full else CI
    seed = int(os.environ.get("EDGELINE_FAULT_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    report.figures.update(seed=seed, agents=size.agents, autosave_s=AUTOSAVE_S)
    frames_dir = write_frames(tmp_path / "frames", frames)
    agents = [
        FaultAgent(
            f"ack-{i}",
            tmp_path / f"ack-{i}",
            mosquitto.port,
            KeyPaths(cloud.key_dir).trust,
            frames_dir,
            {"trial_frames": 10, "trial_timeout_s": 60.0, "trial_latency_budget_ms": 2000.0, "min_free_bytes": 0},
            {},
            pseudonym_key=pseudonym_key,
            groups=(GROUP,),
            max_fps=10.0,
            telemetry={"ack_resend_s": 5.0, "ack_resend_max_s": 20.0},
        )
        for i in range(size.agents)
    ]
    killer = Killer(mosquitto, size, rng)
    sampler = Sampler(agents)
    threads = [threading.Thread(target=t.run, daemon=True) for t in (killer, sampler)]
    side = registry_side
    try:
        for a in agents:
            a.start(with_faults=False)
        assert wait_for(lambda: len(side.fleet.view.members(GROUP)) == size.agents, 60), agents[0].log_tail()
        first = side.rollout("tiny@1", downgrade=False, timeout_s=120)  # before any kill
        assert first.status == "completed", first.log
        started = time.monotonic()
        for t in threads:
            t.start()
        done = []
        previous = 1
        for version in size.rollouts:  # deployment events under the kills
            if time.monotonic() - started > size.seconds * 0.8:
                break
            r = side.rollout(f"tiny@{version}", downgrade=version < previous, timeout_s=size.seconds)
            done.append((version, r.status))
            previous = version
            time.sleep(rng.uniform(0, size.seconds / (2 * len(size.rollouts))))
        while time.monotonic() - started < size.seconds:
            time.sleep(0.5)
        killer.stop.set()
        threads[0].join(30)
        fault_s = time.monotonic() - started
        assert killer.errors == [], killer.errors
        assert killer.kills >= size.min_kills, f"only {killer.kills} broker SIGKILLs"

        # everything seen so far gets stored; then the agents stop gracefully
        sampler.sample()
        seen_windows = {d: set(k) for d, k in sampler.windows.items()}
        seen_events = {d: {k[3:] for k in e} for d, e in sampler.events.items()}

        def all_stored() -> bool:
            have_w, have_e = store.keys(), store.event_ids()
            return all(k <= have_w for k in seen_windows.values()) and all(k <= have_e for k in seen_events.values())

        if not wait_for(all_stored, 120):
            missing_w = sum(len(k - store.keys()) for k in seen_windows.values())
            missing_e = sum(len(k - store.event_ids()) for k in seen_events.values())
            raise AssertionError(
                f"seed {seed}: {missing_w} windows and {missing_e} events seen in an outbox never reached the "
                f"ingest, {killer.kills} broker SIGKILLs"
            )
        sampler.stop.set()
        threads[1].join(10)
        for a in agents:
            a.terminate()
        sampler.sample()

        figures: dict[str, Any] = {"windows_seen": 0, "windows_stored": 0, "windows_lost": 0, "windows_queued": 0}
        figures |= {"windows_stored_twice": 0, "frames_inspected": 0, "frames_unaccounted": 0, "events_seen": 0}
        figures |= {"events_stored": 0, "events_lost": 0, "event_history_problems": []}
        stored_keys, stored_ids = store.keys(), store.event_ids()
        for a in agents:
            out, evs = a.windows_outbox(), a.events_outbox()
            assert out.dropped() == 0 and evs.dropped("event") == 0, (out.counters, evs.counters)
            assert out.counters.get("delivered.unconfirmed", 0) == 0 == evs.counters.get("delivered.unconfirmed", 0)
            pseudo = pseudonym(a.device_id, bytes.fromhex(PSEUDONYM_SECRET))
            spans = stored_windows(store, pseudo)
            mine = {s.key for s in spans}
            seen = sampler.windows.get(a.device_id, set())
            lost = seen - stored_keys - out.keys
            queued_only = out.keys - stored_keys
            problems = window_problems(spans)
            inspected = a.inspected()
            accounted = sum(s.frames for s in spans) + window_frames(out.payloads, queued_only) + pending_frames(a)
            ev_seen = {k[3:] for k in sampler.events.get(a.device_id, {})}
            ev_lost = ev_seen - stored_ids - {k[3:] for k in evs.keys}
            history = history_problems(stored_events(store, a.device_id))
            figures["windows_seen"] += len(seen | mine)
            figures["windows_stored"] += len(mine)
            figures["windows_lost"] += len(lost)
            figures["windows_queued"] += len(queued_only)
            figures["windows_stored_twice"] += len(problems)
            figures["frames_inspected"] += inspected
            figures["frames_unaccounted"] += inspected - accounted
            figures["events_seen"] += len(ev_seen)
            figures["events_stored"] += len(store.event_ids(a.device_id))
            figures["events_lost"] += len(ev_lost)
            figures["event_history_problems"] += [f"{a.device_id}: {p}" for p in history]
            assert not lost, f"seed {seed}: {a.device_id}: windows lost: {sorted(lost)}"
            assert problems == [], f"seed {seed}: {a.device_id}: {problems}"
            assert accounted == inspected, f"seed {seed}: {a.device_id}: {inspected} frames, {accounted} in windows"
            assert not ev_lost, f"seed {seed}: {a.device_id}: events lost: {sorted(ev_lost)}"
            assert history == [], f"seed {seed}: {a.device_id}: {history}"
        assert ingest.ingestor.stats.rejected == {} and ingest.ingestor.stats.events_rejected == {}
        report.figures.update(
            outcome="passed",
            fault_seconds=round(fault_s, 1),
            broker_sigkills=killer.kills,
            broker_down_seconds=round(killer.down_s, 1),
            rollouts=done,
            outbox_samples=sampler.reads,
            ingest_duplicates_absorbed=ingest.ingestor.stats.duplicates,
            ingest_event_duplicates_absorbed=ingest.ingestor.stats.events_duplicates,
            acks_sent=ingest.ingestor.stats.acks_sent,
            resent=sum(a.windows_outbox().counters.get("resent", 0) for a in agents),
            **figures,
        )
    finally:
        killer.stop.set()
        sampler.stop.set()
        for a in agents:
            a.sigkill()
