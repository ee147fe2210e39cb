"""What a component hands the runtime: its internal app, health checks and lifecycle hooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Header

from pocketpay.kit.errors import Unauthorized
from pocketpay.kit.health import Health

Hook = Callable[[], Awaitable[None]]


@dataclass
class Component:
    name: str
    app: FastAPI
    health: Health
    on_start: list[Hook] = field(default_factory=list)
    on_stop: list[Hook] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    async def start(self) -> None:
        for hook in self.on_start:
            await hook()

    async def stop(self) -> None:
        for hook in reversed(self.on_stop):
            await hook()


def internal_auth(token: str) -> Any:
    """A dependency that requires ``X-Internal-Token`` when a token is configured."""

    async def check(x_internal_token: str = Header(default="")) -> None:
        if token and x_internal_token != token:
            raise Unauthorized(
                "internal endpoint: missing or wrong X-Internal-Token", code="auth.internal_token"
            )

    return Depends(check)
