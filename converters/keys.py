"""The private-key side of signing: the cloud's, never the device's.

* :class:`RootKey` (kept offline) certifies signing keys and signs revocation lists;
* :class:`SigningKey` signs deployment manifests and desired states;
* a key directory (:class:`KeyPaths`) made by ``edgeline keys init``, rotated by
  ``edgeline keys rotate``.

The documents they make and the :class:`~edgeline.core.protocol.signing.TrustStore` that checks
them are in :mod:`edgeline.core.protocol.signing`, which the device imports.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from edgeline.core.errors import SignatureError
from edgeline.core.fsutil import write_atomic
from edgeline.core.protocol.canonical import canonical_json
from edgeline.core.protocol.signing import (
    Envelope,
    KeyCertificate,
    RevocationList,
    Signature,
    TrustStore,
    b64e,
    key_id_of,
    public_bytes,
)


@dataclass
class SigningKey:
    """A private signing key and the root certificate that vouches for it."""

    private: Ed25519PrivateKey
    certificate: KeyCertificate

    @property
    def key_id(self) -> str:
        return self.certificate.key_id

    def sign(self, body: dict[str, Any]) -> Envelope:
        sig = self.private.sign(canonical_json(body))
        return Envelope(
            body=body,
            signature=Signature(key_id=self.key_id, sig=b64e(sig)),
            certificate=self.certificate,
        )


@dataclass
class RootKey:
    private: Ed25519PrivateKey

    @property
    def key_id(self) -> str:
        return key_id_of(self.private.public_key())

    @property
    def public_b64(self) -> str:
        return b64e(public_bytes(self.private.public_key()))

    def certify(self, key: Ed25519PublicKey, *, valid_days: float = 365.0, now: float | None = None) -> KeyCertificate:
        issued = time.time() if now is None else now
        body = {
            "key_id": key_id_of(key),
            "public_key": b64e(public_bytes(key)),
            "issued_at": issued,
            "expires_at": issued + valid_days * 86400.0,
            "root_key_id": self.key_id,
        }
        return KeyCertificate(**body, signature=b64e(self.private.sign(canonical_json(body))))

    def revoke(self, key_ids: list[str], serial: int, now: float | None = None) -> RevocationList:
        body = {
            "serial": serial,
            "issued_at": time.time() if now is None else now,
            "revoked": sorted(set(key_ids)),
            "root_key_id": self.key_id,
        }
        return RevocationList(**body, signature=b64e(self.private.sign(canonical_json(body))))


def save_private(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_atomic(path, pem, mode=0o600)


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise SignatureError(f"key file {path} not found (create one with 'edgeline keys init')") from exc
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"key file {path} is not a readable Ed25519 private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"key file {path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


@dataclass(frozen=True)
class KeyPaths:
    """The files of a key directory made by ``edgeline keys init``."""

    directory: Path

    @property
    def root_key(self) -> Path:
        return self.directory / "root.key"

    @property
    def signing_key(self) -> Path:
        return self.directory / "signing.key"

    @property
    def signing_cert(self) -> Path:
        return self.directory / "signing.cert.json"

    @property
    def trust(self) -> Path:
        """The file devices get: root public keys and revocations."""
        return self.directory / "trust.json"

    @property
    def revocations(self) -> Path:
        return self.directory / "revocations.json"


def init_keys(directory: Path, *, force: bool = False, valid_days: float = 365.0) -> KeyPaths:
    """Create a root key, a signing key certified by it, and the device trust store."""
    paths = KeyPaths(Path(directory))
    if paths.root_key.exists() and not force:
        raise SignatureError(f"{paths.root_key} exists; pass force to replace the whole key set")
    root = RootKey(Ed25519PrivateKey.generate())
    save_private(paths.root_key, root.private)
    rotate_signing_key(paths, valid_days=valid_days)
    TrustStore(roots={root.key_id: root.private.public_key()}).save(paths.trust)
    return paths


def rotate_signing_key(paths: KeyPaths, *, valid_days: float = 365.0, root_key: Path | None = None) -> KeyCertificate:
    """Make a fresh signing key, certified by the root (or by ``root_key``, e.g. a backup root that devices
    also trust). Devices accept it with no change."""
    root = RootKey(load_private(paths.root_key if root_key is None else Path(root_key)))
    new = Ed25519PrivateKey.generate()
    cert = root.certify(new.public_key(), valid_days=valid_days)
    save_private(paths.signing_key, new)
    write_atomic(paths.signing_cert, json.dumps(cert.model_dump(), indent=2).encode())
    return cert


def load_signing_key(directory: Path) -> SigningKey:
    paths = KeyPaths(Path(directory))
    private = load_private(paths.signing_key)
    try:
        cert = KeyCertificate.model_validate_json(paths.signing_cert.read_bytes())
    except FileNotFoundError as exc:
        raise SignatureError(f"certificate {paths.signing_cert} not found") from exc
    except ValidationError as exc:
        raise SignatureError(f"certificate {paths.signing_cert} is malformed") from exc
    if key_id_of(private.public_key()) != cert.key_id:
        raise SignatureError("signing key and certificate do not belong together")
    return SigningKey(private=private, certificate=cert)
