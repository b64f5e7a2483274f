"""The console over HTTP with the broker down (no service at all): login, CSRF, roles, the rate
limit, the pages, the audit log, and what it says when the broker or the store is unreachable."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from cloud_registry.errors import BackendError
from converters.keys import KeyPaths
from edgeline.console.app import Console, create_app
from edgeline.console.server import Bind, ConsoleError, check_exposure
from edgeline.core.protocol.signing import TrustStore
from tests.console.conftest import OPERATOR, VIEWER, Home, make_console, with_report
from tests.delivery.conftest import BuiltBundle

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")


@pytest.fixture
def console(home: Home) -> Iterator[Console]:
    c = make_console(home, None, secure_cookies=False, failures=3)
    yield c
    c.close()


@pytest.fixture
def client(console: Console) -> Iterator[TestClient]:
    with TestClient(create_app(console), follow_redirects=False) as tc:
        yield tc


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def login(client: TestClient, user: tuple[str, str]) -> str:
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"csrf": token, "username": user[0], "password": user[1]})
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    return csrf_of(client.get("/").text)


def test_pages_need_a_session_and_carry_strict_headers(client: TestClient) -> None:
    for path in ("/", "/rollouts", "/models", "/drift", "/audit"):
        r = client.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/events").status_code == 401
    r = client.get("/login")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=strict" in r.headers["set-cookie"]
    assert client.get("/static/console.js").status_code == 200


def test_login_refuses_a_wrong_password_then_rate_limits(client: TestClient, console: Console) -> None:
    token = csrf_of(client.get("/login").text)
    for _ in range(3):
        r = client.post("/login", data={"csrf": token, "username": OPERATOR[0], "password": "wrong-password"})
        assert r.status_code == 401 and "Wrong user name or password" in r.text
        assert "edgeline_session" not in r.headers.get("set-cookie", "")
        token = csrf_of(r.text)
    # the right password is refused too while the limit holds
    r = client.post("/login", data={"csrf": token, "username": OPERATOR[0], "password": OPERATOR[1]})
    assert r.status_code == 429 and "Too many failed logins" in r.text and int(r.headers["retry-after"]) > 0
    outcomes = [a.outcome for a in console.registry.store.list_audit() if a.action == "login"]
    assert outcomes.count("refused: wrong user or password") == 3 and "refused: rate limited" in outcomes


def test_login_needs_the_form_token(client: TestClient) -> None:
    client.get("/login")
    r = client.post("/login", data={"username": OPERATOR[0], "password": OPERATOR[1]})
    assert r.status_code == 403
    token = csrf_of(client.get("/login").text)
    r = client.post(
        "/login",
        data={"csrf": token, "username": OPERATOR[0], "password": OPERATOR[1]},
        headers={"Origin": "https://evil.example"},
    )
    assert r.status_code == 403


def test_actions_need_the_csrf_token_and_the_operator_role(client: TestClient, console: Console) -> None:
    csrf = login(client, VIEWER)
    page = client.get("/rollouts").text
    assert 'id="deploy-button"' not in page and "Viewers see rollouts" in page
    r = client.post("/deploy", data={"csrf": csrf, "ref": "tiny@1", "target": "device:a"})
    assert r.status_code == 403 and "viewer role may not deploy" in r.text
    assert client.post("/rollouts/r1/abort", data={"csrf": csrf}).status_code == 403
    client.post("/logout", data={"csrf": csrf})
    assert client.get("/").status_code == 303  # the session ended

    csrf = login(client, OPERATOR)
    assert 'id="deploy-button"' in client.get("/rollouts").text
    r = client.post("/deploy", data={"ref": "tiny@1", "target": "device:a"})  # forged: no token
    assert r.status_code == 403 and "CSRF" in r.text
    r = client.post("/deploy", data={"csrf": "x" * 43, "ref": "tiny@1", "target": "device:a"})
    assert r.status_code == 403
    r = client.post("/rollouts/r1/abort", data={"csrf": csrf}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    # with the token: the action runs, and is refused by the library (the broker is down), audited
    r = client.post("/deploy", data={"csrf": csrf, "ref": "tiny@1", "target": "device:a"})
    assert r.status_code == 303
    assert "broker is unreachable" in client.get("/rollouts").text
    r = client.post("/rollouts/nope/abort", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 303
    audit = client.get("/audit").text
    for text in ("refused: role viewer", "refused: bad CSRF token", "refused: the fleet broker is unreachable"):
        assert text in audit
    assert "rollout nope does not exist" in audit


def test_the_pages_say_the_broker_is_down_and_show_the_store_last_known(client: TestClient, console: Console) -> None:
    login(client, OPERATOR)
    fleet = client.get("/").text
    assert "Broker unreachable since" in fleet and "showing what was last known" in fleet
    for path in ("/rollouts", "/models", "/drift", "/audit"):
        assert client.get(path).status_code == 200, path
    assert "No model is registered" in client.get("/models").text
    assert client.get("/drift/nothing.png").status_code == 404

    def broken(*_a: object, **_k: object) -> list[object]:
        raise BackendError("database is gone")

    console.registry.store.list_rollouts = broken  # type: ignore[method-assign,assignment]
    page = client.get("/rollouts").text
    assert "registry store is unreachable (database is gone)" in page


def test_exposure_beyond_loopback_needs_tls(tmp_path: object) -> None:
    assert Bind.parse("127.0.0.1:8080").loopback and Bind.parse("[::1]:80").loopback
    assert not Bind.parse("0.0.0.0:8080").loopback
    with pytest.raises(ConsoleError, match="without TLS"):
        check_exposure(Bind.parse("0.0.0.0:8443"), None)
    with pytest.raises(ConsoleError, match="HOST:PORT"):
        Bind.parse("8080")


def test_the_models_page_shows_the_build_reports_kept_with_each_version(
    client: TestClient, console: Console, home: Home, bundles: dict[int, BuiltBundle], tmp_path: Path
) -> None:
    trust = TrustStore.load(KeyPaths(home.key_dir).trust)
    home.registry.add_bundle(bundles[1].path, trust)  # built without a report
    home.registry.add_bundle(with_report(bundles[2].path, tmp_path / "v2"), trust, parent=1)
    assert client.get("/models/tiny/2/report.png").status_code == 403  # not logged in
    login(client, VIEWER)
    page = client.get("/models").text
    assert "none kept" in page  # v1
    assert "v2: verdict: VERIFIED" in page and "AUROC (out of fold): 0.9712" in page
    assert "warning: only 41 defect examples" in page and 'src="/models/tiny/2/report.png"' in page
    r = client.get("/models/tiny/2/report.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == (tmp_path / "v2" / "report" / "report.png").read_bytes()
    assert "no-store" not in r.headers["cache-control"] and "default-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/models").headers["cache-control"] == "no-store"
    assert client.get("/models/tiny/1/report.png").status_code == 404
    assert client.get("/models/tiny/9/report.png").status_code == 404
    assert client.get("/models/other/2/report.png").status_code == 404
    assert client.get("/models/tiny/x/report.png").status_code == 404
    # a report file altered in the artifact store is refused, not served
    sha = home.registry.store.build_reports("tiny")[2]["png"]
    blob = home.path / "artifacts" / sha[:2] / sha
    blob.write_bytes(blob.read_bytes()[:-10])
    r = client.get("/models/tiny/2/report.png")
    assert r.status_code == 503 and "corrupt" in r.text


def test_hostile_and_replayed_requests(client: TestClient, console: Console) -> None:
    token = csrf_of(client.get("/login").text)
    big = {"csrf": token, "username": OPERATOR[0], "password": OPERATOR[1], "pad": "x" * 20_000}
    r = client.post("/login", data=big)  # an oversized form is not read at all
    assert r.status_code == 403 and "edgeline_session" not in r.headers.get("set-cookie", "")
    r = client.post(
        "/login", content=b"\xff\xfe%%%&&&=\x00", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 403
    csrf = login(client, OPERATOR)
    session = client.cookies.get("edgeline_session")
    assert session
    page = client.get("/rollouts/%3Cscript%3Ealert(1)%3C%5Cscript%3E").text
    assert "Unknown rollout" in page and "<script>alert" not in page
    r = client.post("/deploy", data={"csrf": csrf, "ref": "tiny@1", "target": "device:a", "canary": "1e999"})
    assert r.status_code == 303 and "must be numbers" in client.get("/rollouts").text
    r = client.post("/rollouts/r1/drop-tables", data={"csrf": csrf})
    assert r.status_code == 403  # not an action of any role
    client.post("/logout", data={"csrf": csrf})
    client.cookies.set("edgeline_session", session)  # the cookie replayed after logging out
    assert client.get("/").status_code == 303
    assert client.post("/rollouts/r1/abort", data={"csrf": csrf}).status_code == 403
    client.cookies.set("edgeline_session", "y" * 5000)
    assert client.get("/").status_code == 303
