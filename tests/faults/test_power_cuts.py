"""Power cuts: SIGKILL the real agent (``edgeline agent run`` with the updater and telemetry plugins)
at random points of a deployment, again and again, on one device that keeps its disk.

Each cut is one of:

* **fault point**: the agent runs with ``[updater.faults]`` and is killed where the updater holds
  (``pause_at`` a state, or ``pause_after_chunks`` a random number of chunks into the download),
  or kills itself right after persisting a state (``crash_at``);
* **timed**: no fault point at all; SIGKILL at a uniformly random moment after the deployment was
  published (it lands anywhere: between two steps, inside a write, in the trial, after the commit);
* **at rest**: before a fault-point cut the agent that converged is itself killed in steady
  inspection (the device loses power while nothing is being updated), after a second cut off the
  network (through the TCP fault proxy), so telemetry windows wait in the outbox at the cut.

After every cut the agent restarts without faults, and the test waits for, then checks:

* exactly one working model: the status file of the NEW process, the updater record, the
  ``slots/current`` link and the retained state topic all name the same model; it is the new model
  when the cut came before the trial, the old one when it came during the trial (fail closed); the
  slot's bundle verifies, loads in ONNX Runtime and passes its self-test; nothing is left in the
  download area but, at most, a signed offer of a few KB;
* the outboxes intact: every deployment event and every telemetry window that was in the device's
  durable outboxes at the moment of the cut reaches the cloud.

At the end: every deployment's deduplicated event history is complete (each step once, exactly one
terminal event), and the ingest stored every window the device's outbox delivered exactly once, with
no two windows of one model covering the same time.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_registry.publisher import reissue
from cloud_registry.telemetry.ingest import IngestService
from cloud_registry.telemetry.store import TelemetryStore
from converters.keys import KeyPaths
from edge_agent.bundle import open_bundle
from edge_agent.model import LoadedModel
from edge_agent.telemetry.privacy import pseudonym
from edgeline.core.protocol.signing import TrustStore
from tests.delivery.agent_proc import write_frames
from tests.delivery.conftest import BuiltBundle, Cloud, wait_for
from tests.faults.conftest import PSEUDONYM_SECRET, CampaignReport, Counts
from tests.faults.tools.agent import FaultAgent
from tests.faults.tools.ledger import EventLedger, history_problems, stored_windows, window_problems
from tests.faults.tools.proxy import FaultProxy

PHASES = ("DOWNLOADING", "VERIFIED", "STAGED", "TRIAL", "COMMITTED")
RESTING = ("COMMITTED", "ROLLED_BACK", "IDLE")
#: the first cuts cover every phase with both kinds of fault point; the rest are drawn at random
OPENING: tuple[tuple[str, str | None], ...] = (
    ("chunks", "DOWNLOADING"),
    ("crash", "VERIFIED"),
    ("pause", "STAGED"),
    ("crash", "TRIAL"),
    ("pause", "COMMITTED"),
    ("timed", None),
    ("crash", "DOWNLOADING"),
    ("pause", "VERIFIED"),
    ("crash", "STAGED"),
    ("pause", "TRIAL"),
    ("crash", "COMMITTED"),
    ("timed", None),
)


@dataclass(frozen=True)
class Cut:
    method: str  # chunks | pause | crash | timed
    phase: str | None
    chunks: int = 0
    delay_s: float = 0.0


#: the --full run: at least this many SIGKILLs (cuts during a deployment plus cuts at rest)
FULL_KILLS = 1000


def kills_of(picks: list[tuple[str, str | None]]) -> int:
    """Every cut is one SIGKILL; every cut at a fault point is preceded by one at rest."""
    return len(picks) + sum(1 for method, _ in picks if method != "timed")


def plan(n: int, rng: random.Random, chunks: int, min_kills: int = 0) -> list[Cut]:
    picks = list(OPENING[:n])
    while len(picks) < n or kills_of(picks) < min_kills:
        r = rng.random()
        if r < 0.4:
            picks.append(("timed", None))
        else:
            method = rng.choice(("pause", "crash"))
            phase = rng.choice(PHASES)
            if phase == "DOWNLOADING" and rng.random() < 0.7:
                method = "chunks"  # somewhere in the middle of the download, not at its start
            picks.append((method, phase))
    return [Cut(m, p, chunks=rng.randint(1, chunks - 1), delay_s=rng.random()) for m, p in picks]


@dataclass
class Tally:
    cuts: Counter[str] = field(default_factory=Counter)  # state of the updater record at the cut
    methods: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)  # new model / old model after the restart
    events_in_flight: int = 0  # deployment events in the durable outbox at a cut
    windows_in_flight: int = 0  # telemetry windows in the durable outbox at a cut
    at_rest: int = 0
    restarts: int = 0


class Device:
    """One device across power cuts: the agent process, its deployments and the expectations."""

    def __init__(
        self, agent: FaultAgent, cloud: Cloud, ledger: EventLedger, store: TelemetryStore, trust: TrustStore
    ) -> None:
        self.agent = agent
        self.cloud = cloud
        self.ledger = ledger
        self.store = store
        self.trust = trust
        self.serving: BuiltBundle | None = None
        self.sequence = 0

    @property
    def id(self) -> str:
        return self.agent.device_id

    def deploy(self, b: BuiltBundle) -> int:
        self.sequence = self.cloud.next_sequence()
        man = reissue(b.manifest, sequence=self.sequence, devices=(self.id,), allow_downgrade=True)
        self.cloud.publisher.publish_desired(self.id, man)
        return self.sequence

    def start(self, faults: dict[str, Any] | None = None) -> None:
        self.agent.faults = faults or {}
        self.agent.clear_fault_marker()
        self.agent.start(with_faults=bool(faults))

    def converged(self, want: str) -> bool:
        a = self.agent
        st, rec = a.status(), a.record()
        if not (a.alive and st and rec and a.proc is not None and st.get("pid") == a.proc.pid):
            return False
        if a.serving() != want or a.inspected() == 0:
            return False
        if rec["state"] not in RESTING or rec["pending"] is not None or rec["active"] is None:
            return False
        if (rec["slots"][rec["active"]] or {}).get("sha256") != want:
            return False
        retained = self.ledger.state(self.id)
        return (
            retained is not None
            and retained.online
            and retained.model is not None
            and retained.model.sha256 == want
            and retained.slot == rec["active"]
            and retained.updater.value in RESTING
        )

    def check_one_working_model(self, want: str, context: str) -> None:
        a = self.agent
        assert wait_for(lambda: self.converged(want), 60), (
            f"{context}: no convergence on {want[:12]}\nrecord: {a.record()}\nstatus: {a.status_doc()}\n"
            f"retained: {self.ledger.state(self.id)}\n{a.log_tail()}"
        )
        rec = a.record()
        assert rec is not None
        active = rec["active"]
        assert os.readlink(a.state_dir / "slots" / "current") == active, context
        # no partial artifact left behind (a signed offer of a few KB may wait for the next deployment)
        parts = sorted(p.name for p in (a.state_dir / "downloads").iterdir() if not p.name.endswith(".offer.json"))
        assert parts == [], f"{context}: download area not cleaned: {parts}"
        bundle = open_bundle(a.state_dir / "slots" / active, self.trust, check_expiry=False)
        assert bundle.manifest.artifact.sha256 == want, context
        model = LoadedModel.load(bundle.manifest, bundle.model_path)
        model.self_test()


def check_nothing_lost(
    ledger: EventLedger, store: TelemetryStore, event_ids: set[str], window_keys: set[str], ctx: str
) -> None:
    """Every event and window that sat in the durable outboxes at the cut reaches the cloud."""
    assert wait_for(lambda: ledger.has(event_ids), 20), f"{ctx}: events lost: {event_ids - set(ledger.events)}"
    assert wait_for(lambda: window_keys <= store.keys(), 20), (
        f"{ctx}: windows lost: {sorted(window_keys - store.keys())[:5]}"
    )


def on_disk(state_dir: Path) -> set[str]:
    """sha256 of the model files in both slots (a rolled-back or replaced model stays on disk and is
    copied instead of downloaded when it is deployed again)."""
    out = set()
    for slot in ("A", "B"):
        for f in (state_dir / "slots" / slot).glob("*.onnx"):
            out.add(hashlib.sha256(f.read_bytes()).hexdigest())
    return out


def next_version(
    serving: BuiltBundle | None, chunky: dict[int, BuiltBundle], rng: random.Random, *, absent_from: set[str]
) -> BuiltBundle:
    """A version other than the serving one; one that is not on disk at all when ``absent_from`` is
    given (a cut in the middle of a download needs a real download)."""
    now = serving.manifest.artifact.sha256 if serving is not None else ""
    choices = [b for b in chunky.values() if b.manifest.artifact.sha256 not in {now, *absent_from}]
    return rng.choice(choices)


def test_power_cuts_during_updates_leave_one_working_model_and_the_outboxes_intact(
    cloud: Cloud,
    chunky: dict[int, BuiltBundle],
    frames: list[Any],
    tmp_path: Path,
    ledger: EventLedger,
    ingest: IngestService,
    store: TelemetryStore,
    trust: TrustStore,
    pseudonym_key: Path,
    counts: Counts,
    report: CampaignReport,
) -> None:
    seed = int(os.environ.get("EDGELINE_FAULT_SEED", time.time_ns() % 1_000_000))
    proxy = FaultProxy(cloud.broker.port)
    rng = random.Random(seed)
    report.figures["seed"] = seed
    for b in chunky.values():
        cloud.publisher.publish_artifact(b.manifest, b.data)
    total_chunks = chunky[1].manifest.artifact.chunk_count
    agent = FaultAgent(
        "power-1",
        tmp_path / "power-1",
        proxy.port,
        KeyPaths(cloud.key_dir).trust,
        write_frames(tmp_path / "frames", frames),
        {
            "trial_frames": 10,
            "trial_timeout_s": 30.0,
            "trial_latency_budget_ms": 2000.0,
            "min_free_bytes": 0,
            "chunk_window": 2,
        },
        {},
        pseudonym_key=pseudonym_key,
        telemetry={"window_s": 0.5},
    )
    dev = Device(agent, cloud, ledger, store, trust)
    tally = Tally()
    cuts = plan(counts.power_cuts, rng, total_chunks, min_kills=FULL_KILLS if counts.full else 0)
    try:
        # the first model, installed without faults: from here on there is always an old model
        dev.start()
        first = chunky[1]
        t0 = time.monotonic()
        dev.deploy(first)
        dev.check_one_working_model(first.manifest.artifact.sha256, "first install")
        deploy_s = time.monotonic() - t0
        dev.serving = first

        for i, cut in enumerate(cuts):
            ctx = f"cut {i} {cut} (seed {seed})"
            old = dev.serving
            assert old is not None
            new = next_version(
                old, chunky, rng, absent_from=on_disk(agent.state_dir) if cut.method == "chunks" else set()
            )
            if cut.method == "timed":
                seq = dev.deploy(new)
                time.sleep(cut.delay_s * deploy_s)
                agent.sigkill()
            else:
                proxy.refuse()  # the network goes first: windows pile up in the outbox ...
                proxy.cut()
                time.sleep(1.0)
                tally.windows_in_flight += len(agent.windows_outbox().keys)
                agent.sigkill()  # ... then the power, while inspecting with nothing being updated
                proxy.heal()
                tally.at_rest += 1
                faults: dict[str, Any]
                if cut.method == "chunks":
                    faults = {"pause_after_chunks": cut.chunks}
                elif cut.method == "pause":
                    faults = {"pause_at": cut.phase}
                else:
                    faults = {"crash_at": cut.phase}
                dev.start(faults)
                seq = dev.deploy(new)
                if cut.method == "crash":
                    assert wait_for(lambda: not agent.alive, 60), f"{ctx}: never crashed\n{agent.log_tail()}"
                else:
                    assert wait_for(lambda: agent.fault_hit() is not None, 60), f"{ctx}: never held\n{agent.log_tail()}"
                agent.sigkill()
            tally.methods[cut.method] += 1

            # what the disk says at the cut
            rec = agent.record()
            assert rec is not None, ctx
            state = rec["state"]
            if cut.method != "timed":
                assert state == cut.phase, f"{ctx}: record says {state}"
            tally.cuts[state] += 1
            events_at_cut = agent.queued_events()
            windows_at_cut = agent.windows_outbox().keys
            tally.events_in_flight += len(events_at_cut)
            tally.windows_in_flight += len(windows_at_cut)

            # which model must serve after the restart
            if state == "TRIAL":
                want = old  # the trial is failed closed: the new model may be what killed the agent
            elif state in RESTING and rec["sequence"] >= seq:
                active = rec["slots"][rec["active"]]
                want = new if active["sha256"] == new.manifest.artifact.sha256 else old
                assert want is new, f"{ctx}: resting on the old model after the deployment: {rec}"
            else:
                want = new  # an interrupted download, verification or staging resumes and completes
            dev.start()
            tally.restarts += 1
            dev.check_one_working_model(want.manifest.artifact.sha256, ctx)
            dev.serving = want
            tally.outcomes["new" if want is new else "old"] += 1

            # nothing that was durable at the cut is lost
            check_nothing_lost(ledger, store, set(events_at_cut), set(windows_at_cut), ctx)

        # a clean stop at the end: the last window goes out, both outboxes drain
        assert wait_for(lambda: not agent.events_outbox().keys, 20)
        agent.terminate()
        assert agent.proc is not None and agent.proc.returncode == 0, agent.log_tail()
        windows = agent.windows_outbox()
        events = agent.events_outbox()
        assert windows.keys == frozenset(), "the windows' outbox not drained at a clean stop"
        assert events.keys == frozenset(), "the events' outbox not drained at a clean stop"
        assert windows.dropped() == 0 and events.dropped("event") == 0

        problems = history_problems(ledger.of(dev.id))
        assert problems == [], f"seed {seed}: deployment events lost or duplicated: {problems}"
        pseudo = pseudonym(dev.id, bytes.fromhex(PSEUDONYM_SECRET))
        assert wait_for(lambda: len(stored_windows(store, pseudo)) >= windows.delivered, 20)
        spans = stored_windows(store, pseudo)
        assert window_problems(spans) == []
        assert len(spans) == windows.delivered, f"{len(spans)} windows stored, the outbox delivered {windows.delivered}"
        assert ingest.ingestor.stats.rejected == {}
        assert sum(tally.cuts.values()) == len(cuts)
        assert len(cuts) + tally.at_rest == kills_of([(c.method, c.phase) for c in cuts])
        if counts.full:
            assert set(PHASES) <= set(tally.cuts), tally.cuts
            assert len(cuts) + tally.at_rest >= FULL_KILLS
        report.figures.update(
            outcome="passed",
            kills=len(cuts) + tally.at_rest,
            cuts_by_state=dict(tally.cuts),
            cuts_by_method=dict(tally.methods),
            at_rest=tally.at_rest,
            restarts=tally.restarts,
            serving_after=dict(tally.outcomes),
            events_in_flight_at_cuts=tally.events_in_flight,
            windows_in_flight_at_cuts=tally.windows_in_flight,
            events_unique=len(ledger.of(dev.id)),
            event_redeliveries=ledger.redelivered,
            windows_stored=len(spans),
            windows_delivered_by_outbox=windows.delivered,
            ingest_duplicates=ingest.ingestor.stats.duplicates,
            deployments=dev.sequence,
        )
    finally:
        agent.sigkill()
        proxy.close()
