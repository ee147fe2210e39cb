"""Test doubles for the monitor: scripted components served over ASGI, keyed by host."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response

from pocketpay.kit.health import CheckResult, Health
from pocketpay.kit.tokens import Principal, TokenCodec
from pocketpay.monitor.channels import ChannelError
from pocketpay.monitor.rules import Notice

SECRET = "monitor-test-secret-0123456789abcdef"


def codec() -> TokenCodec:
    return TokenCodec(SECRET, issuer="pocketpay", audience="pocketpay-api", ttl_seconds=900)


def token(role: str, email: str = "ops@example.com") -> str:
    # Tokens are checked against the real time by PyJWT, so they are issued at the real time.
    return codec().issue(Principal("usr_1", role, email), datetime.now(UTC))


@dataclass
class FakeComponent:
    """A component whose readiness a test scripts: ready, degraded, not ready, or hanging."""

    name: str
    ready: bool = True
    degraded: bool = False
    hang: bool = False
    backlog: dict[str, Any] | None = None  # None: the route is missing (404)
    provider: dict[str, Any] | None = None
    polls: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def _db(self) -> CheckResult:
        if not self.ready:
            return CheckResult("fail", {"error": "database is locked"})
        return CheckResult("degraded" if self.degraded else "ok")

    def app(self, prefix: str = "") -> FastAPI:
        health = Health(self.name)
        health.add("db", self._db)
        router = APIRouter(prefix=prefix)

        @router.get("/readyz")
        async def readyz() -> JSONResponse:
            self.polls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if self.hang:
                    await self.release.wait()
                code, body = await health.readiness()
                return JSONResponse(body, status_code=code)
            finally:
                self.in_flight -= 1

        @router.get("/health/backlog", response_model=None)
        async def backlog() -> Response:
            return JSONResponse(self.backlog) if self.backlog is not None else Response(None, 404)

        @router.get("/health/provider", response_model=None)
        async def provider() -> Response:
            if self.provider is None:
                return Response(None, 404)
            return JSONResponse(self.provider)

        app = FastAPI()
        app.include_router(router)
        return app


class RoutingTransport(httpx.AsyncBaseTransport):
    """Routes each request to the ASGI app registered for its host; other hosts refuse."""

    def __init__(self, apps: dict[str, FastAPI]) -> None:
        self._transports = {host: httpx.ASGITransport(app=app) for host, app in apps.items()}
        self.down: set[str] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        transport = self._transports.get(host)
        if transport is None or host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        return await transport.handle_async_request(request)


def fleet(*components: FakeComponent) -> tuple[dict[str, str], httpx.AsyncClient, RoutingTransport]:
    """Targets ``{name: http://<name>.test/components/<name>}`` and a client that reaches them."""
    apps = {f"{c.name}.test": c.app(f"/components/{c.name}") for c in components}
    transport = RoutingTransport(apps)
    targets = {c.name: f"http://{c.name}.test/components/{c.name}" for c in components}
    return targets, httpx.AsyncClient(transport=transport), transport


class RecordingChannel:
    def __init__(self, name: str, *, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.sent: list[Notice] = []

    async def send(self, notice: Notice) -> None:
        if self.fail:
            raise ChannelError(f"{self.name} is down")
        self.sent.append(notice)


class NoSleep:
    """The backoff sleep, recorded instead of waited."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
