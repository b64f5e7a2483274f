"""Who may open an OPC UA session: users from a file, client certificates from a directory, and
anonymous sessions only when the config allows them (which it does on loopback only).

The users file holds ``name:secret`` lines; a secret is ``pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>``
(see :func:`hash_password`) or, discouraged, the password itself. Comparisons are constant-time."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from pathlib import Path
from typing import Any

from asyncua.crypto.permission_rules import User, UserRole
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger(__name__)

ITERATIONS = 200_000


def hash_password(password: str, iterations: int = ITERATIONS) -> str:
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${salt.hex()}${digest.hex()}"


def check_password(secret: str, password: str) -> bool:
    if secret.startswith("pbkdf2_sha256$"):
        try:
            _, n, salt, want = secret.split("$")
            got = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(n))
        except ValueError:
            return False
        return hmac.compare_digest(got.hex(), want)
    return hmac.compare_digest(secret.encode(), password.encode())


def read_users(path: Path) -> dict[str, str]:
    users: dict[str, str] = {}
    for n, raw in enumerate(path.read_text("utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, secret = line.partition(":")
        if not sep or not name or not secret:
            raise ValueError(f"{path}:{n}: expected name:secret")
        users[name] = secret
    return users


def read_certificates(folder: Path) -> set[bytes]:
    """DER bytes of every certificate (PEM or DER) in ``folder``."""
    out: set[bytes] = set()
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        data = p.read_bytes()
        try:
            cert = (
                x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
            )
        except ValueError:
            log.warning("%s is not a certificate; ignored", p)
            continue
        out.add(cert.public_bytes(serialization.Encoding.DER))
    return out


class LineUserManager:
    """asyncua's user manager: a user, a known client certificate, or (when allowed) anonymous."""

    def __init__(self, users: dict[str, str], certificates: set[bytes], allow_anonymous: bool) -> None:
        self.users = users
        self.certificates = certificates
        self.allow_anonymous = allow_anonymous
        self.refused = 0

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if username is not None:
            secret = self.users.get(username)
            if secret is not None and check_password(secret, password or ""):
                return User(role=UserRole.User, name=username)
            self.refused += 1
            log.warning("OPC UA: refused user %r (wrong name or password)", username)
            return None
        if certificate is not None:
            der = certificate.public_bytes(serialization.Encoding.DER) if hasattr(certificate, "public_bytes") else None
            if der is not None and der in self.certificates:
                return User(role=UserRole.User, name="certificate")
            self.refused += 1
            log.warning("OPC UA: refused an unknown user certificate")
            return None
        if self.allow_anonymous:
            return User(role=UserRole.User, name="anonymous")
        self.refused += 1
        return None
