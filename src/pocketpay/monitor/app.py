"""The monitor's HTTP face: ``/status`` (+ stream), ``/alerts``, the ``/admin/health`` dashboard
with its login, and the kit's ``/healthz``, ``/readyz``, ``/health/deps`` and ``/metrics``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal
from urllib.parse import quote

import httpx
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncEngine
from sse_starlette import EventSourceResponse, ServerSentEvent

from pocketpay.kit.clock import Clock
from pocketpay.kit.errors import AppError, Unauthorized
from pocketpay.kit.health import CheckResult, Health, health_router
from pocketpay.kit.httpapp import new_app
from pocketpay.kit.tokens import Principal, TokenCodec
from pocketpay.kit.web import new_nonce, security_headers
from pocketpay.monitor.auth import COOKIE, admin_from_token, require_admin, safe_next, token_from
from pocketpay.monitor.channels import Channel, Notifier, Sleep, channels_from_settings
from pocketpay.monitor.dashboard import Dashboard
from pocketpay.monitor.service import Monitor
from pocketpay.monitor.store import AlertStore, SqlAlertPersistence
from pocketpay.settings import MonitorSettings

DEFAULT_LOGIN_URL = "/api/v1/auth/login"
STREAM_HEARTBEAT_SECONDS = 15.0
STREAM_MAX_EVENTS = 2000  # then the stream ends and EventSource reconnects on its own
STALE_POLLS = 3  # the poller check fails when the last poll is older than this many intervals


class SessionIn(BaseModel):
    access_token: str = Field(min_length=1, max_length=4096)


def create_app(
    settings: MonitorSettings,
    clock: Clock,
    *,
    tokens: TokenCodec,
    http: httpx.AsyncClient | None = None,
    run_poller: bool = True,
    channels: Sequence[Channel] | None = None,
    engine: AsyncEngine | None = None,
    sleep: Sleep | None = None,
    login_url: str = DEFAULT_LOGIN_URL,
) -> FastAPI:
    """The monitor app. ``app.state.monitor`` is the engine (``poll_once``, ``flush``,
    ``status``); with ``run_poller`` the lifespan polls every ``interval_seconds``.

    ``channels`` defaults to the ones the settings configure; ``engine`` adds persistence of
    the alert history (the ``monitor_alerts`` table must exist); ``sleep`` is the backoff sleep
    between delivery retries (default: the clock's).
    """
    client = http or httpx.AsyncClient(follow_redirects=False)
    chosen = list(channels) if channels is not None else channels_from_settings(settings, client)
    notifier = Notifier(
        chosen,
        clock,
        retries=settings.channel_retries,
        timeout_seconds=settings.channel_timeout_seconds,
        sleep=sleep,
    )
    store = AlertStore(persistence=SqlAlertPersistence(engine) if engine is not None else None)
    monitor = Monitor(settings, clock, http=client, notifier=notifier, store=store)
    health = monitor_health(monitor, run_poller=run_poller)

    app = new_app("monitor", title="PocketPay monitor")
    app.router.lifespan_context = _lifespan(monitor, client if http is None else None, run_poller)
    app.state.monitor = monitor
    app.state.health = health
    app.state.tokens = tokens
    app.state.dashboard = Dashboard(monitor)
    app.include_router(health_router(health))
    _status_routes(app, monitor)
    _admin_routes(app, app.state.dashboard, tokens, login_url)
    return app


def _lifespan(
    monitor: Monitor, owned_http: httpx.AsyncClient | None, run_poller: bool
) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await monitor.restore()
        if run_poller:
            monitor.start()
        try:
            yield
        finally:
            await monitor.stop()
            if owned_http is not None:
                await owned_http.aclose()

    return lifespan


def monitor_health(monitor: Monitor, *, run_poller: bool) -> Health:
    """The monitor's own readiness: it is polling (critical); its channels work (not)."""
    health = Health("monitor")
    interval = monitor.settings.interval_seconds

    async def poller() -> CheckResult:
        if run_poller and not monitor.running:
            return CheckResult("fail", {"error": monitor.loop_error or "the poller is not running"})
        if monitor.last_poll_at is None:
            return CheckResult("degraded", {"error": "no poll has completed yet"})
        age = (monitor.clock.now() - monitor.last_poll_at).total_seconds()
        if age > STALE_POLLS * interval:
            return CheckResult("fail", {"error": f"the last poll was {age:.0f}s ago"})
        return CheckResult("ok", {"last_poll_age_seconds": round(age, 1), "polls": monitor.polls})

    async def channels() -> CheckResult:
        stats = monitor.notifier.stats
        failing = sorted(name for name, s in stats.items() if s.failing)
        detail: dict[str, Any] = {"configured": sorted(stats)}
        if failing:
            return CheckResult("degraded", detail | {"error": f"failing: {', '.join(failing)}"})
        return CheckResult("ok", detail)

    health.add("poller", poller, critical=True)
    health.add("channels", channels, critical=False)
    return health


async def sse_events(
    monitor: Monitor,
    render: Callable[[], str],
    event: str,
    *,
    allowed: Callable[[], bool] = lambda: True,
    max_events: int = STREAM_MAX_EVENTS,
    heartbeat_seconds: float = STREAM_HEARTBEAT_SECONDS,
) -> AsyncIterator[ServerSentEvent]:
    """The current view at once, then again after every poll or delivery, while ``allowed``."""
    seen, sent = -1, 0
    while sent < max_events and allowed():
        version = await monitor.wait_for_update(seen, heartbeat_seconds)
        if version == seen:
            continue
        seen, sent = version, sent + 1
        yield ServerSentEvent(render(), event=event, id=str(version))


def _status_routes(app: FastAPI, monitor: Monitor) -> None:
    @app.get("/status")
    async def status() -> JSONResponse:
        return JSONResponse(monitor.status(), headers={"Cache-Control": "no-store"})

    @app.get("/status/stream")
    async def status_stream() -> EventSourceResponse:
        events = sse_events(monitor, lambda: json.dumps(monitor.status()), "status")
        return EventSourceResponse(
            events, ping=int(STREAM_HEARTBEAT_SECONDS), headers={"Cache-Control": "no-store"}
        )

    @app.get("/alerts")
    async def alerts(
        _: Principal = Depends(require_admin),
        limit: int = Query(100, ge=1, le=500),
        state: Literal["all", "open", "resolved"] = "all",
        component: str | None = Query(None, max_length=64),
    ) -> dict[str, Any]:
        records = monitor.store.recent(monitor.store.capacity)
        chosen = [
            r
            for r in records
            if (state == "all" or (state == "open") == r.is_open)
            and (component is None or r.component == component)
        ][:limit]
        return {"alerts": [r.to_dict() for r in chosen], "open": len(monitor.store.open_alerts())}


def _admin_routes(app: FastAPI, dashboard: Dashboard, tokens: TokenCodec, login_url: str) -> None:
    def base(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get("/admin/health", response_class=HTMLResponse, response_model=None)
    async def page(request: Request) -> Response:
        try:
            principal = admin_from_token(tokens, token_from(request))
        except Unauthorized:
            target = quote(base(request) + "/admin/health", safe="/")
            return RedirectResponse(f"{base(request)}/admin/login?next={target}", 303)
        nonce = new_nonce()
        html = dashboard.page(
            base=base(request), nonce=nonce, user=principal.email or principal.user_id
        )
        return HTMLResponse(html, headers=security_headers(nonce))

    @app.get("/admin/health/stream")
    async def page_stream(
        request: Request, _: Principal = Depends(require_admin)
    ) -> EventSourceResponse:
        token = token_from(request)
        events = sse_events(
            dashboard.monitor, dashboard.panel, "panel", allowed=lambda: _still_admin(tokens, token)
        )
        return EventSourceResponse(
            events, ping=int(STREAM_HEARTBEAT_SECONDS), headers={"Cache-Control": "no-store"}
        )

    @app.get("/admin/login", response_class=HTMLResponse)
    async def login(
        request: Request, next: str | None = Query(None, max_length=2048)
    ) -> HTMLResponse:
        nonce = new_nonce()
        home = base(request) + "/admin/health"
        html = dashboard.login(
            base=base(request), nonce=nonce, login_url=login_url, next_url=safe_next(next, home)
        )
        return HTMLResponse(html, headers=security_headers(nonce, login_url))

    _session_routes(app, tokens, base)


def _session_routes(app: FastAPI, tokens: TokenCodec, base: Callable[[Request], str]) -> None:
    @app.post("/admin/session", status_code=204)
    async def session(body: SessionIn, request: Request) -> Response:
        admin_from_token(tokens, body.access_token)  # 401 / 403 before any cookie is set
        response = Response(status_code=204)
        response.set_cookie(
            COOKIE,
            body.access_token,
            max_age=tokens.ttl_seconds,
            path=base(request) or "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @app.post("/admin/logout")
    async def logout(request: Request) -> RedirectResponse:
        response = RedirectResponse(f"{base(request)}/admin/login", 303)
        response.delete_cookie(COOKIE, path=base(request) or "/", httponly=True, samesite="strict")
        return response


def _still_admin(tokens: TokenCodec, token: str | None) -> bool:
    try:
        admin_from_token(tokens, token)
    except AppError:
        return False
    return True
