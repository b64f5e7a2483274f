"""Accounts and sessions over the registry store (``edgeline console user add|list|remove`` and the
login). A session lives ``SESSION_S`` at most; logging out or removing the user ends it."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cloud_registry.errors import NotFound, RegistryError
from cloud_registry.store import RegistryStore, SessionRow, UserRow
from edgeline.console import auth

log = logging.getLogger(__name__)
SESSION_S = 8 * 3600.0
_NAME = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")


class AccountError(RegistryError):
    default_reason = "account"


class StoreDown(RegistryError):
    """A login while the registry store is unreachable (sessions already open keep working)."""

    default_reason = "store_down"


@dataclass(frozen=True)
class Session:
    username: str
    role: str
    csrf: str
    token_hash: str

    def may(self, action: str) -> bool:
        return auth.may(self.role, action)


def add_user(store: RegistryStore, username: str, password: str, role: str) -> UserRow:
    if not _NAME.match(username):
        raise AccountError(f"bad user name {username!r}: letters, digits and . _ - @, at most 64")
    if role not in auth.ROLES:
        raise AccountError(f"unknown role {role!r}: use {' or '.join(auth.ROLES)}")
    try:
        digest = auth.hash_password(password)
    except ValueError as exc:
        raise AccountError(str(exc)) from exc
    row = UserRow(username, digest, role, time.time())
    store.add_user(row)
    return row


class Sessions:
    """Logins and session lookups. A session the store confirmed is remembered here until it expires,
    so the people already logged in keep seeing the pages while the store is unreachable; a new login
    needs the store (:class:`StoreDown`)."""

    def __init__(self, store: RegistryStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._known: dict[str, tuple[Session, float]] = {}
        #: sessions logged out while the store could not drop them
        self._ended: set[str] = set()

    def _remember(self, s: Session, expires_at: float) -> None:
        with self._lock:
            now = self.clock()
            if len(self._known) > 10_000:
                self._known = {k: v for k, v in self._known.items() if v[1] > now}
            self._known[s.token_hash] = (s, expires_at)

    def _forget(self, token_hash: str) -> None:
        with self._lock:
            self._known.pop(token_hash, None)

    def _remembered(self, token_hash: str) -> Session | None:
        with self._lock:
            got = self._known.get(token_hash)
        return got[0] if got is not None and got[1] > self.clock() else None

    def login(self, username: str, password: str) -> tuple[str, Session] | None:
        """A new session token and its session, or None (the same cost for a wrong name or password)."""
        try:
            user = self.store.get_user(username)
        except NotFound:
            auth.verify_password(password, auth.DUMMY_HASH)
            return None
        except RegistryError as exc:
            raise StoreDown(f"the registry store is unreachable ({exc})") from exc
        if not auth.verify_password(password, user.password_hash):
            return None
        token = auth.new_token()
        now = self.clock()
        row = SessionRow(auth.token_hash(token), user.username, auth.new_token(), now, now + SESSION_S)
        try:
            self.store.purge_sessions(now)
            self.store.put_session(row)
        except RegistryError as exc:
            raise StoreDown(f"the registry store is unreachable ({exc})") from exc
        s = Session(user.username, user.role, row.csrf, row.token_hash)
        self._remember(s, row.expires_at)
        return token, s

    def lookup(self, token: str | None) -> Session | None:
        """The session of ``token``; while the store is unreachable, the one it last confirmed."""
        if not token or len(token) > 200:
            return None
        th = auth.token_hash(token)
        with self._lock:
            if th in self._ended:
                return None
        try:
            row = self.store.get_session(th, self.clock())
            user = self.store.get_user(row.username) if row is not None else None
        except NotFound:
            row = user = None
        except RegistryError:
            return self._remembered(th)
        if row is None or user is None:
            self._forget(th)
            return None
        s = Session(user.username, user.role, row.csrf, row.token_hash)
        self._remember(s, row.expires_at)
        return s

    def logout(self, session: Session) -> None:
        """End the session here at once, and in the store (later, if it is unreachable now)."""
        self._forget(session.token_hash)
        with self._lock:
            self._ended.add(session.token_hash)
        try:
            self.store.delete_session(session.token_hash)
        except RegistryError as exc:
            log.warning("session of %s ended here; the store could not drop it yet: %s", session.username, exc)
            return
        with self._lock:
            self._ended.discard(session.token_hash)
