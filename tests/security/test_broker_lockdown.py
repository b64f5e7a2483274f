"""A real Mosquitto running the rendered configuration (password and mTLS): what each identity may and may
not do, who is refused at the door, and end-to-end traffic over TLS."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from converters.keys import SigningKey
from edge_agent.errors import TransportError
from edgeline.core.mqtt_link import TlsSettings, wait_until
from edgeline.core.protocol.signing import TrustStore
from edgeline.demo.lockdown import apply_spec
from tests.security.conftest import (
    OBSERVER,
    REGISTRY,
    STRANGER,
    TOPICS,
    Inbox,
    Locked,
    assert_refused,
    make_spec,
    prime,
)

SHA = "ab" * 32


def test_device_cannot_publish_on_another_devices_topics(locked: Locked) -> None:
    registry = locked.connect(REGISTRY)
    inbox = Inbox()
    registry.subscribe(TOPICS.all_device_events(), inbox)
    registry.subscribe(TOPICS.all_device_telemetry(), inbox)
    registry.subscribe(TOPICS.all_device_states(), inbox)
    a = locked.connect("dev-a")
    prime(inbox, a, TOPICS.device_state("dev-a"))

    for topic in (TOPICS.device_state("dev-b"), TOPICS.device_events("dev-b"), TOPICS.device_telemetry("dev-b")):
        with pytest.raises(TransportError, match="refused"):  # MQTT 5: PUBACK 0x87 Not authorized
            a.publish_sync(topic, b'{"forged": true}')
    a.publish_sync(TOPICS.device_telemetry("dev-a"), b"sentinel")
    assert inbox.wait_for(TOPICS.device_telemetry("dev-a"))
    assert not [t for t in inbox.topics() if "dev-b" in t], inbox.topics()


def test_device_cannot_write_desired_state_artifacts_or_revocations(locked: Locked) -> None:
    registry = locked.connect(REGISTRY)
    inbox = Inbox()
    for f in (TOPICS.all_device_desired(), TOPICS.all_group_desired(), TOPICS.all_artifacts()):
        registry.subscribe(f, inbox)
    registry.subscribe(TOPICS.trust_revocations(), inbox)
    registry.subscribe(TOPICS.all_device_states(), inbox)
    a = locked.connect("dev-a")
    prime(inbox, a, TOPICS.device_state("dev-a"))

    forbidden = [
        TOPICS.device_desired("dev-a"),  # not even its own: only the registry writes desired state
        TOPICS.device_desired("dev-b"),
        TOPICS.group_desired("line-1"),
        TOPICS.artifact_meta(SHA),
        TOPICS.artifact_chunk(SHA, 0),
        TOPICS.trust_revocations(),
    ]
    for topic in forbidden:
        with pytest.raises(TransportError, match="refused"):
            a.publish_sync(topic, b"{}", retain=True)
    a.publish_sync(TOPICS.device_state("dev-a"), b"sentinel")
    assert inbox.wait_for(TOPICS.device_state("dev-a"))
    assert set(inbox.topics()) == {TOPICS.device_state("dev-a")}

    # nothing was retained either: a fresh subscriber of everything desired gets nothing before a sentinel
    registry.stop()  # the identity is pinned as client id: one connection per identity at a time
    late = Inbox()
    registry2 = locked.connect(REGISTRY)
    registry2.subscribe(TOPICS.all_device_desired(), late)
    registry2.subscribe(TOPICS.trust_revocations(), late)
    registry2.publish_sync(TOPICS.device_desired("dev-z"), b"sentinel", retain=False)
    assert late.wait_for(TOPICS.device_desired("dev-z"))
    assert late.topics() == [TOPICS.device_desired("dev-z")]


def test_mqtt311_refusal_is_a_silent_drop(locked: Locked) -> None:
    """With MQTT 3.1.1 Mosquitto acknowledges and drops an unauthorised publish: no signal to the sender."""
    registry = locked.connect(REGISTRY)
    inbox = Inbox()
    registry.subscribe(TOPICS.all_device_states(), inbox)
    a = locked.connect("dev-a", protocol="3.1.1")
    prime(inbox, a, TOPICS.device_state("dev-a"))
    a.publish_sync(TOPICS.device_state("dev-b"), b"forged")  # no exception: 3.1.1 has no reason codes
    a.publish_sync(TOPICS.device_state("dev-a"), b"sentinel")
    assert wait_until(lambda: (TOPICS.device_state("dev-a"), b"sentinel") in inbox.items, 10)
    assert TOPICS.device_state("dev-b") not in inbox.topics()


def test_device_cannot_read_another_devices_or_groups_desired_state(locked: Locked) -> None:
    registry = locked.connect(REGISTRY)
    for topic in (TOPICS.device_desired("dev-b"), TOPICS.group_desired("line-2")):
        registry.publish_sync(topic, b"for b only", retain=True)
    registry.publish_sync(TOPICS.device_desired("dev-a"), b"for a", retain=True)

    a = locked.connect("dev-a")
    inbox = Inbox()
    # granted (read ACLs filter at delivery) but nothing may arrive; subscribed before its own topic
    a.subscribe(TOPICS.device_desired("dev-b"), inbox)
    a.subscribe(TOPICS.group_desired("line-2"), inbox)
    a.subscribe(TOPICS.all_device_desired(), inbox)
    a.subscribe(TOPICS.device_desired("dev-a"), inbox)
    assert inbox.wait_for(TOPICS.device_desired("dev-a"))  # the retained own state arrives, B's did not...
    # ...nor do live ones: B's and line-2's first, A's own last (one publisher: delivered in order)
    registry.publish_sync(TOPICS.device_desired("dev-b"), b"live for b")
    registry.publish_sync(TOPICS.group_desired("line-2"), b"live for line 2")
    registry.publish_sync(TOPICS.device_desired("dev-a"), b"live for a")
    assert wait_until(lambda: (TOPICS.device_desired("dev-a"), b"live for a") in inbox.items, 10)
    leaked = [t for t in inbox.topics() if t in (TOPICS.device_desired("dev-b"), TOPICS.group_desired("line-2"))]
    assert leaked == []


def test_client_without_credentials_is_refused(locked: Locked) -> None:
    if locked.auth == "password":
        anonymous = locked.settings("dev-a", username=None, password=None)
    else:  # TLS, but no client certificate
        anonymous = locked.settings("dev-a", tls=TlsSettings(ca_file=str(locked.pki.ca_cert_path)))
    assert_refused(locked, locked.link(anonymous))


def test_plain_tcp_is_refused(locked: Locked) -> None:
    assert_refused(locked, locked.link(locked.settings("dev-a", tls=None)))


def test_wrong_or_borrowed_password_is_refused(locked_factory: Callable[[str], Locked]) -> None:
    env = locked_factory("password")
    assert "not authorised" in assert_refused(env, env.link(env.settings("dev-a", password="not-the-password")))
    assert_refused(env, env.link(env.settings("nobody", password=env.passwords["dev-a"])))
    # a device's own password does not open the registry identity
    assert_refused(env, env.link(env.settings(REGISTRY, password=env.passwords["dev-a"])))
    assert env.connect("dev-a").connected  # control: the right password works


def test_certificate_from_another_ca_is_refused(locked_factory: Callable[[str], Locked], other_pki: object) -> None:
    from cloud_registry.security.pki import Pki

    assert isinstance(other_pki, Pki)
    env = locked_factory("mtls")
    # a rogue CA mints a certificate with the registry's very name
    forged = env.settings(
        REGISTRY,
        tls=TlsSettings(
            ca_file=str(env.pki.ca_cert_path),
            cert_file=str(other_pki.cert_path("registry", REGISTRY)),
            key_file=str(other_pki.key_path("registry", REGISTRY)),
        ),
    )
    assert "certificate verify failed" in assert_refused(env, env.link(forged))
    assert env.connect(REGISTRY).connected  # control


def test_client_refuses_a_broker_certified_by_another_ca(locked: Locked, other_pki: object) -> None:
    from cloud_registry.security.pki import Pki

    assert isinstance(other_pki, Pki)
    s = locked.settings("dev-a")
    assert s.tls is not None
    wrong_ca = TlsSettings(ca_file=str(other_pki.ca_cert_path), cert_file=s.tls.cert_file, key_file=s.tls.key_file)
    assert "unknown ca" in assert_refused(locked, locked.link(locked.settings("dev-a", tls=wrong_ca)))


def test_identity_cannot_take_over_another_session(locked: Locked) -> None:
    b = locked.connect("dev-b")
    a_as_b = locked.connect("dev-a", client_id="dev-b")  # the broker pins the client id to "dev-a"
    registry = locked.connect(REGISTRY)
    inbox = Inbox()
    registry.subscribe(TOPICS.all_device_states(), inbox)
    prime(inbox, b, TOPICS.device_state("dev-b"))  # b is still connected and delivering
    assert b.connected and a_as_b.connected
    assert b.stats.disconnects == 0


def test_observer_reads_reports_but_writes_nothing(locked: Locked) -> None:
    ingest = locked.connect(OBSERVER)
    inbox = Inbox()
    ingest.subscribe(TOPICS.shared_telemetry("ingest"), inbox)  # MQTT 5 shared subscription
    ingest.subscribe(TOPICS.all_device_states(), inbox)
    a = locked.connect("dev-a")
    prime(inbox, a, TOPICS.device_state("dev-a"))
    a.publish_sync(TOPICS.device_telemetry("dev-a"), b'{"window": 1}')
    assert inbox.wait_for(TOPICS.device_telemetry("dev-a"))
    for topic in (TOPICS.device_desired("dev-a"), TOPICS.artifact_chunk(SHA, 0), TOPICS.device_state("dev-a")):
        with pytest.raises(TransportError, match="refused"):
            ingest.publish_sync(topic, b"x")


def test_identity_not_in_the_spec_has_no_rights(locked_factory: Callable[[str], Locked]) -> None:
    """A certificate from the right CA is not enough: the ACL is an allow-list of the spec's identities."""
    env = locked_factory("mtls")
    stranger = env.connect(STRANGER)
    for topic in (TOPICS.device_state(STRANGER), TOPICS.device_telemetry(STRANGER)):
        with pytest.raises(TransportError, match="refused"):
            stranger.publish_sync(topic, b"x")


