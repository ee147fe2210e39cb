"""Test parts for notifications: a real HTTP receiver, a real SMTP server, a clock that
jumps forward, and a stack with notifications pointed at them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from pocketpay.kit.clock import SystemClock
from tests.support import Stack, eventually, free_port, running_stack, serving

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class JumpingClock(SystemClock):
    """Wall time plus an offset a test moves forward (retries and 3-day windows, no sleep)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return super().now() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@dataclass
class Receiver:
    """A webhook receiver: answers the scripted statuses in turn (then the last one), keeps
    every request."""

    statuses: list[int] = field(default_factory=lambda: [200])
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: Request) -> PlainTextResponse:
        body = await request.body()
        self.requests.append((dict(request.headers), body))
        status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
        return PlainTextResponse(f"answer {len(self.requests)}", status_code=status)

    async def count(self, n: int) -> None:
        async def reached() -> bool:
            return len(self.requests) >= n

        await eventually(reached)
        assert len(self.requests) == n, [json.loads(b)["type"] for _, b in self.requests]


@asynccontextmanager
async def receiver(*statuses: int) -> AsyncIterator[Receiver]:
    r = Receiver(list(statuses) or [200])
    app = Starlette(routes=[Route("/hook", r.handle, methods=["POST"])])
    async with serving(app, free_port()) as base:
        r.url = f"{base}/hook"
        yield r


@dataclass
class Mailbox:
    mails: list[Envelope] = field(default_factory=list)
    refuse: bool = False  # answer every recipient "550 no such mailbox"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.mails.append(envelope)
        return "250 Message accepted"

    def texts(self) -> list[str]:
        out = []
        for m in self.mails:
            assert isinstance(m.content, bytes)
            out.append(m.content.decode(errors="replace"))
        return out


@asynccontextmanager
async def smtp() -> AsyncIterator[tuple[Mailbox, int]]:
    box = Mailbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(box, hostname="mail.test"), "127.0.0.1", 0)
    try:
        yield box, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


# Short retry steps, so a retried webhook's timestamp stays within the 5 minutes a
# Standard Webhooks verifier accepts while the clock jumps.
FAST = {
    "allow_private_targets": True,
    "delivery_interval_seconds": 0.05,
    "webhook_retry_seconds": [5.0, 10.0],
}


@asynccontextmanager
async def notifying_stack(
    backend: str, tmp_path: Path, clock: JumpingClock, smtp_port: int, **notifications: Any
) -> AsyncIterator[Stack]:
    settings = FAST | {"smtp_port": smtp_port} | notifications
    async with running_stack(backend, tmp_path, clock=clock, notifications=settings) as s:
        yield s


def wake(stack: Stack) -> None:
    stack.runtime.components["notifications"].state["job"].wake()


async def endpoint(stack: Stack, user: dict[str, Any], url: str, events: list[str]) -> Any:
    r = await stack.post(user, "/api/v1/webhook-endpoints", {"url": url, "events": events})
    assert r.status_code == 201, r.text
    return r.json()


async def deliveries(stack: Stack, user: dict[str, Any], endpoint_id: str) -> list[Any]:
    r = await stack.get(user, f"/api/v1/webhook-endpoints/{endpoint_id}/deliveries")
    assert r.status_code == 200, r.text
    data: list[Any] = r.json()["data"]
    return data
