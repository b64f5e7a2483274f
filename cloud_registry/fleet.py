"""The fleet view: who is out there, online or not, running what, and what went wrong last.

Built from the retained ``state`` messages (birth, heartbeat, and the Last Will that marks a device
offline) and the ``events`` stream. A device is *online* when its last state said so AND it was
heard from within three heartbeats: a device behind a half-open connection goes stale even before
the broker notices and fires its Will.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_agent.errors import ProtocolError
from edgeline.core.mqtt_link import MqttLink
from edgeline.core.protocol.delivery import DeviceEvent, DeviceState, parse_event, parse_state
from edgeline.core.protocol.topics import Topics

log = logging.getLogger(__name__)

MISSED_HEARTBEATS = 3


@dataclass(frozen=True)
class FleetRow:
    device_id: str
    status: str  # online | offline | stale
    last_seen: float
    state: DeviceState | None
    last_event: DeviceEvent | None

    @property
    def online(self) -> bool:
        return self.status == "online"

    def to_dict(self) -> dict[str, Any]:
        s = self.state
        ev = self.last_event
        return {
            "device_id": self.device_id,
            "status": self.status,
            "last_seen": self.last_seen,
            "hardware_class": s.hardware_class if s else "",
            "groups": list(s.groups) if s else [],
            "agent_version": s.agent_version if s else "",
            "model": s.model.model_dump() if s and s.model else None,
            "slot": s.slot if s else None,
            "updater": s.updater.value if s else None,
            "health": s.health if s else "unknown",
            "last_event": ev.model_dump(mode="json", by_alias=True)
            if ev
            else (s.last_event.model_dump(mode="json") if s and s.last_event else None),
            "last_error": s.last_error if s else "",
        }


class FleetView:
    """Pure bookkeeping; thread-safe. ``now`` is passed in (tests use a fake clock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, tuple[DeviceState, float]] = {}
        self._events: dict[str, DeviceEvent] = {}

    def apply_state(self, device_id: str, state: DeviceState, *, received_at: float, retained: bool) -> None:
        if state.device_id != device_id:
            raise ProtocolError(f"state for {state.device_id!r} published on the topic of {device_id!r}")
        # a retained message may be old: trust the device's own timestamp for it, not our clock
        seen = min(state.ts, received_at) if retained else received_at
        with self._lock:
            prev = self._states.get(device_id)
            if prev is not None and state.model is None and not state.online and prev[0].model is not None:
                state = state.model_copy(update={"model": prev[0].model, "slot": prev[0].slot})
            self._states[device_id] = (state, seen)

    def apply_event(self, device_id: str, event: DeviceEvent) -> None:
        if event.device_id != device_id:
            raise ProtocolError(f"event for {event.device_id!r} published on the topic of {device_id!r}")
        with self._lock:
            self._events[device_id] = event

    def row(self, device_id: str, now: float) -> FleetRow:
        with self._lock:
            st = self._states.get(device_id)
            ev = self._events.get(device_id)
        if st is None:
            return FleetRow(device_id, "offline", 0.0, None, ev)
        state, seen = st
        if not state.online:
            status = "offline"
        elif now - seen > MISSED_HEARTBEATS * state.heartbeat_s:
            status = "stale"
        else:
            status = "online"
        return FleetRow(device_id, status, seen, state, ev)

    def rows(self, now: float) -> list[FleetRow]:
        with self._lock:
            ids = sorted(set(self._states) | set(self._events))
        return [self.row(d, now) for d in ids]

    def state(self, device_id: str) -> DeviceState | None:
        with self._lock:
            st = self._states.get(device_id)
        return st[0] if st else None

    def members(self, group: str) -> list[str]:
        with self._lock:
            return sorted(d for d, (s, _) in self._states.items() if group in s.groups)

    def resolve_target(self, target: str) -> list[str]:
        """``device:ID[,ID...]`` or ``group:NAME`` (devices that announced the group in their birth)."""
        kind, _, value = target.partition(":")
        if kind == "device" and value:
            return [v for v in value.split(",") if v]
        if kind == "group" and value:
            return self.members(value)
        raise ValueError(f"bad target {target!r}: use device:ID or group:NAME")


Listener = Callable[[str, str, Any], None]  # (kind "state"|"event", device_id, parsed message)


class FleetWatcher:
    """Subscribes to every device's state and events on ``link`` and keeps a :class:`FleetView`.
    Other parts (the rollout runner, the registry store) listen through :meth:`add_listener`."""

    def __init__(self, link: MqttLink, topics: Topics, clock: Callable[[], float] = time.time) -> None:
        self.link = link
        self.topics = topics
        self.clock = clock
        self.view = FleetView()
        self.received = 0
        self.malformed = 0
        self._listeners: list[Listener] = []
        link.subscribe(topics.all_device_states(), self._on_state, 1)
        link.subscribe(topics.all_device_events(), self._on_event, 1)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _notify(self, kind: str, device_id: str, msg: Any) -> None:
        for listener in list(self._listeners):
            try:
                listener(kind, device_id, msg)
            except Exception:
                log.exception("fleet listener failed")

    def _on_state(self, topic: str, payload: bytes, retained: bool) -> None:
        if not payload:
            return
        try:
            device_id = self.topics.device_id_from(topic)
            state = parse_state(payload)
            self.view.apply_state(device_id, state, received_at=self.clock(), retained=retained)
        except ProtocolError as exc:
            self.malformed += 1
            log.warning("ignoring device state on %s: %s", topic, exc)
            return
        self.received += 1
        self._notify("state", device_id, state)

    def _on_event(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            device_id = self.topics.device_id_from(topic)
            event = parse_event(payload)
            self.view.apply_event(device_id, event)
        except ProtocolError as exc:
            self.malformed += 1
            log.warning("ignoring device event on %s: %s", topic, exc)
            return
        self.received += 1
        self._notify("event", device_id, event)

    def settle(self, quiet_s: float = 0.3, max_s: float = 3.0) -> None:
        """Wait until retained states stopped arriving (``quiet_s`` without a message)."""
        deadline = time.monotonic() + max_s
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            if self.received != last:
                last, quiet_since = self.received, time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                return
            time.sleep(0.05)
