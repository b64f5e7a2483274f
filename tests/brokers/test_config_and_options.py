"""Broker addresses and topic levels as the user writes them: the device config's [cloud] section and
the CLI's shared --broker option. Pure: no broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeline.cli.main import cli
from edgeline.core.errors import ProtocolError
from edgeline.core.protocol.topics import Topics, check_segment
from edgeline.demo.broker import free_port
from firmware_configs.errors import ConfigError
from firmware_configs.loader import parse_toml

BASE = '[device]\nid = "press-1"\n[source]\nkind = "folder"\npath = "/tmp"\n'


@pytest.mark.parametrize(
    ("text", "key", "needle"),
    [
        ('[device]\nid = "cam.1"\n[source]\nkind = "folder"\npath = "/tmp"\n', "device.id", "contains '.'"),
        (BASE + '[cloud]\nfleet = "plant/1"\n', "cloud.fleet", "contains '/'"),
        (BASE + '[cloud]\ntopic_root = "edge+line"\n', "cloud.topic_root", "contains '+'"),
        (BASE.replace('"press-1"', '"' + "p" * 65 + '"'), "device.id", "at most 64"),
        (BASE.replace('"press-1"', '"press-1"\ngroups = ["hall#2"]'), "device.groups", "'#'"),
        (BASE.replace('"press-1"', '"prëss"'), "device.id", "'ë'"),
        (BASE + '[cloud]\nbrokers = ["n1:1883", "n2:0"]\n', "cloud.brokers", "1-65535"),
        (BASE + '[cloud]\nbrokers = ["n1:1883", "n1"]\n', "cloud.brokers", "listed twice"),
        (BASE + '[cloud]\nport = 1884\nbrokers = ["n1:1883"]\n', "cloud", "not both"),
        (BASE + '[cloud]\nprotocol = "4"\n', "cloud.protocol", "auto"),
    ],
)
def test_bad_cloud_and_topic_settings_name_the_key_and_the_character(text: str, key: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_toml(text)
    line = next((ln for ln in str(err.value).splitlines() if ln.strip().startswith(key)), "")
    assert needle in line, str(err.value)


def test_a_broker_list_and_the_old_host_port_both_work() -> None:
    cfg = parse_toml(BASE + '[cloud]\nbrokers = ["n1:1883", "[::1]:1884", "n3"]\n')
    assert cfg.cloud.addresses() == [("n1", 1883), ("::1", 1884), ("n3", 1883)]
    old = parse_toml(BASE + '[cloud]\nhost = "mqtt.plant"\nport = 8883\n')
    assert old.cloud.addresses() == [("mqtt.plant", 8883)]
    assert parse_toml(BASE).cloud.protocol == "auto"


def test_topic_levels_refuse_what_some_broker_refuses() -> None:
    t = Topics()
    assert t.device_online("press_1-a").endswith("/devices/press_1-a/online")
    for bad in ("a.b", "", "a b", "a/b", "+", "#", "$SYS", "x" * 65, "ü"):
        with pytest.raises(ProtocolError):
            check_segment(bad, "device id")
    with pytest.raises(ProtocolError) as err:
        Topics(fleet="plant.1")
    assert "fleet name" in str(err.value) and "'.'" in str(err.value)


def test_the_cli_takes_a_repeated_broker_option(tmp_path: Path) -> None:
    a, b = free_port(), free_port()
    args = ["fleet", "--home", str(tmp_path), "--broker", f"127.0.0.1:{a}", "--broker", f"127.0.0.1:{b}"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1
    assert f"127.0.0.1:{a}" in r.output and f"127.0.0.1:{b}" in r.output  # both were tried
    bad = CliRunner().invoke(cli, ["fleet", "--broker", "127.0.0.1:99999"])
    assert bad.exit_code == 2 and "--broker" in bad.output
