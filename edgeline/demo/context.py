"""What the stages of one demo run share: settings, workspace, the running parts, and what each stage
found out (for the next stages and for the summary)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from converters.keys import SigningKey
from converters.pipeline import BuildResult
from edgeline.core.protocol.signing import TrustStore
from edgeline.core.protocol.telemetry import TelemetryWindow
from edgeline.demo.broker import AmqttBroker, MosquittoBroker
from edgeline.demo.cloud import DemoCloud
from edgeline.demo.devices import DeviceProcess
from edgeline.demo.errors import DemoError
from edgeline.demo.line_operator import StoryOperator
from edgeline.demo.newkind import V3Build, V3Result
from edgeline.demo.processes import CameraProcess
from edgeline.demo.retrain import Retrained
from edgeline.demo.settings import DemoSettings
from edgeline.demo.workspace import Workspace


@dataclass(frozen=True)
class Outcome:
    """A stage's result: passed or not, one line for people, and details for ``--json``."""

    ok: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class DemoContext:
    settings: DemoSettings
    ws: Workspace
    detail: Callable[[str], None]
    t0: float = field(default_factory=time.time)
    broker: MosquittoBroker | AmqttBroker | None = None
    cloud: DemoCloud | None = None
    camera: CameraProcess | None = None
    devices: dict[str, DeviceProcess] = field(default_factory=dict)
    signer: SigningKey | None = None
    trust: TrustStore | None = None
    v1: BuildResult | None = None
    v2: Retrained | None = None
    #: v3, the inspection model: its build (a child process started after v1), and its result
    v3_build: V3Build | None = None
    v3: V3Result | None = None
    #: the new defect kind's figures (stage 8), for the summary and the report
    new_kind: dict[str, Any] = field(default_factory=dict)
    rollouts: list[dict[str, Any]] = field(default_factory=list)
    #: moments of the story (seconds since start): lighting drifts, v2 canary, tampered update, ...
    marks: dict[str, float] = field(default_factory=dict)
    tampered: dict[str, Any] = field(default_factory=dict)
    fleet: list[dict[str, Any]] = field(default_factory=list)
    #: every telemetry window the cloud stored, read once the agents have stopped
    windows: list[TelemetryWindow] = field(default_factory=list)
    #: the simulated operator giving feedback on the lines (started at setup, stopped at teardown)
    operator: StoryOperator | None = None
    #: the cloud's field report (rows per model version and line), read with the windows
    field_report: dict[str, Any] = field(default_factory=dict)

    def mark(self, name: str) -> float:
        self.marks[name] = round(time.time() - self.t0, 2)
        return self.marks[name]

    def need_cloud(self) -> DemoCloud:
        if self.cloud is None:
            raise DemoError("the cloud side is not running")
        return self.cloud

    def need_camera(self) -> CameraProcess:
        if self.camera is None:
            raise DemoError("the camera simulator is not running")
        return self.camera

    def check_devices(self) -> None:
        for d in self.devices.values():
            d.check_alive()

    def sleep(self, seconds: float, what: str) -> None:
        """Wait while inspection runs, showing the frames each device has inspected."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.check_devices()
            counts = "  ".join(f"{d}: {p.inspected():,}" for d, p in self.devices.items())
            self.detail(f"{what} ({left:4.1f}s left) · inspected {counts}")
            time.sleep(min(0.5, left))
