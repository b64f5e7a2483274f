"""Apply the hot part of a configuration on the running agent, between two frames: sinks (the new
workers take records from the swap on; the replaced ones drain what they hold and close before the
new ones start writing, so a file written by both is never written by two at once and keeps its
order; the unchanged ones are kept), decision
thresholds (the served model re-decided) and telemetry windows (the aggregator's limits). The
inspection loop never waits and no frame is lost."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from edge_agent.errors import EdgelineError
from edge_agent.remote_config.errors import ConfigRefused
from edge_agent.remote_config.overlay import Plan
from edge_agent.sinks import SinkWorker, build_sinks
from edgeline.core.protocol.remote_config import ConfigReason
from firmware_configs.schema import DeviceConfig, SinksSection
from firmware_configs.telemetry_section import TelemetrySection

log = logging.getLogger(__name__)

SINK_NAMES = ("jsonl", "mqtt", "webhook", "command")


#: how long a replaced sink may take to write what it holds (a hung one is abandoned, its records counted)
CLOSE_TIMEOUT_S = 2.0


@dataclass
class HotResult:
    #: sinks the change started (their write errors fail the trial)
    started: frozenset[str] = frozenset()


def swap_sinks(agent: Any, old: SinksSection, new: SinksSection) -> HotResult:
    """Build workers for the sinks whose section changed, swap the agent's list in one go (the new
    workers queue from then on), close the replaced ones (they write what they hold), start the new."""
    by_name = {w.name: w for w in agent.sinks}
    built: list[SinkWorker] = []
    keep: list[SinkWorker] = []
    started: set[str] = set()
    try:
        for name in SINK_NAMES:
            before, after = getattr(old, name), getattr(new, name)
            current = by_name.get(name)
            if before == after:
                if current is not None:
                    keep.append(current)
                continue
            if after is not None and after.enabled:
                workers = build_sinks(SinksSection.model_validate({name: after}), agent.device_id)
                built += workers
                keep += workers
                started.add(name)
    except EdgelineError as exc:
        for w in built:
            w.close(0.1)
        raise ConfigRefused(ConfigReason.INVALID, f"a sink cannot be built: {exc}") from exc
    keep += [w for w in agent.sinks if w.name not in SINK_NAMES]  # sinks handed in by code, kept
    removed = [w for w in agent.sinks if not any(w is k for k in keep)]
    agent.replace_sinks(keep)
    for w in removed:  # a record published just before the swap is still offered to it
        w.close(CLOSE_TIMEOUT_S)
    for w in built:
        w.start()
    return HotResult(frozenset(started))


def set_telemetry_windows(agent: Any, section: TelemetrySection) -> bool:
    """The telemetry plugin's window length, frame count and k, from the next frame on."""
    for plugin in getattr(agent, "plugins", ()):
        aggregator = getattr(plugin, "aggregator", None)
        if getattr(plugin, "name", "") != "telemetry" or aggregator is None:
            continue
        aggregator.window_s = section.window_s
        aggregator.window_frames = section.window_frames
        min_frames = getattr(plugin, "min_frames", None)
        if min_frames is not None:
            min_frames.k = section.min_frames
        plugin.config = section
        return True
    return False


def apply_hot(agent: Any, old: DeviceConfig, new: DeviceConfig, plan: Plan) -> HotResult:
    """Apply ``plan.hot`` (``new``'s values) to ``agent``, which runs ``old``."""
    result = HotResult()
    if any(k.startswith("sinks") for k in plan.hot):
        result = swap_sinks(agent, old.sinks, new.sinks)
    if any(k.startswith("decision") for k in plan.hot):
        agent.set_decision(new.decision)
    if any(k.startswith("telemetry.") for k in plan.hot) and not set_telemetry_windows(agent, new.telemetry):
        log.info("telemetry windows changed, but this agent runs no telemetry plugin")
    agent.config = new
    return result
