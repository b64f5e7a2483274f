"""Fixtures of the fault campaigns: the delivery tests' cloud and bundles (reused, not duplicated),
bundles big enough to be cut in the middle of a download, the telemetry ingest and the event ledger
on the same real Mosquitto, and a campaign report.

Counts: every campaign runs a small count by default (CI) and its full count with ``--full``. When
``EDGELINE_FAULT_REPORT`` names a file, each campaign appends one JSON line with its figures there
(docs/reliability.md is written from a ``--full`` run's report)."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloud_registry.telemetry.ingest import Ingestor, IngestService
from cloud_registry.telemetry.store import TelemetryStore
from converters.keys import SigningKey
from edgeline.core.mqtt_link import LinkSettings
from edgeline.core.protocol.topics import Topics
from edgeline.demo.broker import MosquittoBroker
from tests.delivery.conftest import BuiltBundle, bundles, cloud, frames, padded_model, variant  # noqa: F401
from tests.faults.tools.ledger import EventLedger

PSEUDONYM_SECRET = "5eed" * 8  # hex, 16 bytes


@dataclass(frozen=True)
class Counts:
    full: bool
    power_cuts: int
    network_faults_s: float
    network_rollouts: int
    disk_rounds: int


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "full_only: a campaign variant run only with --full (deselected otherwise)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """At full count a campaign runs for minutes: lift the suite's per-test timeout for this folder.
    Without ``--full``, variants marked ``full_only`` are deselected (not skipped)."""
    here = Path(__file__).parent
    mine = [i for i in items if here in Path(str(i.fspath)).parents]
    if config.getoption("--full", default=False):
        for item in mine:
            item.add_marker(pytest.mark.timeout(7200))  # the power cuts at 1,000 SIGKILLs: about 40 min
        return
    dropped = [i for i in mine if i.get_closest_marker("full_only")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if i not in dropped]


@pytest.fixture(scope="session")
def counts(full_campaign: bool) -> Counts:
    if full_campaign:
        return Counts(True, power_cuts=60, network_faults_s=90.0, network_rollouts=3, disk_rounds=5)
    return Counts(False, power_cuts=6, network_faults_s=8.0, network_rollouts=1, disk_rounds=1)


@pytest.fixture(scope="session")
def chunky(
    bundles: dict[int, BuiltBundle],  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
    signing_key: SigningKey,
) -> dict[int, BuiltBundle]:
    """Versions 1-3 of model 'tiny' padded to ~120 KB and cut in 1 KiB chunks (~120 chunks each), so a
    power cut or a network fault can land in the middle of a download. Real signed bundles on disk."""
    from converters.bundle_writer import write_bundle

    root = tmp_path_factory.mktemp("chunky")
    out = {}
    for v, b in bundles.items():
        padded = variant(b, padded_model(b.data, 120_000, seed=10 + v), v, chunk_size=1024)
        path = write_bundle(root / f"v{v}", padded.data, padded.manifest, signing_key)
        out[v] = BuiltBundle(path, padded.manifest, padded.data)
    return out


@pytest.fixture(scope="session")
def pseudonym_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fleet") / "pseudonym.key"
    path.write_text(PSEUDONYM_SECRET)
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TelemetryStore]:
    s = TelemetryStore(tmp_path / "ingest" / "telemetry.db")
    yield s
    s.close()


@pytest.fixture
def ingest(mosquitto: MosquittoBroker, store: TelemetryStore) -> Iterator[IngestService]:
    """The telemetry ingest on its own persistent session, straight on the broker (no proxy)."""
    settings = LinkSettings(port=mosquitto.port, client_id="faults-ingest", clean_start=False, reconnect_max_s=1.0)
    svc = IngestService(Ingestor(store, Topics()), settings, shared=False)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def ledger(mosquitto: MosquittoBroker) -> Iterator[EventLedger]:
    led = EventLedger(mosquitto.port)
    led.start()
    try:
        yield led
    finally:
        led.stop()


@dataclass
class CampaignReport:
    """One campaign's figures; appended as a JSON line to ``$EDGELINE_FAULT_REPORT`` when set."""

    name: str
    full: bool
    figures: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def write(self) -> None:
        target = os.environ.get("EDGELINE_FAULT_REPORT")
        if not target:
            return
        doc = {
            "campaign": self.name,
            "full": self.full,
            "seconds": round(time.monotonic() - self.started, 1),
            "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
            **self.figures,
        }
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(doc, sort_keys=True) + "\n")


@pytest.fixture
def report(request: pytest.FixtureRequest, counts: Counts) -> Iterator[CampaignReport]:
    rep = CampaignReport(request.node.name, counts.full)
    yield rep
    rep.write()