def test_registry_and_device_end_to_end_over_tls(locked: Locked, signing_key: SigningKey, trust: TrustStore) -> None:
    registry = locked.connect(REGISTRY)
    reports = Inbox()
    registry.subscribe(TOPICS.all_device_telemetry(), reports)
    registry.subscribe(f"{TOPICS.all_device_telemetry()}/+", reports)  # partitioned telemetry
    registry.subscribe(TOPICS.all_device_events(), reports)

    envelope = signing_key.sign({"model": "tiny", "version": 3, "target": "dev-a"})
    registry.publish_sync(TOPICS.device_desired("dev-a"), envelope.model_dump_json(), retain=True)
    registry.publish_sync(TOPICS.group_desired("line-1"), b'{"group": "line-1"}', retain=True)
    registry.publish_sync(TOPICS.artifact_chunk(SHA, 0), b"\x00chunk-bytes", retain=True)

    device = locked.connect("dev-a")
    inbox = Inbox()
    device.subscribe(TOPICS.group_desired("line-1"), inbox)
    device.subscribe(TOPICS.artifact_chunk(SHA, 0), inbox)
    device.subscribe(TOPICS.device_desired("dev-a"), inbox)
    assert wait_until(lambda: len(set(inbox.topics())) == 3, 10), inbox.topics()
    got = dict(inbox.items)
    assert trust.verify(json.loads(got[TOPICS.device_desired("dev-a")]))["version"] == 3
    assert got[TOPICS.artifact_chunk(SHA, 0)] == b"\x00chunk-bytes"

    prime(reports, device, TOPICS.device_events("dev-a"))
    device.publish_sync(TOPICS.device_telemetry("dev-a"), b'{"window": 7}')
    assert wait_until(lambda: (TOPICS.device_telemetry("dev-a"), b'{"window": 7}') in reports.items, 10)
    # partitioned telemetry ([telemetry] partitions): its own partition topic, read by the registry
    device.publish_sync(f"{TOPICS.device_telemetry('dev-a')}/3", b'{"window": 8}')
    assert wait_until(lambda: (f"{TOPICS.device_telemetry('dev-a')}/3", b'{"window": 8}') in reports.items, 10)
    with pytest.raises(TransportError, match="refused"):  # never another device's partition
        device.publish_sync(f"{TOPICS.device_telemetry('dev-b')}/3", b'{"window": 9}')


