"""Local drift alarm: the line learns about sustained drift from the device itself, connected or not.

Every finished window feeds two episode detectors per model (see :class:`~.drift.Sustained`): one for
the input statistics and the confidence histogram ("input"), one for the predicted-class mix
("class_mix"). When an episode starts, the alarm sends ONE ``drift_alarm`` event to the line through
the agent's verdict sinks (``AgentHandle.local_event``); when it ends, one ``drift_cleared``. Between
the two, nothing: a drifted line does not flood its PLC with an event per window. The detectors'
state survives restarts (the plugin stores it with the outbox), so a restart mid-episode does not
raise the alarm a second time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_agent.telemetry.drift import Sustained
from edgeline.core.protocol.telemetry import STAT_NAMES, TelemetryWindow

log = logging.getLogger(__name__)

EmitFn = Callable[[str, dict[str, object]], None]
CHANNELS: dict[str, tuple[str, ...]] = {"input": (*STAT_NAMES, "confidence"), "class_mix": ("class_mix",)}


@dataclass
class LocalDriftAlarm:
    emit: EmitFn
    need: int = 3
    of: int = 4
    clear: int = 3
    detectors: dict[str, Sustained] = field(default_factory=dict)
    raised: int = 0

    def _detector(self, model_sha: str, channel: str) -> Sustained:
        key = f"{model_sha}:{channel}"
        det = self.detectors.get(key)
        if det is None:
            det = self.detectors[key] = Sustained(need=self.need, of=self.of, clear=self.clear)
        return det

    def observe(self, window: TelemetryWindow) -> list[str]:
        """Feed one window; returns the events emitted ("drift_alarm" / "drift_cleared")."""
        emitted: list[str] = []
        for channel, keys in CHANNELS.items():
            present = {k: d for k, d in window.drift.items() if k in keys}
            if not present:
                continue
            drifted = {k: round(d.psi, 4) for k, d in present.items() if d.drifted}
            transition = self._detector(window.model.sha256, channel).update(bool(drifted))
            if transition is None:
                continue
            kind = "drift_alarm" if transition == "start" else "drift_cleared"
            payload: dict[str, object] = {
                "channel": channel,
                "model": window.model.name,
                "model_version": window.model.version,
                "window_end": window.end,
                "psi": {k: round(d.psi, 4) for k, d in present.items()},
                "drifted": sorted(drifted),
            }
            if transition == "start":
                self.raised += 1
                log.warning(
                    "sustained %s drift on %s v%d: %s", channel, window.model.name, window.model.version, drifted
                )
            try:
                self.emit(kind, payload)
            except Exception:
                log.exception("local drift event could not be delivered to the line")
            emitted.append(kind)
        return emitted

    def to_state(self) -> dict[str, Any]:
        return {key: det.state() for key, det in self.detectors.items()}

    def restore(self, state: Mapping[str, Any]) -> None:
        for key, st in state.items():
            det = Sustained(need=self.need, of=self.of, clear=self.clear)
            if isinstance(st, Mapping):
                det.restore(st)
            self.detectors[str(key)] = det
