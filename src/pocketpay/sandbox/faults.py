"""Injected faults for the ``/v1`` API: latency, random 500s, hangs and full outages.

Switch them from Python (``sandbox.faults.outage = True`` or ``sandbox.faults.update(...)``)
or over HTTP (``POST /_sandbox/faults``). A hang ends when the client goes away, when the
``timeout`` fault is switched off, or after ``timeout_seconds``; only in the last two cases is
the request then processed.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pocketpay.kit.tasks import cancel_and_wait
from pocketpay.sandbox.errors import api_error

_POLL_SECONDS = 0.02


class FaultsUpdate(BaseModel):
    """Body of ``POST /_sandbox/faults``; fields left out keep their current value."""

    latency_ms: int | None = Field(default=None, ge=0, le=600_000)
    error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    timeout: bool | None = None
    outage: bool | None = None


class Faults:
    """The switchable fault state; plain attributes, read on every ``/v1`` request."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.latency_ms = 0
        self.error_rate = 0.0
        self.timeout = False
        self.outage = False
        self.timeout_seconds = 30.0
        self.rng = rng or random.Random()
        self.hanging = 0  # requests currently held by the ``timeout`` fault

    def update(self, change: FaultsUpdate) -> None:
        for name, value in change.model_dump(exclude_none=True).items():
            setattr(self, name, value)

    def reset(self) -> None:
        self.latency_ms, self.error_rate, self.timeout, self.outage = 0, 0.0, False, False

    @property
    def active(self) -> bool:
        return bool(self.latency_ms or self.error_rate or self.timeout or self.outage)

    def snapshot(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "error_rate": self.error_rate,
            "timeout": self.timeout,
            "outage": self.outage,
        }

    def roll_error(self) -> bool:
        return self.error_rate > 0 and self.rng.random() < self.error_rate


class FaultMiddleware:
    """Applies ``Faults`` to requests whose path (below the mount point) starts with /v1/."""

    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _route_path(scope).startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        faults = self.faults
        if faults.outage:
            await api_error("The sandbox is in an outage (fault injection).", 503).response()(
                scope, receive, send
            )
            return
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.timeout:
            replay = await _hang(faults, receive)
            if replay is None:
                return  # the client gave up; nothing was processed
            receive = replay
        if faults.roll_error():
            await api_error("An unknown error occurred (fault injection).").response()(
                scope, receive, send
            )
            return
        await self.app(scope, receive, send)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


async def _hang(faults: Faults, receive: Receive) -> Receive | None:
    """Wait out the hang; a receive that replays the buffered body, or None on disconnect."""
    buffered: list[Message] = []
    watcher = asyncio.ensure_future(_read_until_disconnect(receive, buffered))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + faults.timeout_seconds
    faults.hanging += 1
    try:
        while faults.timeout and not watcher.done() and loop.time() < deadline:
            await asyncio.sleep(_POLL_SECONDS)
    finally:
        faults.hanging -= 1
        await cancel_and_wait(watcher)
    if any(m["type"] == "http.disconnect" for m in buffered):
        return None
    return _replaying(buffered, receive)


async def _read_until_disconnect(receive: Receive, buffered: list[Message]) -> None:
    while True:
        message = await receive()
        buffered.append(message)
        if message["type"] == "http.disconnect":
            return


def _replaying(buffered: list[Message], receive: Receive) -> Receive:
    pending = list(buffered)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
