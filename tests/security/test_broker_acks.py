"""The end-to-end acknowledgement on a real Mosquitto locked down with the rendered configuration (TLS,
password and mTLS, one identity each): the ingest identity (``ingest = [...]`` in the spec) writes every
device's ``acks`` and the retained ``ingest/capabilities``; a device reads only its own acks and the
capabilities, and writes neither; a read-only observer writes neither.

Ordering argument used by every "nothing arrived" check below: ``publish_sync`` returns after the
broker's PUBACK, so the broker has already decided about the message (delivered or dropped it); a
sentinel published afterwards is queued behind anything the broker delivered to the same subscriber, so
once the sentinel is in, a forged message that got through would be in too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_registry.security.broker_config import parse_spec
from cloud_registry.security.passwords import generate_password
from cloud_registry.security.pki import Pki
from cloud_registry.telemetry.ingest import Ingestor, IngestService
from cloud_registry.telemetry.store import TelemetryStore
from edge_agent.errors import TransportError
from edge_agent.outbox.acks import AckRouter, ack_router, event_key
from edge_agent.outbox.pump import OutboxPump
from edge_agent.outbox.store import Outbox
from edgeline.core.mqtt_link import MqttLink, wait_until
from edgeline.core.protocol.delivery import DeviceEvent, EventKind, UpdaterState
from edgeline.core.protocol.telemetry import Ack, IngestCapabilities
from tests.security.conftest import OBSERVER, TOPICS, Inbox, Locked, make_spec, prime, start_locked
from tests.telemetry.test_window_schema import body

INGEST = OBSERVER  # the conftest's service identity, listed under `ingest` in this spec
DASHBOARD = "dashboard"  # a read-only observer

CAPABILITIES = IngestCapabilities(acks=True).encode()


def ack(*windows: str) -> bytes:
    return Ack.model_validate({"windows": list(windows)}).encode()


def start_with_ingest(auth: str, pki: Pki, passwords: dict[str, str], workdir: Path) -> Locked:
    pki.issue("observer", DASHBOARD)
    creds = {**passwords, DASHBOARD: generate_password()}
    spec = parse_spec({**make_spec(auth, pki, workdir).model_dump(), "ingest": [INGEST], "observers": [DASHBOARD]})
    return start_locked(auth, pki, creds, workdir, spec=spec)


@pytest.fixture(params=["password", "mtls"])
def acked(request: pytest.FixtureRequest, pki: Pki, passwords: dict[str, str], tmp_path: Path) -> Iterator[Locked]:
    """A locked-down broker whose spec lists the ingest identity under ``ingest`` and a dashboard under
    ``observers``, once with password and once with mTLS authentication."""
    env = start_with_ingest(str(request.param), pki, passwords, tmp_path)
    try:
        yield env
    finally:
        for link in env.links:
            link.stop()
        env.broker.kill()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TelemetryStore]:
    s = TelemetryStore(tmp_path / "telemetry.db")
    yield s
    s.close()


def device_outbox(env: Locked, device: str, path: Path) -> tuple[MqttLink, Outbox, AckRouter]:
    """A device's link with its outbox wired to the acknowledgement (not connected yet)."""
    link = env.link(env.settings(device))
    outbox = Outbox(path)
    router = ack_router(link, TOPICS, device)
    router.add(outbox)
    return link, outbox, router


def test_the_ingests_acknowledgement_reaches_the_device_which_deletes_only_then(
    acked: Locked, store: TelemetryStore, tmp_path: Path
) -> None:
    ingest = IngestService(Ingestor(store, TOPICS), acked.settings(INGEST))  # MQTT 5: shared subscriptions
    ingest.start()
    ingest.stop()  # its capabilities stay retained; the ingest is away
    link, outbox, router = device_outbox(acked, "dev-a", tmp_path / "outbox.db")
    pump = OutboxPump(outbox, link)
    link.connect(10)
    try:
        # the ingest could write the retained capabilities, and the device can read them
        assert wait_until(lambda: outbox.peer_confirms, 10), "the ingest's capabilities never reached the device"
        key = "1" * 32
        outbox.put(TOPICS.device_telemetry("dev-a"), json.dumps(body(key=key)).encode(), kind="telemetry", key=key)
        ev = DeviceEvent(device_id="dev-a", kind=EventKind.DOWNLOADING, state=UpdaterState.DOWNLOADING, sequence=1)
        outbox.put(TOPICS.device_events("dev-a"), ev.to_bytes(), kind="event", key=event_key(ev.event_id))

        assert pump.drain() == 2  # both PUBACKed by the broker ...
        assert not wait_until(lambda: len(outbox) < 2, 1.0)  # ... and both kept: nobody has stored them
        assert outbox.stats().counters["sent"] == 2 and router.received == 0

        ingest = IngestService(Ingestor(store, TOPICS), acked.settings(INGEST))
        ingest.start()
        try:
            # its capabilities (again) make the unconfirmed messages due; the ingest stores and acknowledges
            assert wait_until(lambda: (pump.drain(), len(outbox) == 0)[1], 20), outbox.stats()
            assert store.keys() == {key} and store.event_ids() == {ev.event_id}
            # the window and the event may share one acknowledgement (one per device per stored batch)
            assert router.received >= 1 and router.malformed == 0
            c = outbox.stats().counters
            assert c["delivered"] == 2 and c.get("delivered.unconfirmed", 0) == 0, c
            stats = ingest.ingestor.stats
            assert stats.acked_keys >= 2 and stats.acks_sent >= 1 and stats.acks_unsent == 0
        finally:
            ingest.stop()
    finally:
        link.stop()
        outbox.close()


