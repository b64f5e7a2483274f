"""The console's live view: one MQTT link, one :class:`FleetWatcher` on it (the registry's own view
of the fleet: retained states, heartbeats, events; no device is ever polled), what it last knew when
the broker went away, and the hub that fans patches out to the browsers' server-sent event streams.

Rollout runners started by the console share the watcher through :class:`ScopedFleet`, so a runner
that finished stops receiving observations (the watcher itself has no way to drop a listener).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from cloud_registry.fleet import DeviceBook, FleetRow, FleetWatcher
from edgeline.core.mqtt_link import MqttLink
from edgeline.core.protocol.topics import Topics

log = logging.getLogger(__name__)

#: a browser that falls this many patches behind is told to reload instead
CLIENT_QUEUE = 256


class ScopedFleet(FleetWatcher):
    """The console's watcher as one rollout runner sees it: the same link and view, and listeners of
    its own that :meth:`LiveView.release` detaches when the runner is done."""

    def __init__(self, parent: FleetWatcher) -> None:  # no second subscription: super().__init__ not called
        self.link = parent.link
        self.topics = parent.topics
        self.clock = parent.clock
        self.view = parent.view
        self.received = 0
        self.malformed = 0
        self._listeners = []
        self._parent = parent

    def settle(self, quiet_s: float = 0.3, max_s: float = 3.0) -> None:
        self._parent.settle(quiet_s, max_s)

    def forward(self, kind: str, device_id: str, msg: Any) -> None:
        self.received += 1
        self._notify(kind, device_id, msg)


@dataclass(frozen=True)
class LinkState:
    connected: bool
    #: since when it is up or down (epoch seconds)
    since: float
    #: the last message from any device (epoch seconds; 0: none yet)
    last_message: float


class LiveView:
    def __init__(
        self,
        link: MqttLink,
        topics: Topics,
        clock: Callable[[], float] = time.time,
        book: DeviceBook | None = None,
    ) -> None:
        """``book``: the registry store, so the fleet is known from it at start (and by exact retained
        reads) instead of from whatever a wildcard read of the retained states brings."""
        self.link = link
        self.topics = topics
        self.clock = clock
        self.watcher = FleetWatcher(link, topics, clock, book=book)
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._scoped: list[ScopedFleet] = []
        self._connected = link.connected
        self._since = clock()
        self._last_message = 0.0
        self.watcher.add_listener(self._on_fleet)
        link.on_connect(lambda _present: self._set_connected(True))
        link.on_disconnect(lambda: self._set_connected(False))

    # -- link ------------------------------------------------------------------------------------------
    def _set_connected(self, up: bool) -> None:
        with self._lock:
            if up != self._connected:
                self._connected, self._since = up, self.clock()

    def link_state(self) -> LinkState:
        with self._lock:
            up = self._connected and self.link.connected
            return LinkState(up, self._since, self._last_message)

    # -- fleet -----------------------------------------------------------------------------------------
    def _on_fleet(self, kind: str, device_id: str, msg: Any) -> None:
        with self._lock:
            self._last_message = self.clock()
            self._pending.add(device_id)
            scoped = list(self._scoped)
        for s in scoped:
            s.forward(kind, device_id, msg)

    def take_pending(self) -> list[str]:
        """Devices whose state or events changed since the last call."""
        with self._lock:
            out, self._pending = sorted(self._pending), set()
        return out

    def rows(self, now: float | None = None) -> list[FleetRow]:
        return self.watcher.view.rows(self.clock() if now is None else now)

    def row(self, device_id: str, now: float | None = None) -> FleetRow:
        return self.watcher.view.row(device_id, self.clock() if now is None else now)

    def scoped(self) -> ScopedFleet:
        s = ScopedFleet(self.watcher)
        with self._lock:
            self._scoped.append(s)
        return s

    def release(self, s: ScopedFleet) -> None:
        with self._lock:
            if s in self._scoped:
                self._scoped.remove(s)


@dataclass(frozen=True)
class Patch:
    """Replace the element ``id`` with ``html``; when the page has no such element, insert it into
    the element ``into`` (if the page has one) at ``where`` (``afterbegin`` or ``beforeend``)."""

    id: str
    html: str
    into: str = ""
    where: str = "beforeend"


#: replaced, per browser, by that session's CSRF token (patches carry action buttons)
CSRF_SLOT = "@@csrf@@"


class Hub:
    """Server-sent event fan-out. :meth:`publish` may be called from any thread once :meth:`attach`
    gave it the event loop. A patch can differ by role (``operator`` gets the action buttons, with
    :data:`CSRF_SLOT` standing for each browser's own token)."""

    def __init__(self) -> None:
        self._clients: set[asyncio.Queue[tuple[str, str]]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.sent = 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def clients(self) -> int:
        return len(self._clients)

    @staticmethod
    def frame(event: str, data: Any) -> str:
        return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"

    def publish_patches(self, patches: list[Patch], operator: list[Patch] | None = None) -> None:
        if patches or operator:
            viewer = self.frame("patch", [p.__dict__ for p in patches])
            op = viewer if operator is None else self.frame("patch", [p.__dict__ for p in operator])
            self._send((viewer, op))

    def publish(self, event: str, data: Any) -> None:
        msg = self.frame(event, data)
        self._send((msg, msg))

    def _send(self, msgs: tuple[str, str]) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._fanout(msgs)
        else:
            loop.call_soon_threadsafe(self._fanout, msgs)

    def _fanout(self, msgs: tuple[str, str]) -> None:
        for q in list(self._clients):
            try:
                q.put_nowait(msgs)
            except asyncio.QueueFull:  # a browser that cannot keep up reloads the page instead
                while not q.empty():
                    q.get_nowait()
                resync = self.frame("resync", {})
                q.put_nowait((resync, resync))
        self.sent += 1

    async def stream(
        self, first: list[str], *, operator: bool, csrf: str, keepalive_s: float = 15.0
    ) -> AsyncIterator[str]:
        """One browser's stream: ``first`` (the state as of now), then every patch published."""
        q: asyncio.Queue[tuple[str, str]] = asyncio.Queue(CLIENT_QUEUE)
        self._clients.add(q)
        try:
            for msg in first:
                yield msg
            while True:
                try:
                    viewer, op = await asyncio.wait_for(q.get(), keepalive_s)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                yield op.replace(CSRF_SLOT, csrf) if operator else viewer
        finally:
            self._clients.discard(q)
