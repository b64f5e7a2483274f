"""Every distinct refused desired-state payload gets its ``rejected`` event (on a real broker), the
very same payload retained again does not, memory stays bounded, and a flood is rate-limited and
counted (the device state carries the totals; the next event sent says how many were held back)."""

from __future__ import annotations

import time
from typing import Any

from cloud_registry.publisher import reissue
from edge_agent.updater.refusals import Decision, RefusalGate, payload_key
from edgeline.core.protocol.delivery import envelope_bytes
from tests.delivery.conftest import BuiltBundle, Cloud, wait_for
from tests.delivery.test_rejections import publish_raw, running_v1


def forgeries(cloud: Cloud, b: BuiltBundle, n: int) -> list[bytes]:
    """``n`` different bodies that all carry the SAME real signature (made for another body)."""
    man = reissue(b.manifest, sequence=cloud.next_sequence(), devices=("dev-r",))
    env = cloud.publisher.sign(man)
    out = []
    for i in range(n):
        body = {**env.body, "version": 100 + i}
        out.append(envelope_bytes(env.model_copy(update={"body": body})))
    return out


def rejected(cloud: Cloud, reason: str = "bad_signature") -> list[Any]:
    return [e for e in cloud.seen_events if e.device_id == "dev-r" and e.kind == "rejected" and e.reason == reason]


def test_a_second_forgery_with_an_already_refused_signature_gets_its_own_event(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any]
) -> None:
    dev = running_v1(cloud, frames, bundles)
    first, second = forgeries(cloud, bundles[2], 2)
    publish_raw(cloud, "dev-r", first)
    assert wait_for(lambda: len(rejected(cloud)) == 1)
    publish_raw(cloud, "dev-r", second)
    assert wait_for(lambda: len(rejected(cloud)) == 2), [e.reason for e in cloud.seen_events]
    publish_raw(cloud, "dev-r", second)  # the very same payload again (as a retained redelivery)
    time.sleep(0.5)
    assert len(rejected(cloud)) == 2
    assert dev.version() == 1
    assert wait_for(lambda: dev.link.state.extra.get("refusals") == 2)


def test_a_flood_of_distinct_forgeries_is_rate_limited_counted_and_bounded(
    cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any]
) -> None:
    dev = running_v1(cloud, frames, bundles)
    gate = RefusalGate(capacity=64, burst=5, per_s=0.5)
    dev.plugin.refusals = gate
    flood = forgeries(cloud, bundles[2], 300)
    t0 = time.monotonic()
    for p in flood:
        cloud.link.publish(cloud.topics.device_desired("dev-r"), p, 1, False)
    assert wait_for(lambda: gate.counts.refused == 300, 60), gate.counts
    elapsed = time.monotonic() - t0
    assert len(gate) == 64  # bounded
    time.sleep(0.5)
    sent = len(rejected(cloud))
    assert 5 <= sent <= 5 + int(elapsed * 0.5) + 1, (sent, elapsed)
    assert gate.counts.unreported == 300 - sent
    assert wait_for(lambda: dev.link.state.extra.get("refusals") == 300)
    assert dev.link.state.extra.get("refusals_unreported") == 300 - sent
    # once the flood is over the next refusal goes out and says how many were held back
    time.sleep(2.2)
    publish_raw(cloud, "dev-r", forgeries(cloud, bundles[2], 1)[0])
    assert wait_for(lambda: len(rejected(cloud)) == sent + 1)
    assert f"{300 - sent} more refusals" in rejected(cloud)[-1].detail
    # the device never stopped inspecting, and a real deployment still goes through
    frames_before = dev.agent.frames_done
    assert wait_for(lambda: dev.agent.frames_done > frames_before + 3)
    cloud.deploy(bundles[2], "dev-r")
    assert wait_for(lambda: dev.version() == 2 and dev.plugin.state == "COMMITTED")


def test_the_gate_reports_each_distinct_payload_once_within_the_rate() -> None:
    now = [0.0]
    gate = RefusalGate(capacity=3, burst=2, per_s=1.0, clock=lambda: now[0])
    keys = [payload_key(bytes([i])) for i in range(6)]
    assert gate.admit(keys[0], "bad_signature") is Decision.REPORT
    assert gate.admit(keys[0], "bad_signature") is Decision.DUPLICATE
    assert gate.admit(keys[1], "bad_signature") is Decision.REPORT
    assert gate.admit(keys[2], "replay") is Decision.HELD  # the burst is spent
    now[0] = 1.0
    assert gate.admit(keys[3], "replay") is Decision.REPORT
    assert gate.take_held() == 1 and gate.take_held() == 0
    assert len(gate) == 3  # keys[0] was evicted: bounded
    assert gate.admit(keys[0], "bad_signature") is Decision.HELD  # seen again after eviction: counted again
    assert gate.counts.by_reason == {"bad_signature": 3, "replay": 2}
    assert gate.counts.duplicates == 1 and gate.counts.unreported == 2
