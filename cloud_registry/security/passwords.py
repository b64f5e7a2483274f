"""Mosquitto password files, written without the ``mosquitto_passwd`` binary.

Mosquitto 2.0 reads ``username:$7$<iterations>$<salt>$<hash>`` lines: PBKDF2-HMAC-SHA512 over the
password with a 12-byte random salt, salt and 64-byte hash in standard base64. This module produces
exactly that (tests check it byte for byte against ``mosquitto_passwd`` and with a real broker).

Iterations: Mosquitto runs PBKDF2 on its single event-loop thread at every CONNECT, so the count is paid
by the whole fleet on every reconnect storm (bench/broker_tls.py: ~1 ms of broker CPU per connect at 101
iterations, ~15 ms at 20,000). Generated passwords are 256-bit random tokens, which no iteration count
makes stronger: they use :data:`RANDOM_ITERATIONS` (Mosquitto's own default). Passwords chosen by people
get :data:`HUMAN_ITERATIONS`, which slows an offline guess at a leaked password file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from cloud_registry.security.certs import check_identity
from cloud_registry.security.errors import SecurityError
from edgeline.core.fsutil import write_atomic

RANDOM_ITERATIONS = 101
HUMAN_ITERATIONS = 20_000
DEFAULT_ITERATIONS = HUMAN_ITERATIONS
SALT_BYTES = 12
MAX_ITERATIONS = 10_000_000
_DIGITS = re.compile(r"^[0-9]{1,9}$")
MAX_PASSWORD = 65_535  # MQTT's password field is a 16-bit length-prefixed binary


def generate_password() -> str:
    """A 256-bit random password, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    if not password:
        raise SecurityError("an empty password is not allowed")
    raw = password.encode("utf-8")
    if len(raw) > MAX_PASSWORD:
        raise SecurityError(f"a password is at most {MAX_PASSWORD} bytes")
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise SecurityError(f"iterations must be between 1 and {MAX_ITERATIONS:,}")
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", raw, salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """Check a password against a ``$7$`` hash, as the broker does."""
    parts = encoded.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "7" or not _DIGITS.match(parts[2]):
        raise SecurityError("not a $7$ (PBKDF2-SHA512) password hash")
    iterations = int(parts[2])
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise SecurityError(f"password hash iteration count {iterations} is out of range")
    try:
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII text
        raise SecurityError("password hash has invalid base64") from exc
    got = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(got, expected)


def parse_password_file(text: str, source: str = "password file") -> dict[str, str]:
    """``username -> hash``. Blank lines and ``#`` comments are skipped; anything else malformed is an error."""
    users: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        user, sep, encoded = stripped.partition(":")
        if not sep or not user or not encoded.startswith("$"):
            raise SecurityError(f"{source}:{lineno}: expected 'username:$7$...' (plain-text passwords are refused)")
        if user in users:
            raise SecurityError(f"{source}:{lineno}: user {user!r} appears twice")
        users[user] = encoded
    return users


def render_password_file(users: dict[str, str]) -> str:
    return "".join(f"{u}:{users[u]}\n" for u in sorted(users))


class PasswordFile:
    """A Mosquitto password file on disk, rewritten atomically (the broker may reload it at any time)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, str]:
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise SecurityError(f"cannot read password file {self.path}: {exc}") from exc
        return parse_password_file(text, str(self.path))

    def _save(self, users: dict[str, str]) -> None:
        write_atomic(self.path, render_password_file(users).encode("utf-8"), mode=0o600)

    def set(self, username: str, password: str, *, iterations: int = DEFAULT_ITERATIONS) -> None:
        check_identity(username, "username", station=True)
        users = self.load()
        users[username] = hash_password(password, iterations=iterations)
        self._save(users)

    def delete(self, username: str) -> bool:
        users = self.load()
        if users.pop(username, None) is None:
            return False
        self._save(users)
        return True

    def usernames(self) -> list[str]:
        return sorted(self.load())

    def check(self, username: str, password: str) -> bool:
        encoded = self.load().get(username)
        return encoded is not None and verify_password(password, encoded)
