"""What every group of public routes (``*_routes.py``) takes from the router that
``routes.build_router`` builds: the router, the gateway's clients, the principal dependency,
``once`` (idempotent writes), the Idempotency-Key header, the list window and path id
checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from pocketpay.kit.listing import Page


@dataclass(frozen=True)
class RouteKit:
    r: APIRouter
    gw: Any  # routes.Gateway (it imports the route groups: named here, not imported)
    principal: Any  # the FastAPI dependency answering the caller's Principal
    once: Callable[..., Awaitable[JSONResponse]]
    idem_header: Any  # the Idempotency-Key header parameter
    page_of: Callable[..., Callable[..., Page]]
    object_id: Callable[[str, str], str]
