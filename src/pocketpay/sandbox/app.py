"""``create_app``: the sandbox PSP as a FastAPI app (Stripe ``/v1`` subset, ops, health)."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from pocketpay.kit.clock import Clock
from pocketpay.kit.health import CheckResult, Health, Status, health_router
from pocketpay.kit.httpapp import RequestContextMiddleware
from pocketpay.sandbox.errors import StripeError, api_error, unrecognized_url
from pocketpay.sandbox.faults import FaultMiddleware, FaultsUpdate
from pocketpay.sandbox.routes import v1_router
from pocketpay.sandbox.sandbox import Sandbox
from pocketpay.settings import SandboxSettings

log = structlog.get_logger(__name__)


def create_app(settings: SandboxSettings, clock: Clock, *, webhook_url: str) -> FastAPI:
    """The sandbox app; ``app.state.sandbox`` is its ``Sandbox``.

    ``webhook_url`` is where signed events go (empty: recorded only). When this app is
    mounted under another, its lifespan does not run: call ``sandbox.start()`` and
    ``sandbox.aclose()`` (or enter ``sandbox.lifespan()``) from the parent's lifespan.
    """
    sandbox = Sandbox(settings, clock, webhook_url=webhook_url)
    app = FastAPI(
        title="PocketPay sandbox PSP",
        lifespan=sandbox.lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.sandbox = sandbox
    _install_error_handlers(app)
    app.include_router(v1_router(sandbox))
    if settings.ops_enabled:  # off unless asked for: anyone could switch faults on
        app.include_router(ops_router(sandbox))
    app.include_router(health_router(_health(sandbox)))
    app.add_middleware(FaultMiddleware, faults=sandbox.faults)
    app.add_middleware(RequestContextMiddleware, component="sandbox")
    return app


def ops_router(sandbox: Sandbox) -> APIRouter:
    """``/_sandbox``: faults and settlement for tests (no API key), mounted only when
    ``POCKETPAY_SANDBOX__OPS_ENABLED=true``."""
    router = APIRouter(prefix="/_sandbox", tags=["sandbox"])

    @router.get("/faults")
    async def get_faults() -> dict[str, Any]:
        return sandbox.faults.snapshot()

    @router.post("/faults")
    async def set_faults(change: FaultsUpdate) -> dict[str, Any]:
        sandbox.faults.update(change)
        log.info("sandbox.faults", **sandbox.faults.snapshot())
        return sandbox.faults.snapshot()

    @router.delete("/faults")
    async def reset_faults() -> dict[str, Any]:
        sandbox.faults.reset()
        return sandbox.faults.snapshot()

    @router.post("/tick")
    async def tick() -> dict[str, Any]:
        return {"available": await sandbox.tick()}

    return router


def _health(sandbox: Sandbox) -> Health:
    health = Health("sandbox")

    async def faults() -> CheckResult:
        status: Status = "degraded" if sandbox.faults.active else "ok"
        return CheckResult(status, sandbox.faults.snapshot())

    async def webhooks() -> CheckResult:
        deliveries = sandbox.webhooks.deliveries.values()
        failed = sum(1 for d in deliveries if d.status == "failed")
        detail = {
            "url": sandbox.webhooks.url or None,
            "events": len(sandbox.events),
            "pending": sandbox.webhooks.pending,
            "failed": failed,
        }
        return CheckResult("ok", detail)

    health.add("faults", faults, critical=False)
    health.add("webhooks", webhooks, critical=False, in_readiness=False)
    return health


def _install_error_handlers(app: FastAPI) -> None:
    async def stripe_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StripeError)
        return exc.response()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code in (404, 405):
            return unrecognized_url(request.method, request.url.path, exc.status_code).response()
        return JSONResponse(
            {"error": {"type": "invalid_request_error", "message": exc.detail}},
            status_code=exc.status_code,
        )

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("sandbox.unhandled", path=request.url.path, exc_info=exc)
        return api_error("An unknown error occurred in the sandbox.").response()

    app.add_exception_handler(StripeError, stripe_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
