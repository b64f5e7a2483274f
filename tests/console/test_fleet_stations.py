"""The fleet page groups each device's stations under it (``device`` and ``station`` columns, as
``edgeline fleet`` does): the pure page, the console on a real Mosquitto with units announcing
themselves (the page and the live patches), and the page's script in headless Chromium putting a
station that appears live under its device and keeping other devices out of a device's page (its
screenshot: docs/console/fleet-stations.png)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from cloud_registry.fleet import FleetRow
from edgeline.console import pages, widgets
from edgeline.console.app import Pump, create_app
from edgeline.console.server import Bind, ConsoleServer
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.delivery import DeviceState
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker
from tests.console.conftest import OPERATOR, Home, make_console
from tests.console.test_browser import browser, log_in, shot, wait_js
from tests.console.test_pages import HOSTILE, row
from tests.delivery.conftest import wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*")
__all__ = ["browser"]  # the Chromium fixture of the console's browser test


def _ids(html: str) -> list[str]:
    return re.findall(r'<tr id="(dev-[^"]+)"', html)


def test_the_fleet_page_lists_each_station_under_its_device() -> None:
    rows = [row("cell-1", "line-a"), row("press~a", "line-a"), row("press~b", "line-b", "stale", 2)]
    html = pages.fleet(rows)
    head = re.findall(r"<th>([^<]*)</th>", html.split('id="fleet"')[1])
    assert head[:3] == ["device", "station", "hardware"]
    assert _ids(html) == ["dev-cell-1", "dev-press_7e_a", "dev-press_7e_b"]
    a = widgets.fleet_row(rows[1])
    assert 'data-device="press" class="station" data-station="a"' in a
    assert '<td class="device"><a href="/?device=press">press</a></td><td class="station">a</td>' in a
    plain = widgets.fleet_row(rows[0])
    assert 'data-device="cell-1">' in plain and "data-station" not in plain  # a plain device's row
    assert '<td class="station">-</td>' in plain
    assert "2 devices with 2 stations: 3 units" in widgets.fleet_summary(rows)
    assert "<th>group</th><th>units</th>" in widgets.fleet_summary(rows)
    plain_fleet = widgets.fleet_summary([row("x", "g"), row("y", "g"), row("z", "g")])  # no stations
    assert "3 devices" in plain_fleet and "<th>group</th><th>devices</th>" in plain_fleet

    press = pages.fleet(rows, device="press")
    assert _ids(press) == ["dev-press_7e_a", "dev-press_7e_b"] and "<h1>Fleet: device press</h1>" in press
    assert 'data-device="press">' in press.split('id="fleet-body"')[1][:40]  # the script keeps other devices out
    assert '<a href="/">all 2 devices with 2 stations: 3 units</a>' in press
    both = pages.fleet(rows, "line-b", "press")
    assert _ids(both) == ["dev-press_7e_b"] and "Fleet: line-b: device press" in both
    assert "No device has announced" in pages.fleet(rows, device="ghost")


def test_hostile_station_and_device_names_are_escaped() -> None:
    evil = FleetRow(f"{HOSTILE}~{HOSTILE}", "online", time.time(), row("x", "g").state, None)
    html = pages.fleet([evil], device=HOSTILE) + widgets.fleet_row(evil)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="/?device=%3Cscript%3Ealert%28%22x%22%29%3C/script%3E"' in html


def _announce(link: MqttLink, unit: str, group: str = "line-a") -> None:
    state = DeviceState(device_id=unit, online=True, ts=time.time(), heartbeat_s=3600, groups=(group,))
    link.publish_sync(Topics().device_state(unit), state.to_bytes(), 1, True, 5.0)


@pytest.fixture
def unit_link(mosquitto: MosquittoBroker) -> Iterator[MqttLink]:
    """One link that publishes the units' states (as their agents would, retained)."""
    link = MqttLink(LinkSettings(port=mosquitto.port, client_id="units-test", clean_start=True))
    link.start()
    assert link.wait_connected(10)
    try:
        yield link
    finally:
        link.stop()


