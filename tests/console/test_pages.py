"""The pages as pure functions: the fleet page's lines summary and group filter, and escaping of
whatever the devices and the store say (a device's state is input from the network)."""

from __future__ import annotations

import time

from cloud_registry.fleet import FleetRow
from edgeline.console import pages, widgets
from edgeline.core.protocol.delivery import DeviceState
from edgeline.core.protocol.model_ref import ModelRef

HOSTILE = '<script>alert("x")</script>'


def row(device: str, group: str, status: str = "online", version: int | None = 1, hw: str = "x86-ipc") -> FleetRow:
    model = ModelRef(name="tiny", version=version, sha256="a" * 64) if version else None
    st = DeviceState(
        device_id=device,
        online=status != "offline",
        ts=time.time(),
        heartbeat_s=5,
        groups=(group,),
        hardware_class=hw,
        agent_version="0.1.0",
        model=model,
        last_error=HOSTILE,
    )
    return FleetRow(device, status, time.time(), st, None)


def test_the_fleet_page_summarises_each_line_and_filters_by_group() -> None:
    rows = [
        row("a-1", "line-a"),
        row("a-2", "line-a", "stale", 2),
        row("b-1", "line-b", "offline", None, "x86-ipc-station"),
    ]
    html = pages.fleet(rows)
    assert '3 devices <span class="badge b-online">1 online</span>' in html
    summary = widgets.fleet_summary(rows)
    assert '<a href="/?group=line-a">line-a</a></td><td>2</td><td>1</td><td>1</td><td>0</td>' in summary
    assert "tiny v1 &times;1, tiny v2 &times;1" in summary and "no model &times;1" in summary
    assert html.count('<tr id="dev-') == 3 and "x86-ipc-station" in html
    only_a = pages.fleet(rows, "line-a")
    assert only_a.count('<tr id="dev-') == 2 and 'id="dev-b-1"' not in only_a
    assert 'data-group="line-a"' in only_a and '<a href="/">all 3 devices</a>' in only_a
    assert 'data-groups="line-a"' in widgets.fleet_row(rows[0])  # the script keeps other lines' rows out
    assert 'class="here"' in widgets.fleet_summary(rows, "line-a")


def test_what_devices_say_is_escaped() -> None:
    evil = row(HOSTILE, HOSTILE, hw=HOSTILE)
    html = pages.fleet([evil]) + widgets.fleet_summary([evil])
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert widgets.dom_id("dev", HOSTILE).replace("-", "").replace("_", "").isalnum()
