"""``create_app``: the sandbox PSP as a FastAPI app (Stripe ``/v1`` subset, ops, health)."""

from __future__ import annotations

from typing import Any, Literal

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from pocketpay.kit.clock import Clock
from pocketpay.kit.health import CheckResult, Health, Status, health_router
from pocketpay.kit.httpapp import RequestContextMiddleware
from pocketpay.sandbox import disputes
from pocketpay.sandbox.errors import StripeError, api_error, invalid_request, unrecognized_url
from pocketpay.sandbox.faults import FaultMiddleware, FaultsUpdate
from pocketpay.sandbox.routes import v1_router
from pocketpay.sandbox.sandbox import Sandbox
from pocketpay.sandbox.state import Store
from pocketpay.settings import SandboxSettings

log = structlog.get_logger(__name__)

DisputeReason = Literal[
    "bank_cannot_process",
    "credit_not_processed",
    "customer_initiated",
    "debit_not_authorized",
    "duplicate",
    "fraudulent",
    "general",
    "incorrect_account_details",
    "insufficient_funds",
    "product_not_received",
    "product_unacceptable",
    "subscription_canceled",
    "unrecognized",
]


class DisputeRequest(BaseModel):
    payment_intent: str
    reason: DisputeReason = "fraudulent"
    inquiry: bool = False


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

    @router.post("/disputes")
    async def open_dispute(body: DisputeRequest) -> JSONResponse:
        """Dispute a captured payment intent's charge, as a cardholder's bank would."""

        def op(store: Store) -> dict[str, Any]:
            pi = store.payment_intent(body.payment_intent)
            if pi.latest_charge is None:
                raise invalid_request("This payment intent has no charge.", param="payment_intent")
            charge = store.charge(pi.latest_charge)
            found = disputes.open_for_charge(
                store, charge, reason=body.reason, inquiry=body.inquiry
            )
            return found.to_stripe()

        outcome = await sandbox.execute(op)
        return JSONResponse(outcome.body, status_code=outcome.status)

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