def test_the_console_groups_announced_stations_and_patches_them_live(
    home: Home, mosquitto: MosquittoBroker, unit_link: MqttLink
) -> None:
    from tests.console.test_app import login

    console = make_console(home, mosquitto.port, secure_cookies=False)
    try:
        with TestClient(create_app(console), follow_redirects=False) as client:
            login(client, OPERATOR)
            for unit in ("zeta", "press~b", "cell-1", "press~a"):
                _announce(unit_link, unit)
            assert wait_for(lambda: len(console.live.rows()) == 4, 10)
            fleet = client.get("/").text
            assert _ids(fleet) == ["dev-cell-1", "dev-press_7e_a", "dev-press_7e_b", "dev-zeta"]
            assert "3 devices with 2 stations: 4 units" in fleet
            only = client.get("/?device=press").text
            assert _ids(only) == ["dev-press_7e_a", "dev-press_7e_b"]
            assert _ids(client.get("/?device=press&group=line-b").text) == []

            patches = Pump(console).fleet_patches(["press~a"], time.time())
            assert patches[0].id == "dev-press_7e_a" and patches[0].into == "fleet-body"
            assert 'data-device="press" class="station" data-station="a"' in patches[0].html
            assert patches[-1].id == "fleet-summary" and "3 devices with 2 stations: 4 units" in patches[-1].html
    finally:
        console.close()


def test_a_station_that_appears_on_the_open_page_goes_under_its_device(
    home: Home, mosquitto: MosquittoBroker, unit_link: MqttLink, browser: Any
) -> None:
    for unit in ("cell-1", "press~b", "zeta"):
        _announce(unit_link, unit)
    console = make_console(home, mosquitto.port, failures=3)
    server = ConsoleServer(console, Bind("127.0.0.1", 0)).start()
    base = server.url
    try:
        ctx = browser.new_context(viewport={"width": 1400, "height": 700})
        page = ctx.new_page()
        page.set_default_timeout(20_000)
        log_in(page, base, OPERATOR)
        page.wait_for_url(f"{base}/")
        page.goto(f"{base}/")
        page.wait_for_selector("#dev-zeta")
        page.evaluate("window.loaded = 'fleet'")
        order = "Array.from(document.querySelectorAll('#fleet-body tr')).map(r => r.id).join(' ')"

        _announce(unit_link, "press~c")  # after its sibling
        _announce(unit_link, "press~a")  # before it
        _announce(unit_link, "aaa")  # a new device: in its place too
        _announce(unit_link, "press")  # the device itself, above its stations
        wait_js(page, "document.querySelectorAll('#fleet-body tr').length === 7")
        shown = "dev-aaa dev-cell-1 dev-press dev-press_7e_a dev-press_7e_b dev-press_7e_c dev-zeta"
        assert page.evaluate(order) == shown
        assert page.evaluate("window.loaded") == "fleet"  # patched, not reloaded
        assert "4 devices with 3 stations: 7 units" in page.inner_text("#fleet-summary")
        shot(page, "fleet-stations")  # docs/console.md

        page.goto(f"{base}/?device=press")
        page.wait_for_selector("#dev-press_7e_c")
        _announce(unit_link, "other")  # another device: kept out of this device's page
        _announce(unit_link, "press~d")
        page.wait_for_selector("#dev-press_7e_d")
        wait_js(page, "window.edgelinePatches >= 4")
        assert page.evaluate(order) == "dev-press dev-press_7e_a dev-press_7e_b dev-press_7e_c dev-press_7e_d"
        assert page.locator("#dev-other").count() == 0
        assert page.inner_text("#dev-press_7e_d td.station") == "d"
        ctx.close()  # its event stream ends before the server does
    finally:
        server.stop()
        console.close()
