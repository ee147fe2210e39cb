"""Helpers for the sandbox tests: real uvicorn servers in the test's loop, a webhook receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import stripe
import uvicorn
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from pocketpay.kit.clock import ManualClock
from pocketpay.sandbox import Sandbox, create_app
from pocketpay.settings import SandboxSettings

API_KEY = "sk_test_sandbox_suite_key"
SECRET = "whsec_sandbox_suite_secret"
SETTLE_DELAY = 3.0


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """Serve ``app`` on an ephemeral 127.0.0.1 port in this loop; yields its base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_level="warning",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("uvicorn did not start")
        await asyncio.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@dataclass
class Received:
    body: bytes
    signature: str


@dataclass
class Receiver:
    """A webhook endpoint that records what it gets; ``fail_next`` answers 500 that often."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    fail_next: int = 0

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            if self.fail_next > 0:
                self.fail_next -= 1
                return Response(status_code=500)
            self.received.append(Received(body, request.headers.get("stripe-signature", "")))
            return Response(status_code=200)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


@dataclass
class Running:
    app: FastAPI
    sandbox: Sandbox
    url: str  # base of the Stripe API, i.e. without /v1


def make_client(base: str, http: stripe.HTTPClient, key: str = API_KEY) -> stripe.StripeClient:
    return stripe.StripeClient(
        key, base_addresses={"api": base}, http_client=http, max_network_retries=0
    )


@asynccontextmanager
async def sandbox_up(
    settings: SandboxSettings, clock: ManualClock
) -> AsyncIterator[tuple[Sandbox, stripe.StripeClient, str]]:
    """One life of a sandbox process: a fresh app on the settings' database."""
    app = create_app(settings, clock, webhook_url="")
    sandbox: Sandbox = app.state.sandbox
    http = stripe.HTTPXClient()
    try:
        async with serving(app) as url:
            yield sandbox, make_client(url, http), url
    finally:
        await http.close_async()
        await sandbox.aclose()
