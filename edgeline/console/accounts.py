"""Accounts and sessions over the registry store (``edgeline console user add|list|remove`` and the
login). A session lives ``SESSION_S`` at most; logging out or removing the user ends it."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from cloud_registry.errors import NotFound, RegistryError
from cloud_registry.store import RegistryStore, SessionRow, UserRow
from edgeline.console import auth

SESSION_S = 8 * 3600.0
_NAME = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")


class AccountError(RegistryError):
    default_reason = "account"


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
    def __init__(self, store: RegistryStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def login(self, username: str, password: str) -> tuple[str, Session] | None:
        """A new session token and its session, or None (the same cost for a wrong name or password)."""
        try:
            user = self.store.get_user(username)
        except NotFound:
            auth.verify_password(password, auth.DUMMY_HASH)
            return None
        if not auth.verify_password(password, user.password_hash):
            return None
        token = auth.new_token()
        now = self.clock()
        row = SessionRow(auth.token_hash(token), user.username, auth.new_token(), now, now + SESSION_S)
        self.store.purge_sessions(now)
        self.store.put_session(row)
        return token, Session(user.username, user.role, row.csrf, row.token_hash)

    def lookup(self, token: str | None) -> Session | None:
        if not token or len(token) > 200:
            return None
        row = self.store.get_session(auth.token_hash(token), self.clock())
        if row is None:
            return None
        try:
            user = self.store.get_user(row.username)
        except NotFound:
            return None
        return Session(user.username, user.role, row.csrf, row.token_hash)

    def logout(self, session: Session) -> None:
        self.store.delete_session(session.token_hash)
