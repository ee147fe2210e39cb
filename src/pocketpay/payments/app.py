"""The payments component: the authorization consumer, settlement and reconciliation jobs,
health checks (including the PSP behind its breaker), and the app serving its internal API
(``payments.routes``)."""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.bus import Bus, Envelope
from pocketpay.kit.clock import Clock
from pocketpay.kit.component import Component, internal_auth
from pocketpay.kit.health import CheckResult, Health, health_router
from pocketpay.kit.httpapp import new_app
from pocketpay.kit.jobs import PeriodicJob, full_pass
from pocketpay.kit.metrics import PAYMENTS_STUCK_ATTEMPTS
from pocketpay.kit.outbox import OutboxRelay
from pocketpay.kit.tracing import traced_consumer
from pocketpay.ledger.client import LedgerClient
from pocketpay.payments import attempts, routes
from pocketpay.payments.admission import SAMPLE_SECONDS, Admission
from pocketpay.payments.api import PaymentsApi, provider_status
from pocketpay.payments.flows import Ctx, Flows
from pocketpay.payments.models import outbox
from pocketpay.payments.providers.base import Provider
from pocketpay.settings import Settings

log = structlog.get_logger(__name__)

PASS_LIMIT = 100  # objects one settlement or reconciliation pass handles


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
        body = await provider_status(provider)
        # The PSP never makes payments "not ready": an open breaker or a failing ping degrades.
        return CheckResult("ok" if body.status == "ok" else "degraded", body.model_dump())

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
    admission = Admission(engine, settings.psp.max_unauthorized)
    api = PaymentsApi(engine, clock, flows, provider, admission)
    app.include_router(
        routes.build_router(api),
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
    settle = PeriodicJob(
        "payments-settle", lambda: full_pass(flows.settle_due(), PASS_LIMIT), interval
    )
    flows.ctx.wake_settle = settle.wake
    recover = PeriodicJob(
        "payments-reconcile", lambda: full_pass(flows.reconcile(), PASS_LIMIT), interval
    )
    # Sent payouts whose webhooks were lost: asked again (``flows.payouts.poll_due``).
    poll = PeriodicJob(
        "payments-payouts", lambda: full_pass(flows.poll_payouts(), PASS_LIMIT), interval
    )
    # Disputes whose webhooks were lost: the PSP's recent ones listed (``flows.disputes.sweep``).
    window = settings.psp.dispute_sweep_window_days * 86400

    async def sweep_disputes() -> bool:
        await flows.sweep_disputes(window)
        return False  # one pass lists them all: nothing left for at once

    sweep = PeriodicJob("payments-disputes", sweep_disputes, settings.psp.dispute_sweep_seconds)
    jobs = [settle, recover, poll, sweep]
    if admission.limit:
        jobs.append(PeriodicJob("payments-admission", admission.sample, SAMPLE_SECONDS))
    return Component(
        "payments",
        app,
        health,
        on_start=[relay.start, *(job.start for job in jobs)],
        on_stop=[*(job.stop for job in reversed(jobs)), relay.stop],
        state={"api": api, "flows": flows, "relay": relay},
    )
