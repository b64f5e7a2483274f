"""The fleet view: who is out there, online or not, running what, and what went wrong last.

Built from the retained ``state`` messages (birth, heartbeat, changes, goodbye), the retained
``online`` presence (``true`` at connect, the Last Will's ``false``) and the ``events`` stream. A
device is *online* when neither its presence nor its state says otherwise AND it was heard from
within three heartbeats: a device behind a half-open connection goes stale even before the broker
notices and fires its Will.

Portable across brokers: nothing depends on retained messages reaching a wildcard subscription
(RabbitMQ never delivers them). The watcher keeps what it hears in the registry (a
:class:`DeviceBook`, the registry store), starts from what the registry knows, and reads the exact
``state`` and ``online`` topics of every known device; the wildcard subscriptions bring the
births, heartbeats and events of every device live.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cloud_registry.station_targets import resolve_units
from edge_agent.errors import ProtocolError
from edgeline.core.mqtt_link import MqttLink
from edgeline.core.protocol.delivery import (
    DeviceEvent,
    DevicePresence,
    DeviceState,
    parse_event,
    parse_presence,
    parse_state,
)
from edgeline.core.protocol.topics import STATION_SEPARATOR, Topics

log = logging.getLogger(__name__)

MISSED_HEARTBEATS = 3
#: a state that changed nothing but its timestamp is written to the registry at most this often
BOOK_REFRESH_S = 60.0


class BookRow(Protocol):
    device_id: str
    state: dict[str, Any]
    last_seen: float


class DeviceBook(Protocol):
    """Where the fleet view is kept between processes: the registry store's devices table."""

    def upsert_device(self, device_id: str, state: dict[str, Any], last_seen: float) -> None: ...
    def record_event(self, device_id: str, event: dict[str, Any]) -> None: ...
    def list_devices(self) -> Any: ...


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

    @property
    def device(self) -> str:
        """The device this row belongs to (itself, or the device of a station)."""
        return self.device_id.partition(STATION_SEPARATOR)[0]

    @property
    def station(self) -> str | None:
        return self.device_id.partition(STATION_SEPARATOR)[2] or None

    def to_dict(self) -> dict[str, Any]:
        s = self.state
        ev = self.last_event
        return {
            "device_id": self.device_id,
            "device": self.device,
            "station": self.station,
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
        self._presence: dict[str, bool] = {}
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

    def apply_presence(self, device_id: str, presence: DevicePresence) -> None:
        if presence.device_id != device_id:
            raise ProtocolError(f"presence of {presence.device_id!r} published on the topic of {device_id!r}")
        with self._lock:
            self._presence[device_id] = presence.online

    def presence(self, device_id: str) -> bool | None:
        with self._lock:
            return self._presence.get(device_id)

    def apply_event(self, device_id: str, event: DeviceEvent) -> None:
        if event.device_id != device_id:
            raise ProtocolError(f"event for {event.device_id!r} published on the topic of {device_id!r}")
        with self._lock:
            self._events[device_id] = event

    def row(self, device_id: str, now: float) -> FleetRow:
        with self._lock:
            st = self._states.get(device_id)
            ev = self._events.get(device_id)
            present = self._presence.get(device_id)
        if st is None:
            return FleetRow(device_id, "offline", 0.0, None, ev)
        state, seen = st
        if not state.online or present is False:
            status = "offline"
        elif now - seen > MISSED_HEARTBEATS * state.heartbeat_s:
            status = "stale"
        else:
            status = "online"
        return FleetRow(device_id, status, seen, state, ev)

    def rows(self, now: float) -> list[FleetRow]:
        with self._lock:
            ids = set(self._states) | set(self._events)
        # the stations of a device right after it (or where it would be)
        return [self.row(d, now) for d in sorted(ids, key=lambda u: u.partition(STATION_SEPARATOR)[::2])]

    def state(self, device_id: str) -> DeviceState | None:
        with self._lock:
            st = self._states.get(device_id)
        return st[0] if st else None

    def members(self, group: str) -> list[str]:
        with self._lock:
            return sorted(d for d, (s, _) in self._states.items() if group in s.groups)

    def resolve_target(self, target: str) -> list[str]:
        """``device:ID[,ID...]``, ``station:DEV/ST[,...]`` or ``group:NAME`` (units that announced the
        group in their birth); a device known by its stations means them all (:mod:`station_targets`)."""
        with self._lock:
            known = set(self._states) | set(self._events)
        return resolve_units(target, known, self.members)


Listener = Callable[[str, str, Any], None]  # (kind "state"|"presence"|"event", device_id, parsed message)


class FleetWatcher:
    """Subscribes to every device's state, presence and events on ``link`` and keeps a
    :class:`FleetView`. Other parts (the rollout runner, the console) listen through
    :meth:`add_listener`. With a ``book`` (the registry store) it starts from the devices the registry
    knows, reads their exact retained topics, and writes back what it hears."""

    def __init__(
        self,
        link: MqttLink,
        topics: Topics,
        clock: Callable[[], float] = time.time,
        book: DeviceBook | None = None,
    ) -> None:
        self.link = link
        self.topics = topics
        self.clock = clock
        self.book = book
        self.view = FleetView()
        self.received = 0
        self.malformed = 0
        self.book_errors = 0
        self._listeners: list[Listener] = []
        self._booked: dict[str, tuple[bytes, float]] = {}  # what was last written per device
        self._exact: set[str] = set()  # exact retained reads not answered yet
        self._exact_lock = threading.Lock()
        known = self._load_book() if book is not None else []
        link.subscribe(topics.all_device_states(), self._on_state, 1)
        link.subscribe(topics.all_device_online(), self._on_presence, 1)
        link.subscribe(topics.all_device_events(), self._on_event, 1)
        if known:  # the brokers that keep retained messages from wildcards still answer exact topics
            with self._exact_lock:
                self._exact = {topics.device_state(d) for d in known} | {topics.device_online(d) for d in known}
            link.subscribe_many(sorted(t for t in self._exact if t.endswith("/state")), self._on_state, 1)
            link.subscribe_many(sorted(t for t in self._exact if t.endswith("/online")), self._on_presence, 1)

    def _load_book(self) -> list[str]:
        assert self.book is not None
        try:
            rows = list(self.book.list_devices())
        except Exception as exc:  # the registry store is down: the broker still tells what it can
            self.book_errors += 1
            log.warning("fleet: cannot read the registry's devices: %s", exc)
            return []
        known = []
        for row in rows:
            known.append(row.device_id)
            doc = row.state if isinstance(row.state, dict) else {}
            try:
                if isinstance(doc.get("state"), dict):
                    state = DeviceState.model_validate(doc["state"])
                    self.view.apply_state(row.device_id, state, received_at=row.last_seen, retained=True)
                if isinstance(doc.get("online"), bool):
                    self.view.apply_presence(
                        row.device_id, DevicePresence(device_id=row.device_id, online=doc["online"])
                    )
            except (ValueError, ProtocolError) as exc:
                log.warning("fleet: ignoring the registry's record of %s: %s", row.device_id, exc)
        return known

    def _write_book(self, device_id: str) -> None:
        if self.book is None:
            return
        state = self.view.state(device_id)
        if state is None:
            return
        state_doc = state.model_dump(mode="json", by_alias=True)
        present = self.view.presence(device_id)
        doc = {"state": state_doc, "online": present}
        key = repr(({**state_doc, "ts": 0}, present)).encode()
        now = self.clock()
        last = self._booked.get(device_id)
        if last is not None and last[0] == key and now - last[1] < BOOK_REFRESH_S:
            return  # a heartbeat that changed nothing
        try:
            self.book.upsert_device(device_id, doc, state.ts)
        except Exception as exc:
            self.book_errors += 1
            log.warning("fleet: cannot record %s in the registry: %s", device_id, exc)
            return
        self._booked[device_id] = (key, now)

    def _answered(self, topic: str, retained: bool) -> None:
        """An exact retained read got its answer: drop the subscription (the wildcard carries on)."""
        with self._exact_lock:
            if not retained or topic not in self._exact:
                return
            self._exact.discard(topic)
        self.link.unsubscribe(topic)

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
        self._answered(topic, retained)
        self._write_book(device_id)
        self._notify("state", device_id, state)

    def _on_presence(self, topic: str, payload: bytes, retained: bool) -> None:
        if not payload:
            return
        try:
            device_id = self.topics.device_id_from(topic)
            presence = parse_presence(payload)
            self.view.apply_presence(device_id, presence)
        except ProtocolError as exc:
            self.malformed += 1
            log.warning("ignoring device presence on %s: %s", topic, exc)
            return
        self.received += 1
        self._answered(topic, retained)
        self._write_book(device_id)
        self._notify("presence", device_id, presence)

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
        if self.book is not None:
            try:
                self.book.record_event(device_id, event.model_dump(mode="json", by_alias=True))
            except Exception as exc:
                self.book_errors += 1
                log.warning("fleet: cannot record an event of %s in the registry: %s", device_id, exc)
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
