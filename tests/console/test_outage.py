"""The console while what it reads from goes away: the registry store (a real PostgreSQL behind a
TCP proxy that cuts and refuses connections) and the broker (a real Mosquitto, stopped). Each page
keeps showing what it last knew and says so; logged-in operators stay logged in; actions and new
logins are refused with the reason; when the store is back, the pages are fresh again."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from cloud_registry.registry import Registry
from cloud_registry.telemetry.alerts import AlertEngine
from cloud_registry.telemetry.store import open_telemetry_store
from converters.keys import KeyPaths
from edgeline.console.accounts import add_user
from edgeline.console.app import create_app
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.delivery import DeviceState
from edgeline.core.protocol.signing import TrustStore
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker
from tests.console.conftest import OPERATOR, VIEWER, Home, make_console
from tests.console.test_browser import field_window
from tests.delivery.conftest import BuiltBundle, wait_for
from tests.delivery.test_registry_store import PG_URL, _pg_available
from tests.faults.tools.proxy import FaultProxy

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")
STALE = "registry store is unreachable"


@pytest.fixture
def pg_home(tmp_path: Path, key_dir: Path) -> Iterator[tuple[Home, FaultProxy]]:
    """A registry on PostgreSQL, reached through a proxy the test can cut."""
    if not _pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL}")
    proxy = FaultProxy(5432)
    schema = f"edgeline_outage_{uuid.uuid4().hex[:10]}"
    url = PG_URL.replace(":5432/", f":{proxy.port}/") + f"?schema={schema}"
    reg = Registry.open(url, f"file://{tmp_path / 'artifacts'}")
    add_user(reg.store, *OPERATOR, "operator")
    add_user(reg.store, *VIEWER, "viewer")
    try:
        yield Home(tmp_path, reg, key_dir), proxy
    finally:
        proxy.heal()
        wait_for(lambda: _reachable(reg), 10)
        reg.store.drop_schema()  # type: ignore[attr-defined]
        reg.close()
        proxy.close()


def _reachable(reg: Registry) -> bool:
    try:
        reg.store.list_models()
        return True
    except Exception:
        return False


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def login(client: TestClient, user: tuple[str, str]) -> tuple[int, str]:
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"csrf": token, "username": user[0], "password": user[1]})
    return r.status_code, r.text


def test_the_registry_store_goes_away_and_comes_back(
    pg_home: tuple[Home, FaultProxy], bundles: dict[int, BuiltBundle]
) -> None:
    home, proxy = pg_home
    trust = TrustStore.load(KeyPaths(home.key_dir).trust)
    home.registry.add_bundle(bundles[1].path, trust, note="first build")
    home.registry.promote("tiny", 1, "production")
    console = make_console(home, None, secure_cookies=False)
    pages = ("/", "/rollouts", "/models", "/drift", "/audit")
    try:
        with TestClient(create_app(console), follow_redirects=False) as client:
            assert login(client, OPERATOR)[0] == 303
            csrf = csrf_of(client.get("/").text)
            for path in pages:  # what the console knows before the outage
                r = client.get(path)
                assert r.status_code == 200 and STALE not in r.text, path
            assert "first build" in client.get("/models").text

            proxy.cut()
            proxy.refuse(True)  # the database is unreachable now (every connection reset or refused)
            for path in pages:
                r = client.get(path)
                assert r.status_code == 200, (path, r.text[:300])
            models = client.get("/models").text
            assert STALE in models and "first build" in models and "production &rarr; v1" in models
            assert STALE in client.get("/rollouts").text
            audit = client.get("/audit").text
            assert STALE in audit and "login" in audit and OPERATOR[0] in audit  # the lines it had read

            # actions and new logins are refused with the reason; the open session stays
            r = client.post("/deploy", data={"csrf": csrf, "ref": "tiny@1", "target": "device:a"})
            assert r.status_code == 303
            assert "deploy refused" in client.get("/rollouts").text
            with TestClient(create_app(console), follow_redirects=False) as other:
                status, text = login(other, VIEWER)
                assert status == 503 and "registry store is unreachable" in text
                assert "Sessions already open keep working" in text
            assert client.get("/models").status_code == 200

            proxy.heal()
            assert wait_for(lambda: STALE not in client.get("/models").text, 10)
            for path in pages:
                assert STALE not in client.get(path).text, path
            assert login(TestClient(create_app(console), follow_redirects=False), VIEWER)[0] == 303
    finally:
        console.close()


def test_the_broker_goes_away(home: Home, mosquitto: MosquittoBroker) -> None:
    console = make_console(home, mosquitto.port, secure_cookies=False)
    device = MqttLink(LinkSettings(port=mosquitto.port, client_id="cell-7-test", clean_start=True))
    try:
        with TestClient(create_app(console), follow_redirects=False) as client:
            assert login(client, OPERATOR)[0] == 303
            csrf = csrf_of(client.get("/").text)
            device.start()
            assert device.wait_connected(10)
            state = DeviceState(device_id="cell-7", online=True, ts=time.time(), heartbeat_s=3600, groups=("line-a",))
            device.publish_sync(Topics().device_state("cell-7"), state.to_bytes(), 1, True, 5.0)
            assert wait_for(lambda: any(r.device_id == "cell-7" for r in console.live.rows()), 10)
            fleet = client.get("/").text
            assert 'id="dev-cell-7" data-status="online"' in fleet and "Broker connected" in fleet

            mosquitto.stop()
            assert wait_for(lambda: not console.live.link_state().connected, 10)
            fleet = client.get("/").text
            assert 'id="dev-cell-7"' in fleet and "line-a" in fleet  # what it last knew
            assert "Broker unreachable since" in fleet and "showing what was last known" in fleet
            r = client.post("/deploy", data={"csrf": csrf, "ref": "tiny@1", "target": "device:cell-7"})
            assert r.status_code == 303
            assert "the fleet broker is unreachable" in client.get("/rollouts").text
    finally:
        device.stop()
        console.close()
        console.live.link.stop()


def test_drift_and_alerts_from_a_postgresql_telemetry_store(home: Home) -> None:
    """``--db postgresql://...`` as for ingest and drift: the drift page, its plot and the alerts."""
    if not _pg_available():
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL}")
    url = f"{PG_URL}?schema=edgeline_console_tm_{uuid.uuid4().hex[:10]}"
    store = open_telemetry_store(url)
    try:
        engine = AlertEngine(store)
        for i in range(8):
            for device, group in (("cell-1", "line-a"), ("cell-2", "line-b")):
                w = field_window(device, group, i, dark=group == "line-b" and i >= 3)
                store.add(w)
                engine.on_window(w)
        console = make_console(home, None, secure_cookies=False, telemetry=url)
        with TestClient(create_app(console), follow_redirects=False) as client:
            assert login(client, VIEWER)[0] == 303
            page = client.get("/drift?model=tiny").text
            assert "line-b" in page and "<td>5/8</td>" in page and 'src="/drift/tiny.png"' in page
            assert 'data-state="firing"' in page and "input drift on" in page
            r = client.get("/drift/tiny.png")
            assert r.status_code == 200 and r.content.startswith(b"\x89PNG")
        console.close()
    finally:
        store.drop_schema()  # type: ignore[attr-defined]
        store.close()
