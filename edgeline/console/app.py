"""The Starlette application: the console's state, the security headers, and the pump that turns
the fleet watcher's changes, the rollouts in the store and the alert episodes into live patches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_registry.registry import Registry
from edgeline.console import data, widgets
from edgeline.console.accounts import Sessions
from edgeline.console.actions import Operations
from edgeline.console.auth import LoginLimiter
from edgeline.console.live import CSRF_SLOT, Hub, LiveView, Patch

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


@dataclass
class Console:
    registry: Registry
    live: LiveView
    ops: Operations
    #: the telemetry store: a path, sqlite:///... or postgresql://... (as ``--db`` of the telemetry commands)
    telemetry_url: str | Path
    #: cookies marked Secure (TLS, or loopback where browsers treat http as a secure context)
    secure_cookies: bool = True
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    hub: Hub = field(default_factory=Hub)
    remembered: data.Remembered = field(default_factory=data.Remembered)
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.sessions = Sessions(self.registry.store)
        self._telemetry: Any = None

    def telemetry(self) -> Any:
        """The telemetry store, opened once it exists (``edgeline ingest`` creates it)."""
        if self._telemetry is None:
            self._telemetry = data.open_telemetry(self.telemetry_url)
        return self._telemetry

    def close(self) -> None:
        """Stop the console's rollout runners and close the telemetry store it opened."""
        self.ops.close()
        store, self._telemetry = self._telemetry, None
        if store is not None:
            store.close()

    def alerts(self) -> data.Read[list[dict[str, Any]]]:
        return self.remembered.read("alerts", lambda: data.alerts(self.telemetry()), [])

    def active_alerts(self) -> int:
        return sum(1 for a in self.alerts().value if a["active"])


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                own = {k.lower() for k, _ in message.get("headers", [])}
                static = scope.get("path", "").startswith("/static/")
                # no-store unless the response says how it may be cached (static files, report plots)
                extra = [h for h in HEADERS if not (h[0] == b"cache-control" and (static or h[0] in own))]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


# -- the live pump ----------------------------------------------------------------------------------------
class Pump:
    """Every 0.1 s: the devices that changed. Every 0.5 s: the broker link and the rollouts in the
    store (whoever drives them: this console or an 'edgeline deploy' elsewhere). Every second: the
    alert episodes and devices that went stale without a message."""

    def __init__(self, console: Console) -> None:
        self.c = console
        self.status: dict[str, str] = {}
        self.rollouts: dict[str, float] = {}
        self.alerts: dict[str, tuple[bool, float]] = {}
        self.link: tuple[bool, float] | None = None
        self.ticks = 0

    def fleet_patches(self, ids: list[str], now: float) -> list[Patch]:
        out = []
        for d in ids:
            r = self.c.live.row(d, now)
            self.status[d] = r.status
            out.append(Patch(widgets.dom_id("dev", d), widgets.fleet_row(r), "fleet-body"))
        if out:
            out.append(Patch("fleet-summary", widgets.fleet_summary(self.c.live.rows(now))))
        return out

    def stale_ids(self, now: float) -> list[str]:
        return [r.device_id for r in self.c.live.rows(now) if self.status.get(r.device_id) != r.status]

    def rollout_patches(self) -> tuple[list[Patch], list[Patch]]:
        empty: list[data.RolloutItem] = []
        read = self.c.remembered.read("rollouts", lambda: data.rollouts(self.c.registry), empty)
        viewer: list[Patch] = []
        operator: list[Patch] = []
        for it in read.value:
            rid = it.rollout.plan.id
            if self.rollouts.get(rid) == it.updated_at:
                continue
            self.rollouts[rid] = it.updated_at
            detail = Patch(widgets.dom_id("rod", rid), widgets.rollout_devices(it.rollout))
            rid_dom = widgets.dom_id("ro", rid)
            viewer_row = widgets.rollout_row(it.rollout, it.created_at, None)
            viewer += [Patch(rid_dom, viewer_row, "rollouts-body", "afterbegin"), detail]
            op_row = widgets.rollout_row(it.rollout, it.created_at, CSRF_SLOT)
            operator += [Patch(rid_dom, op_row, "rollouts-body", "afterbegin"), detail]
        return viewer, operator

    def alert_patches(self) -> list[Patch]:
        read = self.c.alerts()
        out = []
        for a in reversed(read.value):
            key = f"{a['kind']}.{a['scope']}"
            sig = (bool(a["active"]), float(a["closed"]))
            if self.alerts.get(key) == sig:
                continue
            self.alerts[key] = sig
            out.append(Patch(widgets.dom_id("al", key), widgets.alert_row(a), "alerts-body", "afterbegin"))
        if out:
            out.append(Patch("alert-count", widgets.alert_count(sum(1 for a in read.value if a["active"]))))
        return out

    def link_patch(self, now: float) -> list[Patch]:
        st = self.c.live.link_state()
        key = (st.connected, st.since)
        if key == self.link:
            return []
        self.link = key
        return [Patch("link-banner", widgets.link_banner(st, now))]

    def prime(self) -> None:
        """Remember what is there at start, so the first round only sends what changed after."""
        now = self.c.clock()
        for r in self.c.live.rows(now):
            self.status[r.device_id] = r.status
        self.rollout_patches()
        self.alert_patches()
        self.link_patch(now)

    async def run(self) -> None:
        await asyncio.to_thread(self.prime)
        while True:
            await asyncio.sleep(0.1)
            self.ticks += 1
            try:
                await self.round()
            except Exception:
                log.exception("console pump round failed")

    async def round(self) -> None:
        now = self.c.clock()
        ids = self.c.live.take_pending()
        if self.ticks % 10 == 0:
            ids = sorted(set(ids) | set(self.stale_ids(now)))
        patches = self.fleet_patches(ids, now)
        operator: list[Patch] = []
        if self.ticks % 5 == 0:
            patches += self.link_patch(now)
            viewer, operator = await asyncio.to_thread(self.rollout_patches)
            operator = patches + operator
            patches += viewer
        if self.ticks % 10 == 0:
            alerts = await asyncio.to_thread(self.alert_patches)
            patches += alerts
            operator += alerts
        self.c.hub.publish_patches(patches, operator or None)


def create_app(console: Console) -> Starlette:
    from edgeline.console import routes

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        console.hub.attach(asyncio.get_running_loop())
        task = asyncio.create_task(Pump(console).run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = Starlette(
        routes=[*routes.routes(console), Mount("/static", StaticFiles(directory=STATIC), name="static")],
        lifespan=lifespan,
    )
    app.add_middleware(SecurityHeaders)
    # a fleet page of 1,000 devices is ~370 KB of HTML, ~25 KB compressed (event streams are not compressed)
    app.add_middleware(GZipMiddleware, minimum_size=2048)
    return app


__all__ = ["Console", "Route", "create_app"]
