"""What the cloud received, and the checks that decide whether anything was lost or duplicated.

* :class:`EventLedger` subscribes (persistent session) to every device's events and keeps each event
  once by its ``event_id`` (the idempotency key), counting redeliveries.
* :func:`history_problems` checks one device's deduplicated event history, deployment by
  deployment: every transition reported exactly once, every deployment ends in exactly one terminal
  event, and a terminal event is preceded by the steps that lead to it.
* :func:`window_problems` checks the telemetry windows the ingest stored for one device: no key
  twice, and no two windows covering the same time (a window re-sent under a new key would).
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from cloud_registry.telemetry.store import TelemetryStore
from edgeline.core.mqtt_link import LinkSettings, MqttLink
from edgeline.core.protocol.delivery import DeviceEvent, DeviceState, parse_event, parse_state
from edgeline.core.protocol.topics import Topics

TERMINAL = ("committed", "rolled_back", "rejected")
#: kinds that a crash-free or crash-interrupted deployment reports at most once
ONCE = ("verified", "staged", "activated", *TERMINAL)
#: what must have been reported before a terminal event (a deployment that really ran)
PATH = {
    "committed": ("downloading", "verified", "staged", "activated"),
    "rolled_back": ("downloading", "verified", "staged", "activated"),
}


@dataclass
class EventLedger:
    """The cloud's view of device events and states, on its own persistent MQTT session."""

    port: int
    topics: Topics = field(default_factory=Topics)
    client_id: str = "faults-ledger"

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.events: dict[str, DeviceEvent] = {}
        self.deliveries = 0
        self.states: dict[str, DeviceState] = {}
        self.link = MqttLink(
            LinkSettings(port=self.port, client_id=self.client_id, clean_start=False, reconnect_max_s=1.0)
        )
        self.link.subscribe(self.topics.all_device_events(), self._on_event, qos=1)
        self.link.subscribe(self.topics.all_device_states(), self._on_state, qos=1)

    def start(self, timeout: float = 10.0) -> None:
        self.link.connect(timeout)

    def stop(self) -> None:
        self.link.stop()

    def _on_event(self, topic: str, payload: bytes, retained: bool) -> None:
        ev = parse_event(payload)
        with self._lock:
            self.deliveries += 1
            self.events.setdefault(ev.event_id, ev)

    def _on_state(self, topic: str, payload: bytes, retained: bool) -> None:
        if not payload:
            return
        st = parse_state(payload)
        with self._lock:
            self.states[st.device_id] = st

    def of(self, device_id: str) -> list[DeviceEvent]:
        with self._lock:
            return sorted((e for e in self.events.values() if e.device_id == device_id), key=lambda e: e.ts)

    def state(self, device_id: str) -> DeviceState | None:
        with self._lock:
            return self.states.get(device_id)

    def has(self, event_ids: Iterable[str]) -> bool:
        with self._lock:
            return all(i in self.events for i in event_ids)

    @property
    def redelivered(self) -> int:
        with self._lock:
            return self.deliveries - len(self.events)


def history_problems(events: list[DeviceEvent], open_sequences: Iterable[int] = ()) -> list[str]:
    """Everything wrong with one device's deduplicated event history (empty when sound)."""
    by_seq: dict[int, list[DeviceEvent]] = defaultdict(list)
    for e in events:
        by_seq[e.sequence].append(e)
    still_open = set(open_sequences)
    problems: list[str] = []
    for seq, evs in sorted(by_seq.items()):
        kinds = Counter(e.kind.value for e in evs)
        for kind in ONCE:
            if kinds[kind] > 1:
                problems.append(f"sequence {seq}: {kind} reported {kinds[kind]} times")
        terminal = [k for k in TERMINAL if kinds[k]]
        if len(terminal) != 1 and seq not in still_open:
            problems.append(f"sequence {seq}: terminal events {terminal or 'none'} (kinds {dict(kinds)})")
        for end in terminal:
            if end == "committed" and all(e.detail == "already active" for e in evs if e.kind.value == end):
                continue
            if end == "rejected":
                continue
            missing = [k for k in PATH.get(end, ()) if not kinds[k]]
            if missing:
                problems.append(f"sequence {seq}: {end} but {missing} never reported (kinds {dict(kinds)})")
    return problems


@dataclass(frozen=True)
class StoredSpan:
    key: str
    sha256: str
    start: float
    end: float
    frames: int


def stored_windows(store: TelemetryStore, pseudonym: str) -> list[StoredSpan]:
    rows = store.execute(
        "SELECT key, sha256, start, end_, frames FROM windows WHERE device = ? ORDER BY start", (pseudonym,)
    )
    return [StoredSpan(str(r[0]), str(r[1]), float(r[2]), float(r[3]), int(r[4])) for r in rows]  # type: ignore[arg-type]


def window_problems(spans: list[StoredSpan]) -> list[str]:
    """Duplicate keys, or two windows of one model covering the same time (the same frames sent twice
    under two keys). Windows of different models may overlap: a too-small window of a model waits,
    per model, to be merged into that model's next window."""
    problems = []
    keys = Counter(s.key for s in spans)
    problems += [f"window {k} stored {n} times" for k, n in keys.items() if n > 1]
    by_model: dict[str, list[StoredSpan]] = defaultdict(list)
    for s in spans:
        by_model[s.sha256].append(s)
    for group in by_model.values():
        ordered = sorted(group, key=lambda s: (s.start, s.end))
        for a, b in itertools.pairwise(ordered):
            if b.start < a.end - 1e-6:
                problems.append(
                    f"windows {a.key} [{a.start:.3f}, {a.end:.3f}] and {b.key} [{b.start:.3f}, {b.end:.3f}] overlap"
                )
    return problems