def test_removed_device_is_cut_off_at_reload(locked_factory: Callable[[str], Locked]) -> None:
    """Password mode: deleting a device from the password file and the spec, then reloading, closes its open
    connection and refuses it from then on; other devices carry on."""
    from cloud_registry.security.passwords import PasswordFile

    env = locked_factory("password")
    a, b = env.connect("dev-a"), env.connect("dev-b")
    assert PasswordFile(env.workdir / "passwd").delete("dev-a")
    apply_spec(
        env.broker,
        make_spec("password", env.pki, env.workdir, devices={"dev-b": ["line-2"]}).model_copy(
            update={"port": env.spec.port}
        ),
    )
    assert wait_until(lambda: not a.connected and a.stats.refused > 0, 10)  # dropped, and its reconnect refused
    assert b.connected
    assert_refused(env, env.link(env.settings("dev-a")))


def test_revoked_certificate_is_refused_after_reload(locked_factory: Callable[[str], Locked]) -> None:
    """mTLS: revoking a device certificate (CRL) and removing the device from the spec, then reloading:
    its next connection fails the TLS handshake; its open connection stays up but has no rights left."""
    env = locked_factory("mtls")
    b = env.connect("dev-b")
    env.pki.revoke("dev-b")
    apply_spec(
        env.broker,
        make_spec("mtls", env.pki, env.workdir, devices={"dev-a": ["line-1"]}).model_copy(
            update={"port": env.spec.port}
        ),
    )
    with pytest.raises(TransportError, match="refused"):
        b.publish_sync(TOPICS.device_state("dev-b"), b"still here?")
    log = assert_refused(env, env.link(env.settings("dev-b", client_id="dev-b-2")))
    assert "certificate verify failed" in log
    assert env.connect("dev-a").connected  # control: the CRL names only dev-b
