"""The [trigger] and [line.*] sections: the shipped triggered-station profile, and the refusals that
keep a plant's interfaces closed unless said otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from firmware_configs.errors import ConfigError
from firmware_configs.loader import load_config, parse_config, profiles_dir

BASE: dict[str, Any] = {"device": {"id": "d"}, "source": {"kind": "usb", "index": 0}}


def _cfg(**sections: Any) -> Any:
    return parse_config({**BASE, **sections}, "test")


def test_the_triggered_station_profile() -> None:
    c = load_config(profiles_dir() / "triggered-station.toml")
    assert c.source.mode == "trigger" and c.trigger.budget_ms == 50
    assert c.line.modbus is not None and c.line.modbus.allow_remote
    assert c.line.opcua is not None and c.line.opcua.policy == "Basic256Sha256" and not c.line.opcua.allow_anonymous
    assert c.line.any_enabled


def test_defaults_are_free_run_without_interfaces() -> None:
    c = _cfg()
    assert c.source.mode == "free" and not c.line.any_enabled


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ({"modbus": {"host": "0.0.0.0"}}, "Modbus has no authentication"),
        ({"opcua": {"host": "0.0.0.0", "allow_anonymous": True}}, "loopback"),
        ({"opcua": {"host": "10.0.0.5", "users_file": "/u", "allow_unencrypted": True}}, "loopback"),
        ({"opcua": {"host": "10.0.0.5"}}, "users_file"),
        ({"opcua": {"users_file": "/u", "certificate": "/c.pem"}}, "go together"),
        ({"opcua": {}}, "no way in"),
        ({"opcua": {"users_file": "/u", "policy": "Basic128Rsa15"}}, "policy"),
        ({"tcp": {"prot": 1}}, "unknown key"),
    ],
)
def test_bad_line_sections_are_refused_with_a_clear_message(line: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _cfg(line=line)


def test_bad_trigger_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="window_ms"):
        _cfg(trigger={"window_ms": 0})
    with pytest.raises(ConfigError, match="mode"):
        _cfg(source={"kind": "usb", "index": 0, "mode": "burst"})
