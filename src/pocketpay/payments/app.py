"""The payments component: internal API, the authorization consumer, settlement and
reconciliation jobs, health checks (including the PSP behind its breaker)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import structlog
from fastapi import APIRouter, Query
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.bus import Bus, Envelope
from pocketpay.kit.clock import Clock
from pocketpay.kit.component import Component, internal_auth
from pocketpay.kit.errors import NotFound
from pocketpay.kit.failpoints import failpoint
from pocketpay.kit.health import CheckResult, Health, health_router
from pocketpay.kit.httpapp import new_app
from pocketpay.kit.jobs import PeriodicJob
from pocketpay.kit.metrics import PAYMENTS_STUCK_ATTEMPTS
from pocketpay.kit.outbox import OutboxRelay
from pocketpay.kit.tracing import traced_consumer
from pocketpay.ledger.client import LedgerClient
from pocketpay.payments import attempts, service
from pocketpay.payments.flows import Ctx, Flows
from pocketpay.payments.models import outbox
from pocketpay.payments.providers.base import Provider
from pocketpay.payments.schemas import (
    AttemptOperation,
    CaptureIn,
    PaymentCreateInternal,
    RefundCreateInternal,
    StuckAttempt,
    StuckAttempts,
    StuckRetried,
)
from pocketpay.payments.states import PaymentStatus
from pocketpay.settings import Settings

log = structlog.get_logger(__name__)

PASS_LIMIT = 100  # objects one settlement or reconciliation pass handles


def _router(engine: AsyncEngine, clock: Clock, flows: Flows, provider: Provider) -> APIRouter:
    r = APIRouter()

    @r.post("/payments", status_code=202)
    async def create(body: PaymentCreateInternal) -> dict[str, Any]:
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
        return service.payment_view(row)

    @r.get("/payments")
    async def list_payments(
        owner_id: str,
        status: PaymentStatus | None = None,
        limit: int = Query(20, ge=1, le=100),
        starting_after: str | None = None,
    ) -> dict[str, Any]:
        async with engine.connect() as conn:
            rows, more = await service.list_for(
                conn, owner_id, status.value if status else None, limit, starting_after
            )
        data = [service.payment_view(p) for p in rows]
        return {"data": data, "has_more": more, "next_cursor": data[-1]["id"] if more else None}

    @r.get("/payments/{payment_id}")
    async def get(payment_id: str, owner_id: str) -> dict[str, Any]:
        async with engine.connect() as conn:
            return service.payment_view(await service.get(conn, payment_id, owner_id))

    @r.get("/payments/{payment_id}/events")
    async def events(payment_id: str, owner_id: str) -> dict[str, Any]:
        async with engine.connect() as conn:
            await service.get(conn, payment_id, owner_id)
            return {"data": await service.events_of(conn, payment_id)}

    @r.post("/payments/{payment_id}/capture")
    async def capture(payment_id: str, owner_id: str, body: CaptureIn) -> dict[str, Any]:
        return await flows.capture(owner_id, payment_id, body.amount_minor)

    @r.post("/payments/{payment_id}/cancel")
    async def cancel(payment_id: str, owner_id: str) -> dict[str, Any]:
        return await flows.cancel(owner_id, payment_id)

    @r.post("/payments/{payment_id}/refunds", status_code=202)
    async def refund(payment_id: str, owner_id: str, body: RefundCreateInternal) -> dict[str, Any]:
        return await flows.refund(
            owner_id, payment_id, body.idempotency_key, body.amount_minor, body.reason
        )

    @r.get("/refunds/{refund_id}")
    async def get_refund(refund_id: str, owner_id: str) -> dict[str, Any]:
        async with engine.connect() as conn:
            return service.refund_view(await service.get_refund(conn, refund_id, owner_id))

    @r.post("/psp-events")
    async def psp_event(event: dict[str, Any]) -> dict[str, str]:
        return await flows.handle_psp_event(event)

    @r.get("/health/provider")
    async def provider_health() -> dict[str, Any]:
        return await _provider_status(provider)

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


async def _provider_status(provider: Provider) -> dict[str, Any]:
    stats = provider.stats()
    try:
        latency = await provider.ping()
        status = "ok"
    except Exception as exc:
        latency, status = 0.0, "degraded" if stats["breaker"] != "closed" else "fail"
        stats["error"] = str(exc)[:200]
    if provider.stats()["breaker"] != "closed":
        status = "degraded"
    return {
        "status": status,
        "latency_ms": round(latency, 2),
        **stats,
        "breaker": provider.stats()["breaker"],
    }


def build(
    settings: Settings,
    engine: AsyncEngine,
    clock: Clock,
    bus: Bus,
    provider: Provider,
    ledger: LedgerClient,
) -> Component:
    relay = OutboxRelay(
        engine,
        outbox,
        bus,
        clock,
        source="payments",
        poll_seconds=settings.bus.relay_poll_seconds,
        batch=settings.bus.relay_batch,
        publish_max_failures=settings.bus.publish_max_failures,
    )
    flows = Flows(
        Ctx(
            engine,
            clock,
            provider,
            ledger,
            relay,
            retry_seconds=settings.psp.attempt_retry_seconds,
            settle_poll_seconds=settings.psp.settle_poll_seconds,
            max_tries=settings.psp.attempt_max_tries,
        )
    )
    health = Health("payments")

    async def psp_check() -> CheckResult:
        body = await _provider_status(provider)
        # The PSP never makes payments "not ready": an open breaker or a failing ping degrades.
        return CheckResult("ok" if body["status"] == "ok" else "degraded", body)

    health.add_db(engine)
    health.add_bus(bus)

    async def stuck_check() -> CheckResult:
        async with engine.connect() as conn:
            n = await attempts.stuck_count(conn)
        PAYMENTS_STUCK_ATTEMPTS.set(n)
        # Payments keep working; an operator must look at the stuck objects (admin API).
        return CheckResult("degraded" if n else "ok", {"stuck": n})

    health.add("stuck_attempts", stuck_check, critical=False, timeout_seconds=1.0)
    health.add(
        "provider",
        psp_check,
        critical=False,
        timeout_seconds=settings.psp.ping_timeout_seconds + 0.5,
    )
    app = new_app("payments", title="PocketPay payments (internal)")
    app.include_router(health_router(health))
    app.include_router(
        _router(engine, clock, flows, provider),
        dependencies=[internal_auth(settings.resolved_internal_token())],
    )

    async def on_created(env: Envelope) -> None:
        await flows.authorize(env.data["payment_id"])

    bus.subscribe(
        "payments-processor",
        ["payments.payment.created"],
        traced_consumer("payments-processor", on_created),
    )
    interval = settings.psp.settle_poll_seconds
    settle = PeriodicJob("payments-settle", lambda: _more(flows.settle_due()), interval)
    recover = PeriodicJob("payments-reconcile", lambda: _more(flows.reconcile()), interval)
    return Component(
        "payments",
        app,
        health,
        on_start=[relay.start, settle.start, recover.start],
        on_stop=[recover.stop, settle.stop, relay.stop],
        state={"flows": flows, "relay": relay, "jobs": (settle, recover)},
    )


async def _more(work: Awaitable[int]) -> bool:
    """A pass that did a full batch has more to do."""
    return await work >= PASS_LIMIT