def test_a_device_cannot_forge_an_acknowledgement_for_another_device(acked: Locked, tmp_path: Path) -> None:
    """dev-a tries to make dev-b delete a window that was never stored: refused (MQTT 5: PUBACK 0x87;
    3.1.1: silently dropped), never delivered, and dev-b keeps its window."""
    ingest = acked.connect(INGEST)
    b_link, b_outbox, b_router = device_outbox(acked, "dev-b", tmp_path / "b.db")
    b_link.connect(10)
    key = "b" * 32
    b_outbox.set_peer_confirms(True)
    b_outbox.put(TOPICS.device_telemetry("dev-b"), json.dumps(body(key=key)).encode(), kind="telemetry", key=key)
    assert OutboxPump(b_outbox, b_link).drain() == 1  # sent, waiting for the ingest's acknowledgement

    # dev-b's subscription is active: a genuine acknowledgement (of a key it does not hold) arrives
    def genuine_arrives(n: int) -> bool:
        ingest.publish_sync(TOPICS.device_acks("dev-b"), ack(f"{n:032x}"))
        return wait_until(lambda: b_router.received >= n, 10)

    assert genuine_arrives(1)
    forged = ack(key)
    a5 = acked.connect("dev-a")
    with pytest.raises(TransportError, match="refused"):
        a5.publish_sync(TOPICS.device_acks("dev-b"), forged)
    with pytest.raises(TransportError, match="refused"):  # nor on its own acks topic: only the ingest writes acks
        a5.publish_sync(TOPICS.device_acks("dev-a"), forged)
    a5.stop()  # one connection per identity
    a311 = acked.connect("dev-a", protocol="3.1.1")
    a311.publish_sync(TOPICS.device_acks("dev-b"), forged)  # no exception: 3.1.1 has no reason codes
    dashboard = acked.connect(DASHBOARD)  # a read-only observer cannot either
    with pytest.raises(TransportError, match="refused"):
        dashboard.publish_sync(TOPICS.device_acks("dev-b"), forged)

    assert genuine_arrives(2)  # the sentinel, after every forgery
    assert not wait_until(lambda: b_router.received > 2, 0.5)
    assert len(b_outbox) == 1 and b_outbox.stats().counters.get("delivered", 0) == 0
    # control: the very same payload from the ingest deletes the window
    ingest.publish_sync(TOPICS.device_acks("dev-b"), forged)
    assert wait_until(lambda: len(b_outbox) == 0, 10)
    assert b_outbox.stats().counters["delivered"] == 1
    b_outbox.close()


def test_only_the_ingest_writes_the_capabilities(acked: Locked, tmp_path: Path) -> None:
    """A device (or a read-only observer) can neither clear the retained capabilities (which would put the
    fleet back on three sends) nor announce them (which would make devices keep messages forever for an
    ingest that does not acknowledge); the ingest identity can do both (the downgrade path)."""
    ingest = acked.connect(INGEST)
    ingest.publish_sync(TOPICS.ingest_capabilities(), CAPABILITIES, retain=True)
    b_link, b_outbox, b_router = device_outbox(acked, "dev-b", tmp_path / "b.db")
    b_link.connect(10)
    assert wait_until(lambda: b_outbox.peer_confirms, 10)

    a5 = acked.connect("dev-a")
    for payload in (b"", IngestCapabilities(acks=False).encode(), CAPABILITIES):
        with pytest.raises(TransportError, match="refused"):
            a5.publish_sync(TOPICS.ingest_capabilities(), payload, retain=True)
    a5.stop()
    a311 = acked.connect("dev-a", protocol="3.1.1")
    a311.publish_sync(TOPICS.ingest_capabilities(), b"", retain=True)  # silently dropped
    dashboard = acked.connect(DASHBOARD)
    with pytest.raises(TransportError, match="refused"):
        dashboard.publish_sync(TOPICS.ingest_capabilities(), b"", retain=True)

    ingest.publish_sync(TOPICS.device_acks("dev-b"), ack("0" * 32))  # sentinel on dev-b's link
    assert wait_until(lambda: b_router.received == 1, 10)
    assert b_outbox.peer_confirms  # no empty capabilities reached dev-b
    # and the retained message is still the ingest's: a late subscriber gets exactly it
    late = Inbox()
    a311.subscribe(TOPICS.ingest_capabilities(), late)
    assert late.wait_for(TOPICS.ingest_capabilities())
    assert late.items == [(TOPICS.ingest_capabilities(), CAPABILITIES)]

    ingest.publish_sync(TOPICS.ingest_capabilities(), b"", retain=True)  # the ingest identity clears it
    assert wait_until(lambda: not b_outbox.peer_confirms, 10)
    b_outbox.close()


def test_a_device_cannot_read_another_devices_acknowledgements(acked: Locked) -> None:
    ingest = acked.connect(INGEST)
    a = acked.connect("dev-a")
    inbox = Inbox()
    # granted (read rules filter at delivery) but nothing of dev-b's may arrive; its own filter last
    a.subscribe(TOPICS.device_acks("dev-b"), inbox)
    a.subscribe(TOPICS.all_device_acks(), inbox)
    a.subscribe(TOPICS.device_acks("dev-a"), inbox)
    prime(inbox, ingest, TOPICS.device_acks("dev-a"))

    ingest.publish_sync(TOPICS.device_acks("dev-b"), ack("b" * 32))
    ingest.publish_sync(TOPICS.device_acks("dev-a"), ack("a" * 32))  # one publisher: delivered in order
    assert wait_until(lambda: (TOPICS.device_acks("dev-a"), ack("a" * 32)) in inbox.items, 10)
    assert TOPICS.device_acks("dev-b") not in inbox.topics(), inbox.topics()
