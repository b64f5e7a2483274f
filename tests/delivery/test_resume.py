"""The broker is SIGKILLed in the middle of a transfer and restarted: the device resumes and
completes, and never fetches again a chunk it already holds."""

from __future__ import annotations

from typing import Any

from edgeline.core.protocol.delivery import parse_meta
from tests.delivery.conftest import BuiltBundle, Cloud, padded_model, variant, wait_for


def test_broker_killed_mid_transfer_resumes_without_refetching(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any]
) -> None:
    big = variant(bundles[2], padded_model(bundles[2].data, 1_500_000), 2, chunk_size=16 * 1024)
    total = big.manifest.artifact.chunk_count
    assert total > 80
    dev = cloud.device("dev-k", frames=frames, chunk_window=4, faults={"pause_after_chunks": 30, "pause_s": 1.5})
    cloud.deploy(bundles[1], "dev-k")
    assert wait_for(lambda: dev.version() == 1 and dev.plugin.state == "COMMITTED")

    cloud.publisher.publish_artifact(big.manifest, big.data)
    db = cloud.broker.workdir / "mosquitto.db"  # the retained chunks must be in Mosquitto's database
    assert wait_for(lambda: db.exists() and db.stat().st_size > len(big.data), 20)
    cloud.deploy(big, "dev-k", publish_artifact=False)
    assert wait_for(lambda: dev.plugin.download is not None and dev.plugin.download.have >= 30)
    held = set(dev.plugin.download.stats.received)  # type: ignore[union-attr]
    cloud.broker.kill()  # crash: no clean shutdown
    assert dev.plugin.state == "DOWNLOADING" and dev.plugin.download.have < total  # type: ignore[union-attr]
    cloud.broker.start()
    assert wait_for(lambda: dev.version() == 2 and dev.plugin.state == "COMMITTED", 30), dev.kinds()
    stats = dev.plugin.download.stats  # type: ignore[union-attr]
    assert sorted(stats.received) == list(range(total))  # every chunk exactly once
    assert not held & set(stats.received[len(held) :])
    assert dev.link.link.stats.connects >= 2  # it really reconnected

    # the artifact's meta stayed retained too
    got: list[bytes] = []
    cloud.link.subscribe(cloud.topics.artifact_meta(big.manifest.artifact.sha256), lambda t, p, r: got.append(p))
    assert wait_for(lambda: bool(got), 10)
    meta = parse_meta(got[0])
    assert meta.size == big.manifest.artifact.size and len(meta.chunk_sha256) == total


def test_agent_restart_resumes_from_the_part_file(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any]
) -> None:
    """In process: the part file's chunks are found by hash after a restart, only the rest is fetched."""
    big = variant(bundles[2], padded_model(bundles[2].data, 400_000, seed=1), 2, chunk_size=8 * 1024)
    total = big.manifest.artifact.chunk_count
    first = cloud.device("dev-p", frames=frames, chunk_window=2, faults={"pause_after_chunks": 10, "pause_s": 60})
    cloud.deploy(bundles[1], "dev-p")
    assert wait_for(lambda: first.version() == 1 and first.plugin.state == "COMMITTED")
    cloud.deploy(big, "dev-p")
    assert wait_for(lambda: (cloud.tmp / "dev-p" / "fault-hit").exists())
    have = first.plugin.download.have  # type: ignore[union-attr]
    assert 10 <= have < total
    cloud.devices.remove(first)
    first.stop()
    second = cloud.device("dev-p", frames=frames, state_dir=cloud.tmp / "dev-p")
    assert wait_for(lambda: second.version() == 2 and second.plugin.state == "COMMITTED", 20)
    stats = second.plugin.download.stats  # type: ignore[union-attr]
    assert stats.resumed_with == have and len(stats.received) == total - have


def test_rollback_to_the_model_in_the_other_slot_fetches_nothing(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any]
) -> None:
    """An authorised rollback to the model the other slot still holds: the record says which slot
    has it, the file is copied into the part file and checked chunk by chunk, nothing is downloaded
    (the artifact is not even on the broker any more)."""
    dev = cloud.device("dev-rb", frames=frames)
    cloud.deploy(bundles[1], "dev-rb")
    assert wait_for(lambda: dev.version() == 1 and dev.plugin.state == "COMMITTED")
    cloud.deploy(bundles[2], "dev-rb")
    assert wait_for(lambda: dev.version() == 2 and dev.plugin.state == "COMMITTED")
    art = bundles[1].manifest.artifact
    cloud.publisher.retire_artifact(art.sha256, art.chunk_count)  # v1's chunks are gone from the broker
    cloud.deploy(bundles[1], "dev-rb", allow_downgrade=True, publish_artifact=False)
    assert wait_for(lambda: dev.version() == 1 and dev.plugin.state == "COMMITTED", 20), dev.kinds()
    stats = dev.plugin.download.stats  # type: ignore[union-attr]
    assert stats.resumed_with == art.chunk_count and stats.received == []


def test_a_part_file_no_offer_wants_is_removed_by_the_next_update(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any]
) -> None:
    """Chunks may land before the DOWNLOADING record is durable; a power cut there leaves a part
    file the record knows nothing of. The next accepted offer removes it (at the latest the end of
    the trial does)."""
    state_dir = cloud.tmp / "dev-orphan"
    orphan = state_dir / "downloads" / f"{'ab' * 32}.part"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"half a model from before the power cut")
    dev = cloud.device("dev-orphan", frames=frames, state_dir=state_dir)
    cloud.deploy(bundles[1], "dev-orphan")
    assert wait_for(lambda: dev.version() == 1 and dev.plugin.state == "COMMITTED")
    assert not orphan.exists()
