"""Rollouts that target stations, and the fleet view that lists them, through the real CLI on a real
broker (docs/stations.md). The stations here are in-process units (CloudLink + updater, as a
station's process runs them) so the test stays quick: ``station:DEV/ST`` reaches one station,
``device:DEV`` every station of the device, ``group:G`` the stations in that group; ``edgeline
fleet`` shows each under its device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloud_registry.station_targets import resolve_units
from tests.delivery.conftest import BuiltBundle, Cloud
from tests.delivery.test_cli import Edgeline


@pytest.fixture
def edgeline(cloud: Cloud, tmp_path: Path) -> Edgeline:
    return Edgeline(cloud, tmp_path / "home")


def test_deploy_to_a_station_a_device_and_a_group_and_the_fleet_lists_stations(
    edgeline: Edgeline, cloud: Cloud, bundles: dict[int, BuiltBundle], frames: list[Any]
) -> None:
    e = edgeline
    for v in (1, 2, 3):
        e("registry", "add", str(bundles[v].path), *e.common, *e.trust)
    a = cloud.device("cell~a", groups=("line-1",), frames=frames)
    b = cloud.device("cell~b", groups=("line-1", "press"), frames=frames)
    other = cloud.device("cell-2", groups=("line-1",), frames=frames)
    deploy = ("--waves", "all", "--timeout", "30", *e.common, *e.broker, *e.keys)

    done = e.json("deploy", "tiny@1", "--to", "station:cell/a", *deploy)
    assert done["devices"] == {"cell~a": "committed"}
    assert (a.version(), b.version(), other.version()) == (1, None, None)

    done = e.json("deploy", "tiny@2", "--to", "device:cell", *deploy)  # a device with stations: all of them
    assert done["devices"] == {"cell~a": "committed", "cell~b": "committed"}
    assert (a.version(), b.version(), other.version()) == (2, 2, None)

    done = e.json("deploy", "tiny@3", "--to", "group:press", *deploy)
    assert done["devices"] == {"cell~b": "committed"} and (a.version(), b.version()) == (2, 3)

    rows = e.json("fleet", *e.broker, "--wait", "1")
    assert [(r["device"], r["station"]) for r in rows] == [("cell", "a"), ("cell", "b"), ("cell-2", None)]
    assert {r["device_id"]: r["model"]["version"] for r in rows if r["model"]} == {"cell~a": 2, "cell~b": 3}
    only = e.json("fleet", *e.broker, "--wait", "1", "--device", "cell")
    assert [r["device_id"] for r in only] == ["cell~a", "cell~b"]
    text = e("fleet", *e.broker, "--wait", "1").output
    assert "station" in text and "2 devices with 2 stations: 3 units" in text

    bad = e("deploy", "tiny@3", "--to", "station:cell", *deploy, ok=False).output
    assert "bad station 'cell': use DEVICE/STATION" in bad
    bad = e("deploy", "tiny@3", "--to", "station:cell/a.b", *deploy, ok=False).output
    assert "contains '.'" in bad


def test_station_targets() -> None:
    known = ["cell~a", "cell~b", "cell-2", "solo"]

    def members(group: str) -> list[str]:
        return ["cell~b"] if group == "press" else []

    assert resolve_units("station:cell/a,cell~b", known, members) == ["cell~a", "cell~b"]
    assert resolve_units("cell/a", known, members) == ["cell~a"]
    assert resolve_units("device:cell,solo,cell~a", known, members) == ["cell~a", "cell~b", "solo"]
    assert resolve_units("device:new-one", known, members) == ["new-one"]  # not heard from yet: as before
    assert resolve_units("group:press", known, members) == ["cell~b"]
    assert resolve_units("group:none", known, members) == []
    for bad, why in [
        ("cell", "use group:NAME"),
        ("station:", "use group:NAME"),
        ("station:cell/", "use DEVICE/STATION"),
        ("device:a.b", "contains '.'"),
        ("station:x/" + "y" * 70, "at most 64"),
    ]:
        with pytest.raises(ValueError, match=why):
            resolve_units(bad, known, members)


def test_a_remote_config_can_target_one_station() -> None:
    from cloud_registry.errors import RegistryError
    from cloud_registry.remote_config import ConfigTarget
    from edgeline.core.protocol.topics import Topics

    for text in ("station:cell/a", "device:cell~a", "cell~a"):
        target = ConfigTarget.parse(text)
        assert str(target) == "device:cell~a"
        assert target.topic(Topics()) == "edgeline/default/devices/cell~a/config"
        assert target.manifest_target().devices == ("cell~a",)
    for bad in ("station:cell", "station:cell/a.b", "group:a~b", "device:a~b~c"):
        with pytest.raises(RegistryError):
            ConfigTarget.parse(bad)
