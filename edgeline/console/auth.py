"""Passwords, tokens and the login rate limit: pure functions and one small class, no I/O.

Passwords are hashed with scrypt (the standard library's, from OpenSSL): a random 16-byte salt and
the cost in the stored string, ``scrypt$N$r$p$salt$hash`` (base64), compared in constant time.
Session and CSRF tokens are 32 random bytes; the store keeps the SHA-256 of a session token only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from cloud_registry.store.base import ROLES

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD = 8
__all__ = ["ROLES", "LoginLimiter", "csrf_ok", "hash_password", "may", "new_token", "token_hash", "verify_password"]
#: what each role may do besides reading the pages
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset(),
    "operator": frozenset({"deploy", "pause", "resume", "abort", "rollback"}),
}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode("utf-8"), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(_unb64(digest))
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


#: a hash to check wrong user names against, so an unknown name costs as much as a wrong password
DUMMY_HASH = hash_password("not-a-password", salt=b"\0" * 16)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def csrf_ok(expected: str, given: str | None) -> bool:
    """The token of the session against the one the request carried (constant time)."""
    return bool(given) and bool(expected) and hmac.compare_digest(expected.encode(), str(given).encode())


def may(role: str, action: str) -> bool:
    return action in ROLE_ACTIONS.get(role, frozenset())


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: float = 0.0


class LoginLimiter:
    """At most ``failures`` failed logins per ``window_s`` for one client address and for one user
    name (either key trips it); then every attempt is refused, right password or not, until the
    oldest failure leaves the window."""

    def __init__(self, failures: int = 5, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, deque[float]] = {}

    def _trim(self, key: str, now: float) -> deque[float]:
        q = self._seen.setdefault(key, deque())
        while q and now - q[0] >= self.window_s:
            q.popleft()
        return q

    def check(self, client: str, username: str) -> Verdict:
        now = self.clock()
        with self._lock:
            waits = []
            for key in (f"ip:{client}", f"user:{username.lower()}"):
                q = self._trim(key, now)
                if len(q) >= self.failures:
                    waits.append(self.window_s - (now - q[0]))
            return Verdict(False, max(waits)) if waits else Verdict(True)

    def failed(self, client: str, username: str) -> None:
        now = self.clock()
        with self._lock:
            for key in (f"ip:{client}", f"user:{username.lower()}"):
                self._trim(key, now).append(now)
            if len(self._seen) > 10_000:  # forget idle keys (a flood of names must not grow memory)
                for key in [k for k, q in self._seen.items() if not q]:
                    del self._seen[key]

    def succeeded(self, client: str, username: str) -> None:
        with self._lock:
            self._seen.pop(f"user:{username.lower()}", None)
