"""The admin dashboard: login flow, cookie or bearer auth, rendering, live stream."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from monitor_support import FakeComponent, codec, fleet, token

from pocketpay.kit.clock import ManualClock
from pocketpay.monitor import create_app
from pocketpay.monitor.app import sse_events
from pocketpay.monitor.auth import COOKIE, safe_next
from pocketpay.monitor.service import Monitor
from pocketpay.settings import MonitorSettings

NAMES = ("gateway", "ledger", "payments", "notifications")


@pytest.fixture
async def app(clock: ManualClock) -> AsyncIterator[FastAPI]:
    comps = [FakeComponent(n) for n in NAMES]
    comps[1].ready = False
    targets, http, _ = fleet(*comps)
    app = create_app(
        MonitorSettings(targets=targets),
        clock,
        tokens=codec(),
        http=http,
        run_poller=False,
        channels=[],
        login_url="https://auth.test/api/v1/auth/login",
    )
    yield app
    await http.aclose()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mon.test") as c:
        yield c


async def test_signed_out_browser_is_sent_to_login(client: httpx.AsyncClient) -> None:
    resp = await client.get("/admin/health")
    assert resp.status_code == 303
    assert resp.headers["location"] == "/admin/login?next=/admin/health"


async def test_expired_or_bad_cookie_is_sent_to_login(client: httpx.AsyncClient) -> None:
    client.cookies.set(COOKIE, "not-a-jwt")
    assert (await client.get("/admin/health")).status_code == 303


async def test_non_admin_gets_403_problem(client: httpx.AsyncClient) -> None:
    resp = await client.get("/admin/health", headers={"Authorization": f"Bearer {token('user')}"})
    assert resp.status_code == 403
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["code"] == "auth.admin_required"


async def test_alerts_need_an_admin(client: httpx.AsyncClient) -> None:
    resp = await client.get("/alerts")
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["www-authenticate"].startswith("Bearer")
    user = {"Authorization": f"Bearer {token('user')}"}
    assert (await client.get("/alerts", headers=user)).status_code == 403
    bad = {"Authorization": "Bearer nope"}
    assert (await client.get("/alerts", headers=bad)).json()["code"] == "auth.invalid_token"


async def test_dashboard_shows_every_component(app: FastAPI, client: httpx.AsyncClient) -> None:
    monitor: Monitor = app.state.monitor
    for _ in range(3):
        await monitor.poll_once()
    client.cookies.set(COOKIE, token("admin", "boss@pocketpay.test"))
    resp = await client.get("/admin/health")
    assert resp.status_code == 200
    html = resp.text
    for name in NAMES:
        assert f'data-component="{name}"' in html
    assert 'data-component="ledger" data-status="down"' in html
    assert 'data-component="gateway" data-status="ok"' in html
    assert 'data-overall="down"' in html
    assert "database is locked" in html
    assert "Recent alerts" in html and "Not ready" in html  # the ledger alert
    assert "boss@pocketpay.test" in html
    assert 'name="viewport"' in html
    csp = resp.headers["content-security-policy"]
    nonce = csp.split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in html
    assert "/admin/health/stream" in html


async def test_dashboard_escapes_what_components_say(app: FastAPI) -> None:
    monitor: Monitor = app.state.monitor
    monitor.components["ledger"].last_error = "<script>alert(1)</script>"
    monitor.components["ledger"].status = "down"
    html = app.state.dashboard.panel()
    assert "<script>alert(1)" not in html and "&lt;script&gt;" in html


async def test_login_page_and_session_cookie(client: httpx.AsyncClient) -> None:
    page = await client.get("/admin/login?next=/admin/health")
    assert page.status_code == 200
    assert '"https://auth.test/api/v1/auth/login"' in page.text
    assert "connect-src 'self' https://auth.test" in page.headers["content-security-policy"]
    assert 'type="password"' in page.text

    user = await client.post("/admin/session", json={"access_token": token("user")})
    assert user.status_code == 403 and "set-cookie" not in user.headers
    assert (await client.post("/admin/session", json={"access_token": "x"})).status_code == 401

    ok = await client.post("/admin/session", json={"access_token": token("admin")})
    assert ok.status_code == 204
    cookie = ok.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Path=/" in cookie
    assert (await client.get("/admin/health")).status_code == 200
    assert (await client.get("/alerts")).status_code == 200

    out = await client.post("/admin/logout")
    assert out.status_code == 303 and out.headers["location"] == "/admin/login"
    assert (await client.get("/admin/health")).status_code == 303


def test_next_cannot_leave_the_host() -> None:
    home = "/admin/health"
    assert safe_next("/admin/health?x=1", home) == "/admin/health?x=1"
    for bad in (
        "https://evil.test/",
        "//evil.test",
        "/\\evil.test",
        "javascript:alert(1)",
        "",
        None,
        "admin",
    ):
        assert safe_next(bad, home) == home


async def test_stream_sends_the_panel_now_and_after_each_poll(app: FastAPI) -> None:
    monitor: Monitor = app.state.monitor
    events = sse_events(monitor, app.state.dashboard.panel, "panel", max_events=2)
    first = await anext(events)
    assert first.event == "panel" and 'data-status="unknown"' in str(first.data)
    pending = asyncio.ensure_future(anext(events))
    await monitor.poll_once()
    second = await pending
    assert 'data-component="ledger" data-status="down"' in str(second.data)
    assert int(str(second.id)) > int(str(first.id))
    with pytest.raises(StopAsyncIteration):
        await anext(events)


async def test_stream_stops_when_no_longer_allowed(app: FastAPI) -> None:
    events = sse_events(app.state.monitor, lambda: "x", "panel", allowed=lambda: False)
    with pytest.raises(StopAsyncIteration):
        await anext(events)


async def test_stream_endpoints_over_a_real_server(app: FastAPI) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound and listening before the server runs: no start-up wait
    sock.listen()
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            async with http.stream("GET", "/status/stream") as resp:
                assert resp.headers["content-type"].startswith("text/event-stream")
                event = [line async for line in _until_blank(resp.aiter_lines())]
            assert "event: status" in event
            status = json.loads(next(x for x in event if x.startswith("data: "))[6:])
            assert status["status"] == "unknown" and "ledger" in status["components"]
            assert (await http.get("/admin/health/stream")).status_code == 401
            cookies = {COOKIE: token("admin")}
            async with http.stream("GET", "/admin/health/stream", cookies=cookies) as resp:
                assert resp.status_code == 200
                panel = [line async for line in _until_blank(resp.aiter_lines())]
            assert "event: panel" in panel and any("data-component" in x for x in panel)
    finally:
        server.should_exit = True
        await task
        sock.close()


async def _until_blank(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The lines of one SSE event."""
    async for line in lines:
        if line == "":
            return
        yield line
