"""Disk full, for real: the agent's state directory (model slots, download area, updater record, the
two outboxes) is a small filesystem of its own (tmpfs, or a loop-mounted ext4 image), and the test
fills it with a ballast file at the worst moments.

* **During a download**: the download is held after a few chunks (``pause_after_chunks``), the disk
  is filled, the download goes on and its writes fail with ENOSPC. A clear rejection (reason and
  detail), the partial file removed, the old model serving all along; with space back, the same
  model deploys fine.
* **An artifact bigger than the free space** is refused before a byte is fetched (the updater's own
  free-space check against the real filesystem).
* **In the outbox**, the device offline: the telemetry outbox is capped below the disk, so its drop
  policy applies (oldest telemetry first, counted and reported in the next windows); then the disk
  itself is filled: windows cannot be stored, the line keeps inspecting, and once space is back
  their frames go out merged into later windows. Deployment events are never dropped: an update
  refused while the disk is full and the device offline still reaches the cloud.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_registry.publisher import reissue
from cloud_registry.telemetry.ingest import IngestService
from cloud_registry.telemetry.store import TelemetryStore
from converters.keys import KeyPaths
from edge_agent.telemetry.privacy import pseudonym
from edgeline.core.protocol.telemetry import parse_window
from tests.delivery.agent_proc import write_frames
from tests.delivery.conftest import BuiltBundle, Cloud, padded_model, variant, wait_for
from tests.faults.conftest import PSEUDONYM_SECRET, CampaignReport, Counts
from tests.faults.tools.agent import FaultAgent
from tests.faults.tools.capped import CannotCap, capped_dir, fill
from tests.faults.tools.ledger import EventLedger, history_problems, stored_windows, window_problems
from tests.faults.tools.proxy import FaultProxy

#: room for the old model, the previous one kept in the other slot for a fast rollback, a new one
#: being downloaded and the two outboxes
FS_BYTES = 8 * 1024 * 1024
CHUNK = 64 * 1024


@pytest.fixture
def state_fs(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    mount = tmp_path / "disk-1" / "state"
    try:
        with capped_dir(mount, FS_BYTES) as how:
            yield mount, how
    except CannotCap as exc:
        pytest.fail(f"no size-capped filesystem can be mounted here (run as root, as .ci/run does): {exc}")


def big(b: BuiltBundle, size: int, seed: int) -> BuiltBundle:
    return variant(b, padded_model(b.data, size, seed=seed), b.manifest.version, chunk_size=CHUNK)


def deploy(cloud: Cloud, device: str, b: BuiltBundle) -> int:
    seq = cloud.next_sequence()
    cloud.publisher.publish_desired(device, reissue(b.manifest, sequence=seq, devices=(device,), allow_downgrade=True))
    return seq


def last_event(ledger: EventLedger, device: str, sequence: int, kinds: tuple[str, ...]) -> Any:
    for e in reversed(ledger.of(device)):
        if e.sequence == sequence and e.kind.value in kinds:
            return e
    return None


def test_disk_full_during_download_and_in_the_outbox(
    cloud: Cloud,
    bundles: dict[int, BuiltBundle],
    chunky: dict[int, BuiltBundle],
    frames: list[Any],
    tmp_path: Path,
    state_fs: tuple[Path, str],
    ledger: EventLedger,
    ingest: IngestService,
    store: TelemetryStore,
    pseudonym_key: Path,
    counts: Counts,
    report: CampaignReport,
) -> None:
    mount, how = state_fs
    report.figures["filesystem"] = f"{how}, {FS_BYTES // 1024} KiB"
    v1 = chunky[1]
    v2 = big(bundles[2], 2_500_000, seed=21)  # ~2.5 MB: fits the 8 MB disk, not a full one
    huge = big(bundles[3], 10_000_000, seed=31)  # bigger than the whole disk
    for b in (v1, v2):  # the huge one is refused before any download: its chunks are never needed
        cloud.publisher.publish_artifact(b.manifest, b.data)
    proxy = FaultProxy(cloud.broker.port)
    agent = FaultAgent(
        "disk-1",
        tmp_path / "disk-1",
        proxy.port,
        KeyPaths(cloud.key_dir).trust,
        write_frames(tmp_path / "frames", frames),
        {"trial_frames": 5, "trial_latency_budget_ms": 2000.0, "min_free_bytes": 0, "chunk_window": 4},
        {"pause_after_chunks": 10, "pause_s": 1.0},
        pseudonym_key=pseudonym_key,
        telemetry={"window_s": 0.5, "outbox_max_bytes": 12 * 1024},
    )
    assert agent.state_dir == mount  # the state directory IS the capped filesystem
    figures: dict[str, Any] = {}
    try:
        agent.start(with_faults=True)
        deploy(cloud, agent.device_id, v1)
        assert wait_for(lambda: agent.serving() == v1.manifest.artifact.sha256, 60), agent.log_tail()

        for rnd in range(counts.disk_rounds):
            # -- A: the disk fills in the middle of a download ------------------------------------------
            if rnd:  # a model that is on disk already is copied, not downloaded: a new one each round
                v2 = big(bundles[2], 2_500_000, seed=21 + rnd)
                cloud.publisher.publish_artifact(v2.manifest, v2.data)
            agent.clear_fault_marker()
            seq = deploy(cloud, agent.device_id, v2)
            assert wait_for(lambda: (agent.fault_hit() or "").startswith("chunks:"), 60), agent.log_tail()
            ballast = fill(mount)
            inspected = agent.inspected()
            assert wait_for(lambda s=seq: last_event(ledger, agent.device_id, s, ("rejected", "committed")), 60), (
                agent.log_tail()
            )
            ev = last_event(ledger, agent.device_id, seq, ("rejected", "committed"))
            assert ev.kind.value == "rejected", f"round {rnd}: the download into a full disk was not refused: {ev}"
            assert ev.reason == "disk_full" and "No space left" in ev.detail, ev
            figures.setdefault("download_rejections", []).append(f"{ev.reason}: {ev.detail}")
            assert agent.serving() == v1.manifest.artifact.sha256  # the old model never stopped
            assert wait_for(lambda n=inspected: agent.inspected() > n + 5)
            assert not any(p.suffix == ".part" for p in (mount / "downloads").iterdir())  # space given back
            rec = agent.record()
            assert rec is not None and rec["state"] == "IDLE" and rec["last_error"].startswith(ev.reason)
            ballast.unlink()

            # -- the same model, with the space back -----------------------------------------------------
            agent.clear_fault_marker()
            deploy(cloud, agent.device_id, v2)
            want = v2.manifest.artifact.sha256
            assert wait_for(lambda w=want: agent.serving() == w, 60), agent.log_tail()

            # -- B: bigger than the free space: refused before a byte is fetched ------------------------
            seq = deploy(cloud, agent.device_id, huge)
            assert wait_for(lambda s=seq: last_event(ledger, agent.device_id, s, ("rejected",)), 30)
            ev = last_event(ledger, agent.device_id, seq, ("rejected",))
            assert ev.reason == "disk_full", ev
            assert agent.serving() == want
            assert not (mount / "downloads" / f"{huge.manifest.artifact.sha256}.part").exists()

            # back to v1 for the next round
            agent.clear_fault_marker()
            deploy(cloud, agent.device_id, v1)
            assert wait_for(lambda: agent.serving() == v1.manifest.artifact.sha256, 60), agent.log_tail()

        # -- C: the outbox, offline: first its cap, then a full disk ----------------------------------
        # a message is deleted only once the ingest confirms it; one whose confirmation was missed (sent
        # while the ingest was not subscribed) goes again after ack_resend_s (30 s), so allow for one resend
        assert wait_for(lambda: not agent.windows_outbox().keys and not agent.events_outbox().keys, 90)
        pseudo = pseudonym(agent.device_id, bytes.fromhex(PSEUDONYM_SECRET))
        delivered_before = len(stored_windows(store, pseudo))
        proxy.refuse()
        proxy.cut()
        seen: dict[str, float] = {}
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline or agent.windows_outbox().dropped() < 2:
            snap = agent.windows_outbox()
            seen.update(snap.created)
            time.sleep(0.2)
            assert time.monotonic() < deadline + 30, "the outbox cap never dropped anything"
        held = agent.windows_outbox()
        dropped_by_cap = held.dropped()
        assert held.keys and dropped_by_cap > 0
        # oldest first: every window the cap dropped is older than every window it kept
        gone = set(seen) - held.keys
        assert gone and max(seen[k] for k in gone) <= min(held.created.values())

        # the disk fills while the device is offline
        ballast = fill(mount)
        inspected = agent.inspected()
        time.sleep(2.0)
        assert agent.alive and agent.inspected() > inspected + 20  # the line keeps inspecting
        assert agent.log_has("disk is full") or agent.log_has("disk full"), agent.log_tail()  # and says why
        # back online, the disk still full: an update refused now must still reach the cloud
        proxy.refuse(False)
        seq = deploy(cloud, agent.device_id, v2)
        time.sleep(1.5)
        ballast.unlink()
        assert wait_for(lambda s=seq: last_event(ledger, agent.device_id, s, ("rejected",)), 30), (
            "a deployment event was lost to the full disk\n" + agent.log_tail()
        )
        assert last_event(ledger, agent.device_id, seq, ("rejected",)).reason == "disk_full"
        assert wait_for(lambda: not agent.windows_outbox().keys and not agent.events_outbox().keys, 60), (
            agent.log_tail()
        )
        assert history_problems(ledger.of(agent.device_id)) == []  # every deployment reported, once
        spans = stored_windows(store, pseudo)
        assert window_problems(spans) == []
        new = spans[delivered_before:]

        def bodies_now() -> list[Any]:
            return [parse_window(b) for (b,) in store.execute("SELECT body FROM windows WHERE device = ?", (pseudo,))]

        # the drops are reported to the cloud, never hidden: every window closed after them carries the
        # count (the windows held offline may all predate the last drop: wait for the next one to land)
        assert wait_for(lambda: max(w.outbox_dropped for w in bodies_now()) >= dropped_by_cap, 60), agent.log_tail()
        bodies = bodies_now()
        reported = max(w.outbox_dropped for w in bodies)
        merged = [w for w in bodies if w.merged > 1]
        figures.update(
            telemetry_dropped_by_full_disk=agent.windows_outbox().counters.get("dropped.telemetry.disk_full", 0),
            outcome="passed",
            rounds=counts.disk_rounds,
            telemetry_dropped_by_cap=dropped_by_cap,
            windows_after_reconnect=len(new),
            outbox_dropped_reported=reported,
            merged_windows=len(merged),
        )
        report.figures.update(figures)
        agent.terminate()
    finally:
        agent.sigkill()
        proxy.close()
        os.sync()
