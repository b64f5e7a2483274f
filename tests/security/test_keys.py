"""Signing keys: rotation accepted by an unchanged device trust store, revocation refused once applied,
forged certificates and revocation lists refused, backup-root recovery, and revocations over the
locked-down broker."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_registry.security import keyring
from cloud_registry.security.errors import SecurityError
from converters.keys import KeyPaths, RootKey, SigningKey, init_keys, load_private, load_signing_key
from edge_agent.bundle import open_bundle
from edge_agent.errors import SignatureError
from edgeline.core.protocol.signing import RevocationList, TrustStore
from tests.factories import TinyModel, tiny_model, write_tiny_bundle
from tests.security.conftest import REGISTRY, TOPICS, Inbox, Locked


@pytest.fixture(scope="module")
def model() -> TinyModel:
    return tiny_model(0)


@pytest.fixture
def keys(tmp_path: Path) -> KeyPaths:
    paths = init_keys(tmp_path / "keys")
    keyring.add_backup_root(paths)
    return paths


def device_trust(paths: KeyPaths, tmp_path: Path) -> Path:
    """What a device was provisioned with: a copy of trust.json taken now, never updated by the registry."""
    dst = tmp_path / f"device-trust-{len(list(tmp_path.glob('device-trust-*')))}.json"
    shutil.copy(paths.trust, dst)
    return dst


def bundle(paths: KeyPaths, model: TinyModel, out: Path, version: int = 1) -> Path:
    return write_tiny_bundle(out, load_signing_key(paths.directory), model=model, version=version)


def test_rotated_key_verifies_with_the_unchanged_device_trust_store(
    keys: KeyPaths, model: TinyModel, tmp_path: Path
) -> None:
    provisioned = device_trust(keys, tmp_path)
    trust_before = provisioned.read_bytes()
    old_id, cert = keyring.rotate(keys)
    assert cert.key_id != old_id
    b = bundle(keys, model, tmp_path / "v2", version=2)
    store = TrustStore.load(provisioned)
    assert open_bundle(b, store).manifest.version == 2
    assert provisioned.read_bytes() == trust_before  # the device needed no change
    assert (keyring.retired_dir(keys) / f"{old_id}.cert.json").exists()
    retired = keyring.status(keys)["retired"]
    assert [r["key_id"] for r in retired] == [old_id]
    assert retired[0]["revoked"] is False


def test_revoked_key_is_refused_once_the_list_is_applied(keys: KeyPaths, model: TinyModel, tmp_path: Path) -> None:
    provisioned = device_trust(keys, tmp_path)
    old_bundle = bundle(keys, model, tmp_path / "old")
    old_id, _ = keyring.rotate(keys)
    new_bundle = bundle(keys, model, tmp_path / "new", version=2)
    lst = keyring.revoke(keys, [old_id])

    device = TrustStore.load(provisioned)
    assert open_bundle(old_bundle, device).manifest.version == 1  # not yet told
    wire = json.loads(json.dumps(lst.model_dump()))  # as it travels on the retained topic
    assert device.apply_revocations(wire) is True
    with pytest.raises(SignatureError, match="revoked"):
        open_bundle(old_bundle, device)
    assert open_bundle(new_bundle, device).manifest.version == 2
    assert device.apply_revocations(wire) is False  # replay: ignored, still revoked
    with pytest.raises(SignatureError, match="revoked"):
        open_bundle(old_bundle, device)
    # the registry's own trust.json carries it too
    assert old_id in TrustStore.load(keys.trust).revoked


def test_revocation_list_is_cumulative_and_serials_only_go_up(keys: KeyPaths) -> None:
    first, _ = keyring.rotate(keys)
    second, _ = keyring.rotate(keys)
    l1 = keyring.revoke(keys, [first], now=1_000.0)
    l2 = keyring.revoke(keys, [second], now=500.0)  # a clock that went backwards
    assert l2.serial > l1.serial
    assert l2.revoked == sorted([first, second])
    device = TrustStore(roots=TrustStore.load(keys.trust).roots)
    assert device.apply_revocations(l2) and not device.apply_revocations(l1)
    assert device.revoked == {first, second}


def test_revoking_the_current_key_or_nonsense_is_refused(keys: KeyPaths) -> None:
    current = load_signing_key(keys.directory).key_id
    with pytest.raises(SecurityError, match="rotate first"):
        keyring.revoke(keys, [current])
    for bad in ("not-a-key-id", "ABCDEF0123456789", "0" * 15, ""):
        with pytest.raises(SecurityError, match="not a signing key id"):
            keyring.revoke(keys, [bad])
    assert not keys.revocations.exists()  # nothing half-written
    assert keyring.revoke(keys, [current], allow_current=True).revoked == [current]


def test_forged_certificates_are_refused(keys: KeyPaths, model: TinyModel, tmp_path: Path) -> None:
    device = TrustStore.load(device_trust(keys, tmp_path))
    real = load_signing_key(keys.directory)
    trusted_root = real.certificate.root_key_id

    # 1. an attacker's own root certifies the attacker's key, claiming the trusted root's id
    rogue_root = RootKey(Ed25519PrivateKey.generate())
    rogue_key = Ed25519PrivateKey.generate()
    claimed = rogue_root.certify(rogue_key.public_key()).model_copy(update={"root_key_id": trusted_root})
    with pytest.raises(SignatureError, match="not signed by its root"):
        open_bundle(write_tiny_bundle(tmp_path / "f1", SigningKey(rogue_key, claimed), model=model), device)

    # 2. the genuine certificate with its lifetime stretched
    stretched = real.certificate.model_copy(update={"expires_at": real.certificate.expires_at + 10 * 365 * 86400})
    with pytest.raises(SignatureError, match="not signed by its root"):
        open_bundle(write_tiny_bundle(tmp_path / "f2", SigningKey(real.private, stretched), model=model), device)

    # 3. the genuine certificate presented with another private key
    with pytest.raises(SignatureError, match="bad signature"):
        open_bundle(write_tiny_bundle(tmp_path / "f3", SigningKey(rogue_key, real.certificate), model=model), device)

    # 4. the genuine certificate with the attacker's public key swapped in
    from edgeline.core.protocol.signing import b64e, key_id_of, public_bytes

    swapped = real.certificate.model_copy(
        update={"public_key": b64e(public_bytes(rogue_key.public_key())), "key_id": key_id_of(rogue_key.public_key())}
    )
    with pytest.raises(SignatureError, match="not signed by its root"):
        open_bundle(write_tiny_bundle(tmp_path / "f4", SigningKey(rogue_key, swapped), model=model), device)

    # 5. a root that the device does not know at all
    with pytest.raises(SignatureError, match="unknown root"):
        open_bundle(
            write_tiny_bundle(
                tmp_path / "f5", SigningKey(rogue_key, rogue_root.certify(rogue_key.public_key())), model=model
            ),
            device,
        )


def test_forged_revocation_lists_are_refused(keys: KeyPaths) -> None:
    device = TrustStore.load(keys.trust)
    current = load_signing_key(keys.directory)
    root_id = current.certificate.root_key_id
    rogue = RootKey(Ed25519PrivateKey.generate())
    # an attacker who wants to revoke the fleet's good key (denial of service) or un-revoke by replay
    forged = rogue.revoke([current.key_id], serial=10**9).model_copy(update={"root_key_id": root_id})
    with pytest.raises(SignatureError, match="not signed by a trusted root"):
        device.apply_revocations(forged)
    # a signing key cannot sign revocation lists: only roots can
    body = {"serial": 10**9, "issued_at": 0.0, "revoked": [current.key_id], "root_key_id": root_id}
    from edgeline.core.protocol.canonical import canonical_json
    from edgeline.core.protocol.signing import b64e

    by_signing_key = RevocationList(**body, signature=b64e(current.private.sign(canonical_json(body))))
    with pytest.raises(SignatureError, match="not signed by a trusted root"):
        device.apply_revocations(by_signing_key)
    for junk in ({}, {"serial": -1}, {"serial": "1", "revoked": "x"}, {"extra": 1}):
        with pytest.raises(SignatureError, match="malformed"):
            device.apply_revocations(junk)
    assert device.revoked == set() and device.revocation_serial == -1


def test_lost_root_key_recovery_with_the_backup_root(keys: KeyPaths, model: TinyModel, tmp_path: Path) -> None:
    """The documented procedure: root.key is gone; the backup root (trusted by devices since provisioning)
    certifies a new signing key and signs the revocation of the old one. No device is touched."""
    provisioned = device_trust(keys, tmp_path)
    old_bundle = bundle(keys, model, tmp_path / "old")
    backup = keyring.backup_root_path(keys)
    safe = tmp_path / "safe" / "root-backup.key"
    safe.parent.mkdir()
    shutil.move(backup, safe)  # where it lives: a separate safe
    keys.root_key.unlink()  # the loss

    with pytest.raises(SecurityError):
        keyring.rotate(keys)  # the lost root cannot be used
    old_id, cert = keyring.rotate(keys, root_key=safe)
    assert cert.root_key_id == RootKey(load_private(safe)).key_id
    lst = keyring.revoke(keys, [old_id], root_key=safe)
    new_bundle = bundle(keys, model, tmp_path / "new", version=2)

    device = TrustStore.load(provisioned)
    assert open_bundle(new_bundle, device).manifest.version == 2
    assert device.apply_revocations(lst)
    with pytest.raises(SignatureError, match="revoked"):
        open_bundle(old_bundle, device)


def test_a_root_the_devices_do_not_trust_cannot_rotate_or_revoke(keys: KeyPaths, tmp_path: Path) -> None:
    from converters.keys import save_private

    stray = tmp_path / "stray.key"
    save_private(stray, Ed25519PrivateKey.generate())
    before = keys.signing_cert.read_bytes()
    with pytest.raises(SecurityError, match="not in"):
        keyring.rotate(keys, root_key=stray)
    with pytest.raises(SecurityError, match="not in"):
        keyring.revoke(keys, ["0123456789abcdef"], root_key=stray)
    assert keys.signing_cert.read_bytes() == before


def test_revocations_travel_over_the_locked_broker(
    locked: Locked, keys: KeyPaths, model: TinyModel, tmp_path: Path
) -> None:
    """The registry publishes the list retained; a device that connects later receives it, applies it and
    refuses the revoked key. A device cannot publish a list of its own."""
    provisioned = device_trust(keys, tmp_path)
    old_bundle = bundle(keys, model, tmp_path / "old")
    old_id, _ = keyring.rotate(keys)
    lst = keyring.revoke(keys, [old_id])

    registry = locked.connect(REGISTRY)
    keyring.publish_revocations(registry, TOPICS, lst)

    rogue = RootKey(Ed25519PrivateKey.generate()).revoke([], serial=10**10)
    a = locked.connect("dev-a")
    with pytest.raises(SecurityError, match="could not publish"):
        keyring.publish_revocations(a, TOPICS, rogue)

    device = TrustStore.load(provisioned)
    inbox = Inbox()
    a.subscribe(TOPICS.trust_revocations(), inbox)
    assert inbox.wait_for(TOPICS.trust_revocations())
    [(_, payload)] = inbox.items
    assert device.apply_revocations(json.loads(payload)) is True
    with pytest.raises(SignatureError, match="revoked"):
        open_bundle(old_bundle, device)
