"""What a component hands the runtime: its internal app, health checks and lifecycle hooks;
the token that guards internal APIs; the health-only view of a component app."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Header
from fastapi.routing import iter_route_contexts
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

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


INTERNAL_TOKEN_HEADER = "X-Internal-Token"


def internal_auth(token: str) -> Any:
    """A dependency that requires ``X-Internal-Token`` to equal ``token``, always.

    There is no open mode: an empty token is a wiring mistake (pass
    ``Settings.resolved_internal_token()``, which generates one), not "no auth".
    """
    if not token:
        raise ValueError("internal_auth needs a token: use Settings.resolved_internal_token()")
    expected = token.encode()

    async def check(x_internal_token: str = Header(default="")) -> None:
        if not secrets.compare_digest(x_internal_token.encode(), expected):
            raise Unauthorized(
                "internal endpoint: missing or wrong X-Internal-Token", code="auth.internal_token"
            )

    return Depends(check)


# What a component exposes to operators and probes: kit.health.health_router's routes plus the
# component's own ``/health/...`` signals (the ledger's backlog, payments' PSP status), which
# the monitor polls.
_HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/health", "/live", "/ready", "/metrics"})


def route_paths(app: FastAPI) -> list[str]:
    """Every HTTP route path of ``app``, routers included with prefixes resolved."""
    paths = {c.path for c in iter_route_contexts(app.routes) if c.path and c.methods}
    return sorted(paths)


def health_paths(app: FastAPI) -> list[str]:
    """The health routes of a component app (fixed paths only, never a path parameter)."""
    return [
        p
        for p in route_paths(app)
        if (p in _HEALTH_PATHS or p.startswith("/health/")) and "{" not in p
    ]


class _WithToken:
    """Calls ``app`` with ``X-Internal-Token`` set (any the caller sent is dropped)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.header = (INTERNAL_TOKEN_HEADER.lower().encode(), token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != self.header[0]]
        await self.app({**scope, "headers": [*headers, self.header]}, receive, send)


def health_only(app: FastAPI, token: str) -> Router:
    """An app serving only the health routes of component ``app`` (GET and HEAD), for mounting
    on a public port; every other path is 404, so the internal API stays unreachable.

    The component's own ``/health/...`` routes sit behind the internal token like the rest
    of its internal API; this view presents the token for exactly those read-only paths.
    """
    if not token:
        raise ValueError("health_only needs the internal token")
    forward = _WithToken(app, token)
    return Router(routes=[Route(p, forward, methods=["GET"]) for p in health_paths(app)])
