"""The narrow seam between the inspection loop and everything else on the device.

The loop (``edge_agent.runtime``) knows nothing about MQTT, updates or telemetry. Those are plugins:
the updater (model delivery, slots, trial), telemetry (metrics windows, drift, outbox) and anything a
site adds. A plugin sees each frame's result *after* the verdict went to the line, and may swap the
serving model between two frames through :class:`AgentHandle`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edge_agent.verdict import Verdict

if TYPE_CHECKING:
    from edge_agent.model import LoadedModel


@dataclass(frozen=True, slots=True)
class FrameResult:
    """One inspected frame, as plugins see it. Stays on the device: plugins that send anything off the
    device send aggregates only (see docs/privacy.md)."""

    verdict: Verdict
    probabilities: np.ndarray
    #: scalar input statistics of the prepared image (brightness, contrast, ...); None when not sampled
    input_stats: dict[str, float] | None
    #: model that produced it (name, version, sha256), so a trial can tell old from new
    model_sha256: str
    #: the anomaly score as a calibrated logit ``(score - center) / scale`` (models with a good-part
    #: part), for the anomaly-score histogram of telemetry windows; None otherwise
    anomaly_logit: float | None = None


class AgentHandle(Protocol):
    """What a plugin may do to the agent."""

    @property
    def device_id(self) -> str: ...

    @property
    def current_model(self) -> LoadedModel | None: ...

    def activate(self, model: LoadedModel) -> None:
        """Serve ``model`` from the next frame on. The swap is a single reference assignment made
        between two frames: no frame is dropped and none is served by a half-loaded model."""

    def deactivate(self) -> None:
        """Stop serving any model from the next frame on (a first install that failed its trial:
        there is no previous model to go back to, and the suspect one must not keep serving)."""

    def local_event(self, kind: str, payload: dict[str, object]) -> None:
        """Send an event to the line through the verdict sinks (e.g. a local drift alarm)."""

    def counters(self) -> dict[str, object]:
        """A snapshot of the agent's counters (frames, drops, verdicts per class, latency, ...)."""


class AgentPlugin(Protocol):
    name: str

    def start(self, agent: AgentHandle) -> None:
        """Called once before the first frame. May activate a model (e.g. the committed slot)."""

    def on_result(self, result: FrameResult) -> None:
        """Called on the inference thread after every frame. Must be quick (no I/O waits)."""

    def stop(self) -> None:
        """Called once at shutdown; flush and close."""
