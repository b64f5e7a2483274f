"""The cloud link's counters (LinkStats) in the agent's status document and /metrics text, checked
by the Prometheus client's parser and promtool, on a real Mosquitto."""

from __future__ import annotations

from pathlib import Path

from edge_agent.assembly import device_identity
from edge_agent.cloud_link import CloudLink
from edge_agent.runtime import Agent
from edge_agent.status import prometheus_text
from edgeline.core.mqtt_link import wait_until
from edgeline.demo.broker import MosquittoBroker
from tests.agent.helpers import make_config
from tests.agent.test_metrics import families, promtool


class LinkHolder:
    """A plugin that holds the cloud link, as the updater and telemetry plugins do."""

    name = "link-holder"

    def __init__(self, cloud: CloudLink) -> None:
        self.cloud = cloud


def test_link_counters_in_the_status_document_and_metrics(
    tmp_path: Path, image_folder: Path, mosquitto: MosquittoBroker
) -> None:
    cloud_section = {"enabled": True, "brokers": [f"127.0.0.1:{mosquitto.port}"]}
    config = make_config(tmp_path, {"kind": "folder", "path": str(image_folder)}, cloud=cloud_section)
    link = CloudLink(config.cloud, device_identity(config))
    agent = Agent(config, plugins=[LinkHolder(link)])  # type: ignore[list-item]
    link.start()
    try:
        assert wait_until(lambda: link.link.connected, 10)
        doc = agent.counters()
        assert doc["link"]["connected"] is True and doc["link"]["connects"] == 1
        assert doc["link"]["address"] == f"127.0.0.1:{mosquitto.port}"
        text = prometheus_text(doc)
        fams = families(text)
        assert fams["edgeline_link_connected"].samples[0].value == 1
        assert fams["edgeline_link_connects"].samples[0].value == 1
        assert fams["edgeline_link_subscriptions_refused"].samples[0].value == 0
        info = fams["edgeline_link_info"].samples[0].labels
        assert info["protocol"] in ("5", "3.1.1") and info["address"] == f"127.0.0.1:{mosquitto.port}"
        checked = promtool(text)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        link.stop()
    assert prometheus_text(agent.counters()).count("edgeline_link_connected") == 3  # HELP, TYPE, sample: 0


def test_no_link_no_link_series(tmp_path: Path, image_folder: Path) -> None:
    agent = Agent(make_config(tmp_path, {"kind": "folder", "path": str(image_folder)}))
    assert agent.counters()["link"] is None
    assert "edgeline_link_" not in prometheus_text(agent.counters())
