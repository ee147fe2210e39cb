"""The billing component: the scheduler (renewals, dunning, expiries, resumed charges), the
consumer of payments' outcomes for invoice charges, the outbox relay, health, and the app
serving its internal API (``billing.routes``)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.billing import routes
from pocketpay.billing.api import BillingApi
from pocketpay.billing.clock import BillingClock
from pocketpay.billing.flows import PASS_LIMIT, BillingCtx, BillingFlows
from pocketpay.billing.models import inbox, outbox
from pocketpay.kit.bus import Bus, Envelope
from pocketpay.kit.clock import Clock
from pocketpay.kit.component import Component, internal_auth
from pocketpay.kit.health import Health, health_router
from pocketpay.kit.httpapp import new_app
from pocketpay.kit.jobs import PeriodicJob, full_pass
from pocketpay.kit.outbox import OutboxRelay, claim_inbox
from pocketpay.kit.tracing import traced_consumer
from pocketpay.ledger.client import LedgerClient
from pocketpay.payments.client import PaymentsClient
from pocketpay.settings import Settings

OUTCOMES = {"payments.payment.captured": True, "payments.payment.failed": False}


def build(
    settings: Settings,
    engine: AsyncEngine,
    clock: Clock,
    bus: Bus,
    payments: PaymentsClient,
    ledger: LedgerClient,
) -> Component:
    relay = OutboxRelay(
        engine,
        outbox,
        bus,
        clock,
        source="billing",
        poll_seconds=settings.bus.relay_poll_seconds,
        batch=settings.bus.relay_batch,
        publish_max_failures=settings.bus.publish_max_failures,
    )
    b = settings.billing
    flows = BillingFlows(
        BillingCtx(
            engine,
            BillingClock(engine, clock),
            payments,
            ledger,
            relay,
            schedule_days=tuple(b.dunning_schedule_days),
            final_state=b.dunning_final_state,
            incomplete_expire_hours=b.incomplete_expire_hours,
            resume_after_seconds=b.resume_after_seconds,
            max_concurrent_charges=b.max_concurrent_charges,
        )
    )
    api = BillingApi(
        engine,
        flows,
        payments,
        test_clock=b.test_clock and settings.psp.provider == "sandbox",
        issuer=b.issuer_name,
    )
    health = Health("billing")
    health.add_db(engine)
    health.add_bus(bus)
    app = new_app("billing", title="PocketPay billing (internal)")
    app.include_router(health_router(health))
    app.include_router(
        routes.build_router(api),
        dependencies=[internal_auth(settings.resolved_internal_token())],
    )

    async def on_payment(env: Envelope) -> None:
        captured = OUTCOMES.get(env.type)
        if captured is None or env.data.get("purpose") != "invoice":
            return
        await flows.ctx.clock.refresh()  # before the transaction: SQLite has one connection
        async with engine.begin() as conn:
            if not await claim_inbox(conn, inbox, env.id, env.type, flows.ctx.clock.wall.now()):
                return
            await flows.on_payment(conn, env.data, captured)
        relay.notify()

    bus.subscribe("billing", list(OUTCOMES), traced_consumer("billing", on_payment))
    scheduler = PeriodicJob(
        "billing-scheduler",
        lambda: full_pass(flows.run_due(), PASS_LIMIT),
        b.scheduler_interval_seconds,
    )
    return Component(
        "billing",
        app,
        health,
        on_start=[relay.start, scheduler.start],
        on_stop=[scheduler.stop, relay.stop],
        state={"api": api, "flows": flows, "relay": relay},
    )
