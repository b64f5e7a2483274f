"""Ed25519 signatures with a two-level key hierarchy.

* A **root key** (kept offline) certifies **signing keys** with a :class:`KeyCertificate`.
* Signing keys sign deployment manifests. They can be rotated (a new root-signed certificate) and
  revoked (a root-signed :class:`RevocationList`), without touching devices.
* Devices hold a :class:`TrustStore`: the root public keys plus the revocations they have seen.

This module is the verify side, shared by the device and the cloud. The private-key operations
(making, certifying, rotating and revoking keys, signing) are the cloud's: :mod:`converters.keys`.

A signed document travels as an :class:`Envelope`: ``{"body": ..., "signature": ..., "certificate": ...}``
where the signature covers ``canonical_json(body)``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import Field, ValidationError

from edgeline.core.errors import ProtocolError, SignatureError
from edgeline.core.fsutil import write_atomic
from edgeline.core.protocol.canonical import canonical_json
from edgeline.core.strict import Strict

ALGORITHM = "ed25519"


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: str, what: str = "base64 field") -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:  # keys and signatures only: a signature failure
        raise SignatureError(f"{what} is not valid base64") from exc


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(key: Ed25519PublicKey) -> str:
    """Stable key id: first 16 hex digits of the sha256 of the raw public key."""
    return hashlib.sha256(public_bytes(key)).hexdigest()[:16]


def load_public(raw_b64: str) -> Ed25519PublicKey:
    raw = b64d(raw_b64, "public key")
    if len(raw) != 32:
        raise SignatureError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


class KeyCertificate(Strict):
    """A root key's statement that ``public_key`` may sign manifests until ``expires_at``."""

    key_id: str = Field(min_length=16, max_length=16)
    public_key: str
    issued_at: float
    expires_at: float
    root_key_id: str = Field(min_length=16, max_length=16)
    signature: str

    def body(self) -> dict[str, Any]:
        return self.model_dump(exclude={"signature"})


class RevocationList(Strict):
    """Root-signed list of revoked signing key ids. ``serial`` only goes up."""

    serial: int = Field(ge=0)
    issued_at: float
    revoked: list[str]
    root_key_id: str
    signature: str

    def body(self) -> dict[str, Any]:
        return self.model_dump(exclude={"signature"})


class Signature(Strict):
    alg: str = ALGORITHM
    key_id: str = Field(min_length=16, max_length=16)
    sig: str


class Envelope(Strict):
    """A signed JSON document: body + signature + the signer's certificate."""

    body: dict[str, Any]
    signature: Signature
    certificate: KeyCertificate


@dataclass
class TrustStore:
    """What a device trusts: root public keys, and the signing keys revoked so far."""

    roots: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    revocation_serial: int = -1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrustStore:
        try:
            roots = {str(k): load_public(str(v)) for k, v in dict(data["roots"]).items()}
            revoked = {str(k) for k in data.get("revoked", [])}
            serial = int(data.get("revocation_serial", -1))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SignatureError(f"trust store is malformed: {exc}") from exc
        for kid, key in roots.items():
            if key_id_of(key) != kid:
                raise SignatureError(f"trust store root {kid} does not match its public key")
        return cls(roots=roots, revoked=revoked, revocation_serial=serial)

    def to_dict(self) -> dict[str, Any]:
        return {
            "roots": {kid: b64e(public_bytes(k)) for kid, k in self.roots.items()},
            "revoked": sorted(self.revoked),
            "revocation_serial": self.revocation_serial,
        }

    @classmethod
    def load(cls, path: Path) -> TrustStore:
        try:
            return cls.from_dict(json.loads(Path(path).read_text("utf-8")))
        except OSError as exc:
            raise SignatureError(f"cannot read trust store {path}: {exc.strerror}") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SignatureError(f"trust store {path} is not valid JSON: {exc}") from exc

    def save(self, path: Path) -> None:
        write_atomic(Path(path), json.dumps(self.to_dict(), indent=2).encode())

    def _root(self, root_key_id: str) -> Ed25519PublicKey:
        root = self.roots.get(root_key_id)
        if root is None:
            raise SignatureError(f"unknown root key {root_key_id}")
        return root

    def verify_certificate(
        self, cert: KeyCertificate, now: float | None = None, *, check_expiry: bool = True
    ) -> Ed25519PublicKey:
        """The certified public key, if a trusted root signed ``cert`` and the key is not revoked (and,
        with ``check_expiry``, the certificate has not expired at ``now``)."""
        root = self._root(cert.root_key_id)
        try:
            root.verify(b64d(cert.signature, "certificate signature"), canonical_json(cert.body()))
        except (InvalidSignature, ProtocolError) as exc:  # ProtocolError: e.g. an infinite time, never signed
            raise SignatureError(f"certificate of key {cert.key_id} is not signed by its root") from exc
        key = load_public(cert.public_key)
        if key_id_of(key) != cert.key_id:
            raise SignatureError(f"certificate key id {cert.key_id} does not match its public key")
        t = time.time() if now is None else now
        if check_expiry and t > cert.expires_at:
            raise SignatureError(f"signing key {cert.key_id} expired")
        if cert.key_id in self.revoked:
            raise SignatureError(f"signing key {cert.key_id} is revoked")
        return key

    def verify(
        self, envelope: Envelope | dict[str, Any], now: float | None = None, *, check_expiry: bool = True
    ) -> dict[str, Any]:
        """Verify an envelope and return its body. Raises :class:`SignatureError` on any failure.

        ``check_expiry=False`` is for a document accepted earlier and read back from the device's own
        disk (the committed model at a restart): the signature, the root and revocation still count,
        the signing certificate's expiry does not (it was checked when the deployment was accepted)."""
        env = parse_envelope(envelope) if isinstance(envelope, dict) else envelope
        if env.signature.alg != ALGORITHM:
            raise SignatureError(f"unsupported signature algorithm {env.signature.alg!r}")
        if env.signature.key_id != env.certificate.key_id:
            raise SignatureError("signature key id does not match the certificate")
        key = self.verify_certificate(env.certificate, now, check_expiry=check_expiry)
        try:
            message = canonical_json(env.body)
        except ProtocolError as exc:  # e.g. nested too deep to encode: it cannot have been signed
            raise SignatureError(f"bad signature: the signed document cannot be encoded: {exc}") from exc
        try:
            key.verify(b64d(env.signature.sig, "signature"), message)
        except InvalidSignature as exc:
            raise SignatureError("bad signature: the signed document was altered or signed by another key") from exc
        return env.body

    def apply_revocations(self, rl: RevocationList | dict[str, Any]) -> bool:
        """Apply a root-signed revocation list. Returns False for a stale (replayed) list."""
        try:
            lst = RevocationList.model_validate(rl) if isinstance(rl, dict) else rl
        except ValidationError as exc:
            raise SignatureError(f"revocation list is malformed: {exc.error_count()} error(s)") from exc
        root = self._root(lst.root_key_id)
        try:
            root.verify(b64d(lst.signature, "revocation signature"), canonical_json(lst.body()))
        except (InvalidSignature, ProtocolError) as exc:  # ProtocolError: e.g. an infinite time, never signed
            raise SignatureError("revocation list is not signed by a trusted root") from exc
        if lst.serial <= self.revocation_serial:
            return False
        self.revoked |= set(lst.revoked)
        self.revocation_serial = lst.serial
        return True


def parse_envelope(data: Any) -> Envelope:
    try:
        return Envelope.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise SignatureError(f"signed envelope is malformed at {loc or 'top level'}: {first['msg']}") from exc
