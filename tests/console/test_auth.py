"""Passwords, tokens, roles and the login rate limit (pure), and the accounts, sessions and audit
tables of the registry store on SQLite and on the real PostgreSQL (throwaway schema)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_registry.errors import Conflict, NotFound
from cloud_registry.store import AuditRow, RegistryStore, SessionRow, UserRow, open_store
from edgeline.console import auth
from edgeline.console.accounts import AccountError, Sessions, add_user
from tests.delivery.test_registry_store import PG_URL, _pg_available


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_passwords_are_salted_scrypt_and_checked_in_constant_time() -> None:
    h1, h2 = auth.hash_password("correct horse"), auth.hash_password("correct horse")
    assert h1 != h2 and h1.startswith("scrypt$16384$8$1$")  # salted
    assert "correct horse" not in h1
    assert auth.verify_password("correct horse", h1)
    assert not auth.verify_password("correct hors", h1)
    assert not auth.verify_password("correct horse", "plain$text")
    assert not auth.verify_password("correct horse", "scrypt$x$8$1$a$b")
    with pytest.raises(ValueError, match="at least 8"):
        auth.hash_password("short")


def test_tokens_csrf_and_roles() -> None:
    a, b = auth.new_token(), auth.new_token()
    assert a != b and len(a) >= 40
    assert auth.token_hash(a) != a and len(auth.token_hash(a)) == 64
    assert auth.csrf_ok(a, a)
    assert not auth.csrf_ok(a, b) and not auth.csrf_ok(a, None) and not auth.csrf_ok(a, "") and not auth.csrf_ok("", "")
    for action in ("deploy", "pause", "resume", "abort", "rollback"):
        assert auth.may("operator", action) and not auth.may("viewer", action)
    assert not auth.may("nobody", "deploy") and not auth.may("operator", "drop tables")


def test_the_login_limit_trips_per_address_and_per_name_and_expires() -> None:
    clock = Clock()
    lim = auth.LoginLimiter(failures=3, window_s=60.0, clock=clock)
    for _ in range(3):
        assert lim.check("10.0.0.1", "olga").allowed
        lim.failed("10.0.0.1", "olga")
    refused = lim.check("10.0.0.1", "someone-else")  # the address is blocked, whatever the name
    assert not refused.allowed and 59 < refused.retry_after_s <= 60
    assert not lim.check("10.0.0.2", "OLGA").allowed  # and the name, from any address
    assert lim.check("10.0.0.2", "victor").allowed
    clock.t += 60.0
    assert lim.check("10.0.0.1", "olga").allowed
    lim.failed("10.0.0.3", "x")
    lim.succeeded("10.0.0.3", "x")
    assert lim.check("10.0.0.3", "x").allowed


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryStore]:
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'reg.db'}")
        yield s
        s.close()
        return
    if not _pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL}")
    s = open_store(f"{PG_URL}?schema=edgeline_console_{uuid.uuid4().hex[:10]}")
    try:
        yield s
    finally:
        s.drop_schema()  # type: ignore[attr-defined]
        s.close()


def test_users_sessions_and_audit_in_the_store(store: RegistryStore) -> None:
    row = add_user(store, "olga", "operator-secret-1", "operator")
    assert store.get_user("olga") == row and row.password_hash.startswith("scrypt$")
    with pytest.raises(Conflict):
        add_user(store, "olga", "another-secret", "viewer")
    with pytest.raises(AccountError, match="role"):
        add_user(store, "x", "long-enough-pw", "admin")
    with pytest.raises(AccountError, match="user name"):
        add_user(store, "a b", "long-enough-pw", "viewer")
    with pytest.raises(Conflict):
        store.add_user(UserRow("y", "h", "root", 0.0))
    add_user(store, "victor", "viewer-secret-22", "viewer")
    assert [u.username for u in store.list_users()] == ["olga", "victor"]

    clock = Clock()
    sessions = Sessions(store, clock)
    assert sessions.login("olga", "wrong-password") is None
    assert sessions.login("nobody", "operator-secret-1") is None
    got = sessions.login("olga", "operator-secret-1")
    assert got is not None
    token, s = got
    assert s.role == "operator" and s.may("abort") and len(s.csrf) >= 40
    assert sessions.lookup(token) == s
    assert sessions.lookup(token + "x") is None and sessions.lookup(None) is None
    clock.t += 9 * 3600  # past the session's life
    assert sessions.lookup(token) is None
    clock.t = 1000.0
    sessions.logout(s)
    assert sessions.lookup(token) is None
    token2, _ = sessions.login("victor", "viewer-secret-22") or ("", None)
    assert sessions.lookup(token2) is not None
    store.remove_user("victor")  # its sessions end with it
    assert sessions.lookup(token2) is None
    with pytest.raises(NotFound):
        store.remove_user("victor")
    store.put_session(SessionRow("h" * 64, "olga", "c", 0.0, 10.0))
    store.purge_sessions(20.0)
    assert store.get_session("h" * 64, 5.0) is None

    now = time.time()
    store.add_audit(AuditRow(now, "olga", "deploy", "tiny@1 -> group:a", "started", {"rollout": "r1"}))
    store.add_audit(AuditRow(now + 1, "olga", "abort", "r1", "aborted"))
    rows = store.list_audit()
    assert [(r.action, r.target) for r in rows] == [("abort", "r1"), ("deploy", "tiny@1 -> group:a")]
    assert rows[1].detail == {"rollout": "r1"} and rows[0].username == "olga"
    assert len(store.list_audit(limit=1)) == 1
