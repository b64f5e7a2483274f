"""``edgeline broker check`` against the real brokers: what each offers, as measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from edgeline.cli.main import cli
from edgeline.demo.broker import MosquittoBroker, free_port
from firmware_configs.writer import render_toml
from tests.brokers.servers import NatsCluster, RabbitNode

FAST = ["--timeout", "2", "--max-payload", "65536", "--json"]


def check(*args: str) -> tuple[int, list[dict[str, Any]]]:
    result = CliRunner().invoke(cli, ["broker", "check", *args, *FAST])
    return result.exit_code, json.loads(result.output) if result.output.strip().startswith("[") else []


def test_mosquitto_offers_everything(mosquitto: MosquittoBroker) -> None:
    code, (r,) = check(f"mqtt://127.0.0.1:{mosquitto.port}")
    assert code == 0 and r["usable"]
    assert r["versions"] == {"5": "accepted", "3.1.1": "accepted"}
    assert r["retained_exact"] and r["retained_wildcard"]
    assert r["shared_subscriptions"] == "split"
    assert r["qos_granted"] == {"0": 0, "1": 1, "2": 2}
    assert r["max_payload_ok"] == 65536 and r["max_payload_failed"] is None


def test_nats_refuses_5_and_grants_qos1_at_most(nats: NatsCluster) -> None:
    code, (r,) = check(f"127.0.0.1:{nats.addresses[0][1]}")
    assert code == 0 and r["usable"]
    assert r["versions"]["5"].startswith("refused") and r["versions"]["3.1.1"] == "accepted"
    assert r["qos_granted"]["2"] == 1 and r["retained_wildcard"] is True
    assert r["shared_subscriptions"] != "split"  # nats-server 2.9 has no shared subscriptions
    assert any("3.1.1" in n for n in r["notes"])


def test_rabbitmq_keeps_retained_messages_from_wildcards(rabbit: RabbitNode) -> None:
    code, (r,) = check(f"mqtt://127.0.0.1:{rabbit.mqtt_port}")
    assert code == 0 and r["usable"]
    assert r["versions"]["5"] == "no answer" and r["versions"]["3.1.1"] == "accepted"
    assert r["retained_exact"] is True and r["retained_wildcard"] is False
    assert any("exact topics" in n for n in r["notes"])


def test_the_brokers_of_a_device_config_are_checked(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    dead = free_port()
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        render_toml(
            {
                "device": {"id": "press-1"},
                "source": {"kind": "folder", "path": str(tmp_path)},
                "cloud": {"brokers": [f"127.0.0.1:{mosquitto.port}", f"127.0.0.1:{dead}"]},
            }
        ),
        "utf-8",
    )
    code, reports = check("--config", str(cfg))
    assert code == 1  # one of them is not there
    assert [r["address"] for r in reports] == [f"127.0.0.1:{mosquitto.port}", f"127.0.0.1:{dead}"]
    assert reports[0]["usable"] and not reports[1]["usable"]
    assert all(v.startswith("unreachable") for v in reports[1]["versions"].values())


def test_bad_urls_are_refused() -> None:
    for url in ("http://127.0.0.1:1883", "127.0.0.1:99999", "mqtt://", "mqtts://127.0.0.1:8883"):
        result = CliRunner().invoke(cli, ["broker", "check", url])
        assert result.exit_code == 2, (url, result.output)
