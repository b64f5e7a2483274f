"""The console's routes: login and logout, the five pages, the event stream and the actions.

Every POST needs the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``) and, when
the browser sends one, an Origin of this host; the login form has its own token (a cookie it must
match). Actions need the operator role: a viewer is refused with 403, whatever it sends."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from cloud_registry.errors import NotFound
from edgeline.console import auth, data, pages, widgets
from edgeline.console.accounts import SESSION_S, Session, StoreDown
from edgeline.console.actions import DeployRequest
from edgeline.console.app import Console
from edgeline.console.live import Hub
from edgeline.core.errors import EdgelineError

SESSION_COOKIE = "edgeline_session"
LOGIN_COOKIE = "edgeline_login"
MAX_FORM = 16 * 1024


def routes(c: Console) -> list[Route]:
    flashes: dict[str, str] = {}
    plots = Path(tempfile.mkdtemp(prefix="edgeline-console-plots-"))
    last_plot: dict[str, Path] = {}

    def cookie(resp: Response, name: str, value: str, max_age: int) -> None:
        resp.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict", secure=c.secure_cookies)

    async def session_of(request: Request) -> Session | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        return await asyncio.to_thread(c.sessions.lookup, token)

    async def form(request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > MAX_FORM:
            return {}
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in parsed.items()}

    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return origin is None
        return urlsplit(origin).netloc == request.headers.get("host", "")

    def page(title: str, name: str, body: str, s: Session) -> HTMLResponse:
        html = pages.layout(title, name, body, s, link=c.live.link_state(), alerts=c.active_alerts())
        return HTMLResponse(html)

    def to_login() -> RedirectResponse:
        return RedirectResponse("/login", status_code=303)

    # -- login ------------------------------------------------------------------------------------------
    async def login_form(request: Request) -> Response:
        token = auth.new_token()
        resp = HTMLResponse(pages.login(token))
        cookie(resp, LOGIN_COOKIE, token, 600)
        return resp

    async def login(request: Request) -> Response:
        f = await form(request)
        username, password = f.get("username", "")[:64], f.get("password", "")
        client = request.client.host if request.client else "-"
        expected = request.cookies.get(LOGIN_COOKIE, "")
        token = auth.new_token()

        def answer(status: int, error: str, headers: dict[str, str] | None = None) -> Response:
            resp = HTMLResponse(pages.login(token, error, username), status_code=status, headers=headers)
            cookie(resp, LOGIN_COOKIE, token, 600)
            return resp

        if not same_origin(request) or not auth.csrf_ok(expected, f.get("csrf")):
            return answer(403, "The login form expired or did not come from this console: try again.")
        verdict = c.limiter.check(client, username)
        if not verdict.allowed:
            wait = max(1, round(verdict.retry_after_s))
            await asyncio.to_thread(c.ops.audit, username or "-", "login", client, "refused: rate limited")
            return answer(429, f"Too many failed logins: try again in {wait} s.", {"Retry-After": str(wait)})
        try:
            result = await asyncio.to_thread(c.sessions.login, username, password)
        except StoreDown as exc:
            return answer(503, f"Cannot log in now: {exc}. Sessions already open keep working.")
        if result is None:
            c.limiter.failed(client, username)
            await asyncio.to_thread(c.ops.audit, username or "-", "login", client, "refused: wrong user or password")
            return answer(401, "Wrong user name or password.")
        c.limiter.succeeded(client, username)
        session_token, s = result
        await asyncio.to_thread(c.ops.audit, s.username, "login", client, "ok")
        resp = RedirectResponse("/", status_code=303)
        cookie(resp, SESSION_COOKIE, session_token, int(SESSION_S))
        resp.delete_cookie(LOGIN_COOKIE)
        return resp

    async def checked(request: Request, action: str | None) -> tuple[Session | None, dict[str, str], Response | None]:
        """The session, the form, or the refusal: no session, a bad CSRF token, a foreign Origin, a role."""
        s = await session_of(request)
        if s is None:
            return None, {}, PlainTextResponse("log in first", status_code=403)
        f = await form(request)
        given = request.headers.get("x-csrf-token") or f.get("csrf")
        if not same_origin(request) or not auth.csrf_ok(s.csrf, given):
            what = action or "post"
            await asyncio.to_thread(c.ops.audit, s.username, what, request.url.path, "refused: bad CSRF token")
            return s, f, PlainTextResponse("refused: missing or wrong CSRF token", status_code=403)
        if action is not None and not s.may(action):
            await asyncio.to_thread(c.ops.audit, s.username, action, request.url.path, f"refused: role {s.role}")
            return s, f, PlainTextResponse(f"refused: the {s.role} role may not {action}", status_code=403)
        return s, f, None

    async def logout(request: Request) -> Response:
        s, _, refused = await checked(request, None)
        if refused is not None or s is None:
            return refused or to_login()
        await asyncio.to_thread(c.sessions.logout, s)
        await asyncio.to_thread(c.ops.audit, s.username, "logout", "-", "ok")
        resp = to_login()
        resp.delete_cookie(SESSION_COOKIE)
        return resp

    # -- pages ------------------------------------------------------------------------------------------
    async def fleet(request: Request) -> Response:
        s = await session_of(request)
        if s is None:
            return to_login()
        group = request.query_params.get("group") or None
        device = request.query_params.get("device") or None
        return page("Fleet", "fleet", pages.fleet(c.live.rows(), group, device), s)

    def refs() -> list[str]:
        out = []
        for m in data.models(c.registry):
            out += [f"{m.name}@{s}" for s in sorted(m.stages)]
            out += [f"{m.name}@{v.version}" for v in reversed(m.versions)]
        return out

    async def rollouts(request: Request) -> Response:
        s = await session_of(request)
        if s is None:
            return to_login()
        read = await asyncio.to_thread(c.remembered.read, "rollouts", lambda: data.rollouts(c.registry), [])
        choices = await asyncio.to_thread(c.remembered.read, "refs", refs, [])
        body = pages.rollouts(read, s, choices.value, flashes.pop(s.token_hash, None))
        return page("Rollouts", "rollouts", body, s)

    async def rollout_detail(request: Request) -> Response:
        s = await session_of(request)
        if s is None:
            return to_login()
        rid = request.path_params["rid"]

        def one() -> data.RolloutItem | None:
            try:
                return data.rollout(c.registry, rid)
            except NotFound:
                return None

        read = await asyncio.to_thread(c.remembered.read, f"rollout:{rid}", one, None)
        body = pages.rollout_detail(read, s, flashes.pop(s.token_hash, None))
        return page(f"Rollout {rid}", "rollouts", body, s)

    async def models(request: Request) -> Response:
        s = await session_of(request)
        if s is None:
            return to_login()
        read = await asyncio.to_thread(c.remembered.read, "models", lambda: data.models(c.registry), [])
        return page("Models", "models", pages.models(read), s)

    async def report_png(request: Request) -> Response:
        s = await session_of(request)
        if s is None:
            return PlainTextResponse("log in first", status_code=403)
        name, version = request.path_params["name"], request.path_params["version"]

        def load() -> bytes | None:
            empty: list[data.ModelInfo] = []
            read = c.remembered.read("models", lambda: data.models(c.registry), empty)  # the last known, if down
            sha = next((m.reports.get(version, {}).get("png") for m in read.value if m.name == name), None)
            return c.registry.artifacts.get(sha) if sha else None

        try:
            png = await asyncio.to_thread(load)
        except EdgelineError as exc:
            return PlainTextResponse(f"the build report is unreadable: {exc}", status_code=503)
        if png is None:
            return PlainTextResponse("no build report kept for this version", status_code=404)
        # content-addressed: the same URL never changes, so the browser may keep it
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})

    async def drift(request: Request) -> Response:
        s = await session_of(request)
        if s is None:
            return to_login()
        names = (
            await asyncio.to_thread(c.remembered.read, "drift-models", lambda: data.drift_models(c.telemetry()), [])
        ).value
        selected = request.query_params.get("model") or (names[0] if names else None)
        reports: data.Read[list[Any]] = data.Read([], 0.0)
        if selected in names:
            store = c.telemetry()
            reports = await asyncio.to_thread(
                c.remembered.read, f"drift:{selected}", lambda: data.drift_reports(store, c.registry, selected), []
            )
        alerts = await asyncio.to_thread(c.alerts)
        return page("Drift and alerts", "drift", pages.drift(names, selected, reports, alerts), s)

    async def drift_png(request: Request) -> Response:
        s = await session_of(request)
        if s is None:
            return PlainTextResponse("log in first", status_code=403)
        model = request.path_params["model"]

        def render() -> Path | None:
            from cloud_registry.telemetry.drift_report import render_png

            store = c.telemetry()
            if store is None or model not in store.models():
                return None
            path = plots / f"{widgets.dom_id('drift', model)}-{store.count(model)}.png"
            if not path.exists():
                render_png(data.drift_reports(store, c.registry, model), path)
            last_plot[model] = path
            return path

        try:
            path = await asyncio.to_thread(render)
        except EdgelineError as exc:
            path = last_plot.get(model)  # the telemetry store is away: the plot it last gave
            if path is None:
                return PlainTextResponse(f"the telemetry store is unreachable: {exc}", status_code=503)
        if path is None:
            return PlainTextResponse("no telemetry for this model", status_code=404)
        return FileResponse(path, media_type="image/png")

    async def audit(request: Request) -> Response:
        s = await session_of(request)
        if s is None:
            return to_login()
        read = await asyncio.to_thread(c.remembered.read, "audit", lambda: c.registry.store.list_audit(300), [])
        return page("Audit", "audit", pages.audit(read), s)

    # -- live -------------------------------------------------------------------------------------------
    async def events(request: Request) -> Response:
        s = await session_of(request)
        if s is None:
            return PlainTextResponse("log in first", status_code=401)
        now = time.time()
        first = [
            "retry: 2000\n\n",
            Hub.frame("patch", [{"id": "link-banner", "html": widgets.link_banner(c.live.link_state(), now)}]),
        ]
        stream = c.hub.stream(first, operator=s.may("abort"), csrf=s.csrf)
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)

    # -- actions ----------------------------------------------------------------------------------------
    def back(s: Session, url: str, message: str) -> RedirectResponse:
        flashes[s.token_hash] = message
        return RedirectResponse(url, status_code=303)

    async def deploy(request: Request) -> Response:
        s, f, refused = await checked(request, "deploy")
        if refused is not None or s is None:
            return refused or to_login()
        try:
            pct = float(f.get("max_failures", "0").rstrip("%") or 0)
            req = DeployRequest(
                ref=f.get("ref", "").strip(),
                target=f.get("target", "").strip(),
                canary=max(0, int(f.get("canary", "0") or 0)),
                waves=f.get("waves", "100%").strip() or "100%",
                max_failure_pct=min(100.0, max(0.0, pct)),
                allow_downgrade=f.get("allow_downgrade") == "1",
            )
        except ValueError:
            return back(s, "/rollouts", "deploy refused: canary and max failures must be numbers")
        out = await asyncio.to_thread(c.ops.deploy, s.username, req)
        return back(s, f"/rollouts/{out.rollout_id}" if out.ok else "/rollouts", out.message)

    async def control(request: Request) -> Response:
        name = request.path_params["control"]
        s, _, refused = await checked(request, name)
        if refused is not None or s is None:
            return refused or to_login()
        rid = request.path_params["rid"]
        out = await asyncio.to_thread(c.ops.control, s.username, rid, name)
        return back(s, f"/rollouts/{rid}", out.message)

    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", fleet),
        Route("/rollouts", rollouts),
        Route("/rollouts/{rid}", rollout_detail),
        Route("/rollouts/{rid}/{control}", control, methods=["POST"]),
        Route("/deploy", deploy, methods=["POST"]),
        Route("/models", models),
        Route("/models/{name}/{version:int}/report.png", report_png),
        Route("/drift", drift),
        Route("/drift/{model}.png", drift_png),
        Route("/audit", audit),
        Route("/events", events),
    ]
