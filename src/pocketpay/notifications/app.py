"""The notifications component: the consumer of domain events, the delivery job, the outbox
relay, health (database, bus, SMTP), and the app serving its internal API."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.bus import Bus, Envelope
from pocketpay.kit.clock import Clock
from pocketpay.kit.component import Component, internal_auth
from pocketpay.kit.health import CheckResult, Health, health_router
from pocketpay.kit.httpapp import new_app
from pocketpay.kit.jobs import PeriodicJob, full_pass
from pocketpay.kit.outbox import OutboxRelay
from pocketpay.kit.tracing import traced_consumer
from pocketpay.notifications import routes
from pocketpay.notifications.api import NotificationsApi
from pocketpay.notifications.consumers import DURABLE, SUBJECTS, NotificationsConsumer
from pocketpay.notifications.deliveries import Sender
from pocketpay.notifications.email import EmailSender
from pocketpay.notifications.models import outbox
from pocketpay.settings import Settings


def build(settings: Settings, engine: AsyncEngine, clock: Clock, bus: Bus) -> Component:
    n = settings.notifications
    relay = OutboxRelay(
        engine,
        outbox,
        bus,
        clock,
        source="notifications",
        poll_seconds=settings.bus.relay_poll_seconds,
        batch=settings.bus.relay_batch,
        publish_max_failures=settings.bus.publish_max_failures,
    )
    email = EmailSender(n, clock)
    # No proxy from the environment: targets.post_guarded connects to the address it checked.
    http = httpx.AsyncClient(trust_env=False, follow_redirects=False)
    sender = Sender(engine, clock, n, email, http, relay)
    job = PeriodicJob(
        "notifications-sender",
        lambda: full_pass(sender.run_due(), n.delivery_batch),
        n.delivery_interval_seconds,
    )
    api = NotificationsApi(engine, clock, n, job.wake)
    health = Health("notifications")
    health.add_db(engine)
    health.add_bus(bus)

    async def smtp() -> CheckResult:
        return CheckResult("ok", {"latency_ms": round(await email.ping(), 2)})

    # Not critical: with SMTP down, emails wait and are retried; webhooks go on (degraded).
    health.add("smtp", smtp, critical=False, timeout_seconds=2.0)
    app = new_app("notifications", title="PocketPay notifications (internal)")
    app.include_router(health_router(health))
    app.include_router(
        routes.build_router(api),
        dependencies=[internal_auth(settings.resolved_internal_token())],
    )
    consumer = NotificationsConsumer(engine, clock)

    async def on_event(env: Envelope) -> None:
        if await consumer(env):
            job.wake()

    bus.subscribe(DURABLE, SUBJECTS, traced_consumer(DURABLE, on_event))
    return Component(
        "notifications",
        app,
        health,
        on_start=[relay.start, job.start],
        on_stop=[http.aclose, job.stop, relay.stop],
        state={"api": api, "consumer": consumer, "job": job},
    )
