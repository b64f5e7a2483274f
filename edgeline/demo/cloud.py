"""The cloud side of the demo, in this process: the registry (SQLite + artifact directory in the
workspace), one MQTT connection for the publisher, the fleet view and the rollout runner, and the
telemetry ingest service on its own connection, storing windows in the workspace.

It also keeps what the report needs about deliveries: every updater event each device published
(the rollout timeline), deduplicated by event id (the device outbox delivers at least once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cloud_registry import rollout as ro
from cloud_registry.errors import RegistryError
from cloud_registry.fleet import FleetWatcher
from cloud_registry.publisher import Publisher
from cloud_registry.registry import Registry, RegistryPaths
from cloud_registry.rollout_runner import RolloutRunner
from cloud_registry.store import ModelVersion
from cloud_registry.telemetry.ingest import Ingestor, IngestService
from cloud_registry.telemetry.store import TelemetryStore
from converters.keys import SigningKey
from edgeline.core.errors import EdgelineError
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.delivery import DeviceEvent, DeviceState
from edgeline.core.protocol.signing import TrustStore
from edgeline.core.protocol.topics import Topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TimelineEvent:
    device: str
    t: float  # seconds since the demo started
    event: str
    version: int | None
    reason: str
    sequence: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "t": round(self.t, 2),
            "event": self.event,
            "version": self.version,
            "reason": self.reason,
            "sequence": self.sequence,
        }


@dataclass
class EventLog:
    """Device events as they arrive, once each."""

    t0: float
    events: list[TimelineEvent] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def listener(self, kind: str, device_id: str, msg: Any) -> None:
        if kind != "event" or not isinstance(msg, DeviceEvent):
            return
        with self._lock:
            if msg.event_id in self._seen:
                return
            self._seen.add(msg.event_id)
            self.events.append(
                TimelineEvent(
                    device_id,
                    msg.ts - self.t0,
                    msg.kind.value,
                    msg.model.version if msg.model else None,
                    msg.reason,
                    msg.sequence,
                )
            )

    def snapshot(self) -> list[TimelineEvent]:
        with self._lock:
            return sorted(self.events, key=lambda e: e.t)

    def of_sequences(self, sequences: set[int], kind: str | None = None) -> list[TimelineEvent]:
        return [e for e in self.snapshot() if e.sequence in sequences and (kind is None or e.event == kind)]


class DemoCloud:
    def __init__(
        self,
        workdir: Path,
        *,
        port: int,
        protocol: str,
        fleet: str,
        signer: SigningKey,
        trust: TrustStore,
        t0: float,
    ) -> None:
        self.workdir = workdir
        self.topics = Topics(fleet=fleet)
        self.trust = trust
        self.t0 = t0
        paths = RegistryPaths(workdir / "registry")
        self.registry = Registry.open(paths.store_url, paths.artifacts_url)
        self.events = EventLog(t0)
        proto: Literal["5", "3.1.1"] = "5" if protocol == "5" else "3.1.1"
        self.link = MqttLink(
            LinkSettings(port=port, client_id="edgeline-demo-registry", clean_start=True, protocol=proto)
        )
        self.fleet = FleetWatcher(self.link, self.topics, book=self.registry.store)
        self.fleet.add_listener(self.events.listener)
        self.publisher = Publisher(self.link, self.topics, signer)
        self.runner = RolloutRunner(self.registry, self.publisher, self.fleet)
        self.telemetry = TelemetryStore(workdir / "telemetry" / "windows.db")
        self.ingest = IngestService(
            Ingestor(self.telemetry, self.topics),
            LinkSettings(port=port, client_id="edgeline-demo-ingest", clean_start=False, protocol=proto),
        )
        self._started: list[Callable[[], None]] = []

    def start(self) -> None:
        try:
            self.link.connect(10)
        except EdgelineError as exc:
            raise RegistryError(f"the registry cannot reach the demo broker: {exc}") from exc
        self._started.append(self.link.stop)
        self.ingest.start()
        self._started.append(self.ingest.stop)

    def stop(self) -> None:
        while self._started:
            stop = self._started.pop()
            try:
                stop()
            except Exception:
                log.exception("stopping a cloud connection failed")
        self.telemetry.close()
        self.registry.close()

    # -- registry ---------------------------------------------------------------------------------
    def register(self, bundle_dir: Path, note: str, stage: str = "production") -> ModelVersion:
        mv = self.registry.add_bundle(bundle_dir, self.trust, note=note)
        self.registry.promote(mv.name, mv.version, stage)
        return mv

    # -- fleet ----------------------------------------------------------------------------------
    def state(self, device_id: str) -> DeviceState | None:
        return self.fleet.view.state(device_id)

    def online(self, device_ids: list[str]) -> list[str]:
        now = time.time()
        return [d for d in device_ids if self.fleet.view.row(d, now).online]

    def running(self, device_id: str) -> tuple[int | None, str | None]:
        """(model version, sha256) a device says it serves."""
        st = self.state(device_id)
        if st is None or st.model is None:
            return None, None
        return st.model.version, st.model.sha256

    # -- rollouts -------------------------------------------------------------------------------
    def rollout(
        self,
        ref: str,
        devices: list[str],
        *,
        canary: int,
        timeout_s: float,
        on_update: Callable[[ro.Rollout], None] | None = None,
    ) -> ro.Rollout:
        """Create a rollout of ``ref`` to ``devices`` (in that order: the first ``canary`` go first)
        and drive it until it settles or ``timeout_s`` passes."""
        r = self.runner.create(ref, "device:" + ",".join(devices), canary=canary, waves="100%")
        return self.runner.run(r.plan.id, on_update=on_update, timeout_s=timeout_s)
