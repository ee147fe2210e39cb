"""The payments internal API: thin routes over the service, the flows and the attempts.
Every answer is a model of ``payments.schemas`` (what ``PaymentsClient`` returns). Mounted
by ``payments.app`` behind the internal token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.clock import Clock
from pocketpay.kit.errors import NotFound
from pocketpay.kit.failpoints import failpoint
from pocketpay.payments import attempts, service
from pocketpay.payments.flows import Flows
from pocketpay.payments.providers.base import Provider
from pocketpay.payments.schemas import (
    AttemptOperation,
    CaptureIn,
    Payment,
    PaymentCreateInternal,
    PaymentList,
    ProviderHealth,
    PspEventResult,
    Refund,
    RefundCreateInternal,
    StuckAttempt,
    StuckAttempts,
    StuckRetried,
    Timeline,
    TimelineEntry,
)
from pocketpay.payments.states import PaymentStatus


def build_router(engine: AsyncEngine, clock: Clock, flows: Flows, provider: Provider) -> APIRouter:
    r = APIRouter()

    @r.post("/payments", status_code=202, response_model=Payment)
    async def create(body: PaymentCreateInternal) -> Payment:
        async with engine.begin() as conn:
            row = await service.create(
                conn,
                idempotency_key=body.idempotency_key,
                owner_id=body.owner_id,
                amount_minor=body.amount_minor,
                currency=body.currency,
                payment_method=body.payment_method,
                capture_method=body.capture_method,
                description=body.description,
                metadata=body.metadata,
                provider=provider.name,
                now=clock.now(),
            )
        flows.relay.notify()
        await failpoint("payments.create.after_commit")
        return Payment.model_validate(service.payment_view(row))

    @r.get("/payments", response_model=PaymentList)
    async def list_payments(
        owner_id: str,
        status: PaymentStatus | None = None,
        limit: int = Query(20, ge=1, le=100),
        starting_after: str | None = None,
    ) -> PaymentList:
        async with engine.connect() as conn:
            rows, more = await service.list_for(
                conn, owner_id, status.value if status else None, limit, starting_after
            )
        data = [Payment.model_validate(service.payment_view(p)) for p in rows]
        return PaymentList(data=data, has_more=more, next_cursor=data[-1].id if more else None)

    @r.get("/payments/{payment_id}", response_model=Payment)
    async def get(payment_id: str, owner_id: str) -> Payment:
        async with engine.connect() as conn:
            row = await service.get(conn, payment_id, owner_id)
        return Payment.model_validate(service.payment_view(row))

    @r.get("/payments/{payment_id}/events", response_model=Timeline)
    async def events(payment_id: str, owner_id: str) -> Timeline:
        async with engine.connect() as conn:
            await service.get(conn, payment_id, owner_id)
            rows = await service.events_of(conn, payment_id)
        return Timeline(data=[TimelineEntry.model_validate(e) for e in rows])

    @r.post("/payments/{payment_id}/capture", response_model=Payment)
    async def capture(payment_id: str, owner_id: str, body: CaptureIn) -> Payment:
        return Payment.model_validate(await flows.capture(owner_id, payment_id, body.amount_minor))

    @r.post("/payments/{payment_id}/cancel", response_model=Payment)
    async def cancel(payment_id: str, owner_id: str) -> Payment:
        return Payment.model_validate(await flows.cancel(owner_id, payment_id))

    @r.post("/payments/{payment_id}/refunds", status_code=202, response_model=Refund)
    async def refund(payment_id: str, owner_id: str, body: RefundCreateInternal) -> Refund:
        view = await flows.refund(
            owner_id, payment_id, body.idempotency_key, body.amount_minor, body.reason
        )
        return Refund.model_validate(view)

    @r.get("/refunds/{refund_id}", response_model=Refund)
    async def get_refund(refund_id: str, owner_id: str) -> Refund:
        async with engine.connect() as conn:
            row = await service.get_refund(conn, refund_id, owner_id)
        return Refund.model_validate(service.refund_view(row))

    @r.post("/psp-events", response_model=PspEventResult)
    async def psp_event(event: dict[str, Any]) -> PspEventResult:
        return PspEventResult.model_validate(await flows.handle_psp_event(event))

    @r.get("/health/provider", response_model=ProviderHealth)
    async def provider_health() -> ProviderHealth:
        return await provider_status(provider)

    r.include_router(_stuck_router(engine, clock))
    return r


def _stuck_router(engine: AsyncEngine, clock: Clock) -> APIRouter:
    """Operator data: attempts the reconciler gave up on. Only the gateway's admin API (role
    admin) calls these; like every internal route they need the internal token."""
    r = APIRouter()

    @r.get("/stuck", response_model=StuckAttempts)
    async def stuck(limit: int = Query(100, ge=1, le=500)) -> StuckAttempts:
        async with engine.connect() as conn:
            rows = await attempts.stuck(conn, limit)
            total = await attempts.stuck_count(conn)
        return StuckAttempts(data=[StuckAttempt.model_validate(row) for row in rows], total=total)

    @r.post("/stuck/{object_id}/{operation}/retry", response_model=StuckRetried)
    async def retry(object_id: str, operation: AttemptOperation) -> StuckRetried:
        async with engine.begin() as conn:
            done = await attempts.retry(conn, object_id, operation, clock.now())
        if not done:
            raise NotFound(
                f"No stuck {operation} attempt for {object_id}.", code="payments.attempt_not_stuck"
            )
        return StuckRetried(object_id=object_id, operation=operation, status="pending", tries=0)

    return r


async def provider_status(provider: Provider) -> ProviderHealth:
    """A PSP ping around the breaker (idle pings neither open nor close it); an open breaker
    is degraded, never down. Served at ``/health/provider`` and used by the readiness check."""
    stats = provider.stats()
    try:
        latency = await provider.ping()
        status = "ok"
    except Exception as exc:
        latency, status = 0.0, "degraded" if stats["breaker"] != "closed" else "fail"
        stats["error"] = str(exc)[:200]
    if provider.stats()["breaker"] != "closed":
        status = "degraded"
    return ProviderHealth.model_validate(
        {
            "status": status,
            "latency_ms": round(latency, 2),
            **stats,
            "breaker": provider.stats()["breaker"],
        }
    )
