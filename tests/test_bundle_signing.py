"""Signing and verification of bundles: signature chain, hashes, self-test, tampering."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from converters.keys import RootKey, SigningKey
from edge_agent.bundle import open_bundle, verify_bundle
from edge_agent.errors import BundleError, ProtocolError, SelfTestError, SignatureError
from edgeline.core.protocol.signing import TrustStore
from tests.factories import write_tiny_bundle


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_valid_bundle_verifies(tiny_bundle: Path, trust: TrustStore) -> None:
    summary = verify_bundle(tiny_bundle, trust)
    assert summary["name"] == "tiny"
    assert summary["version"] == 1
    assert summary["selftest_max_deviation"] < 1e-5


def test_flipped_byte_in_model_is_rejected(tiny_bundle: Path, trust: TrustStore, tmp_path: Path) -> None:
    b = copy(tiny_bundle, tmp_path / "b")
    model = b / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        open_bundle(b, trust)


def test_flipped_byte_in_manifest_is_rejected(tiny_bundle: Path, trust: TrustStore, tmp_path: Path) -> None:
    b = copy(tiny_bundle, tmp_path / "b")
    env = json.loads((b / "manifest.json").read_text())
    env["body"]["thresholds"]["defect_min_confidence"] = 0.01  # a silent policy change
    (b / "manifest.json").write_text(json.dumps(env))
    with pytest.raises(SignatureError, match="bad signature"):
        open_bundle(b, trust)


def test_raw_byte_flip_anywhere_in_manifest_never_passes(tiny_bundle: Path, trust: TrustStore, tmp_path: Path) -> None:
    raw = (tiny_bundle / "manifest.json").read_bytes()
    b = copy(tiny_bundle, tmp_path / "b")
    rejected = 0
    positions = range(0, len(raw), max(1, len(raw) // 97))
    for pos in positions:
        data = bytearray(raw)
        data[pos] ^= 0x04
        (b / "manifest.json").write_bytes(bytes(data))
        try:
            open_bundle(b, trust)
        except (ProtocolError, BundleError) as exc:
            assert str(exc)
            rejected += 1
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            pytest.fail(f"byte {pos}: unexpected {type(exc).__name__}: {exc}")
        else:
            # A flip inside insignificant whitespace keeps the same JSON value: still authentic.
            assert json.loads(bytes(data)) == json.loads(raw)
    assert rejected >= len(positions) * 0.8


def test_unknown_root_is_rejected(tiny_bundle: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = RootKey(Ed25519PrivateKey.generate())
    store = TrustStore(roots={other.key_id: other.private.public_key()})
    with pytest.raises(SignatureError, match="unknown root key"):
        open_bundle(tiny_bundle, store)


def test_revoked_signing_key_is_rejected(tiny_bundle: Path, trust: TrustStore, key_dir: Path) -> None:
    from converters.keys import KeyPaths, load_private

    root = RootKey(load_private(KeyPaths(key_dir).root_key))
    env = json.loads((tiny_bundle / "manifest.json").read_text())
    assert trust.apply_revocations(root.revoke([env["signature"]["key_id"]], serial=1))
    with pytest.raises(SignatureError, match="revoked"):
        open_bundle(tiny_bundle, trust)
    # a replayed, older revocation list is ignored
    assert not trust.apply_revocations(root.revoke([], serial=0))


def test_self_signed_key_without_root_certificate_is_rejected(
    tiny_bundle: Path, trust: TrustStore, signing_key: SigningKey, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    rogue_root = RootKey(Ed25519PrivateKey.generate())
    rogue_key = Ed25519PrivateKey.generate()
    forged_cert = rogue_root.certify(rogue_key.public_key()).model_copy(
        update={"root_key_id": signing_key.certificate.root_key_id}
    )
    b = write_tiny_bundle(tmp_path / "rogue", SigningKey(rogue_key, forged_cert))
    with pytest.raises(SignatureError, match="not signed by its root"):
        open_bundle(b, trust)


def test_expired_manifest_is_rejected(trust: TrustStore, signing_key: SigningKey, tmp_path: Path) -> None:
    b = write_tiny_bundle(tmp_path / "old", signing_key, valid_days=1.0, issued_at=time.time() - 2 * 86400)
    with pytest.raises(BundleError, match="expired"):
        open_bundle(b, trust)
    assert open_bundle(b, trust, check_expiry=False).manifest.version == 1


def test_self_test_mismatch_is_rejected(trust: TrustStore, signing_key: SigningKey, tmp_path: Path) -> None:
    b = write_tiny_bundle(tmp_path / "bad", signing_key, corrupt_expected=True)
    with pytest.raises(SelfTestError, match="differs"):
        verify_bundle(b, trust)


def test_missing_manifest(tmp_path: Path, trust: TrustStore) -> None:
    with pytest.raises(BundleError, match="missing"):
        open_bundle(tmp_path, trust)
