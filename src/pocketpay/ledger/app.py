"""The ledger component: event consumer, health checks, and the app serving its internal API
(``ledger.routes``)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.bus import Bus
from pocketpay.kit.clock import Clock
from pocketpay.kit.component import Component, internal_auth
from pocketpay.kit.health import CheckResult, Health, health_router
from pocketpay.kit.httpapp import new_app
from pocketpay.kit.outbox import OutboxRelay
from pocketpay.kit.tracing import traced_consumer
from pocketpay.ledger import api as api_module
from pocketpay.ledger import routes
from pocketpay.ledger.consumers import SUBJECTS, LedgerConsumer
from pocketpay.ledger.models import outbox
from pocketpay.settings import Settings

DURABLE = api_module.DURABLE


def build(settings: Settings, engine: AsyncEngine, clock: Clock, bus: Bus) -> Component:
    relay = OutboxRelay(
        engine,
        outbox,
        bus,
        clock,
        source="ledger",
        poll_seconds=settings.bus.relay_poll_seconds,
        batch=settings.bus.relay_batch,
        publish_max_failures=settings.bus.publish_max_failures,
    )
    health = Health("ledger")

    async def lag_check() -> CheckResult:
        pending, age = await bus.lag(DURABLE)
        lagging = age > settings.monitor.lag_threshold_seconds
        return CheckResult(
            "degraded" if lagging else "ok",
            {"pending": pending, "oldest_age_seconds": round(age, 3)},
        )

    health.add_db(engine)
    health.add_bus(bus)
    health.add("consumer_lag", lag_check, critical=False, timeout_seconds=1.0)
    app = new_app("ledger", title="PocketPay ledger (internal)")
    app.include_router(health_router(health))
    api = api_module.LedgerApi(engine, clock, relay, bus, settings.fx)
    app.include_router(
        routes.build_router(api),
        dependencies=[internal_auth(settings.resolved_internal_token())],
    )
    bus.subscribe(
        DURABLE, SUBJECTS, traced_consumer(DURABLE, LedgerConsumer(engine, clock, relay.notify))
    )
    return Component(
        "ledger",
        app,
        health,
        on_start=[relay.start],
        on_stop=[relay.stop],
        state={"api": api, "relay": relay},
    )
