"""The gateway component: the public API app with its own health checks."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.billing.client import BillingClient
from pocketpay.gateway.admin import admin_router
from pocketpay.gateway.api_keys import ApiKeyService, api_keys_router
from pocketpay.gateway.auth import AuthService
from pocketpay.gateway.idempotency import IdempotencyStore
from pocketpay.gateway.models import outbox
from pocketpay.gateway.problems import install as install_openapi
from pocketpay.gateway.ratelimit import RateLimits
from pocketpay.gateway.routes import Gateway, build_router
from pocketpay.gateway.stream_hub import StreamHub
from pocketpay.gateway.stream_log import DURABLE as STREAM_DURABLE
from pocketpay.gateway.stream_log import PURGE_BATCH as STREAM_PURGE_BATCH
from pocketpay.gateway.stream_log import SUBJECTS as STREAM_SUBJECTS
from pocketpay.gateway.stream_log import StreamConsumer, StreamLog
from pocketpay.gateway.streams import build_router as build_stream_router
from pocketpay.gateway.web.routes import install as install_web
from pocketpay.kit.bus import Bus
from pocketpay.kit.clock import Clock
from pocketpay.kit.component import Component
from pocketpay.kit.fanout import FanOut, LocalFanOut
from pocketpay.kit.health import CheckFn, CheckResult, Health, health_router
from pocketpay.kit.httpapp import new_app
from pocketpay.kit.jobs import PeriodicJob
from pocketpay.kit.outbox import OutboxRelay
from pocketpay.kit.tokens import TokenCodec
from pocketpay.kit.tracing import traced_consumer
from pocketpay.ledger.client import LedgerClient
from pocketpay.notifications.client import NotificationsClient
from pocketpay.payments.client import PaymentsClient
from pocketpay.settings import Settings

PURGE_INTERVAL_SECONDS = 3600.0
PURGE_BATCH = 5000
# The unauthenticated endpoints, limited per client IP (route templates).
PER_IP_ROUTES = ("/api/v1/auth/signup", "/api/v1/auth/login", "/api/v1/auth/refresh")

DESCRIPTION = """PocketPay's public API. Amounts are integers in minor units (cents).
Every POST that moves money needs an `Idempotency-Key` header. Errors are
`application/problem+json` with a stable `code`."""


def build(
    settings: Settings,
    engine: AsyncEngine,
    clock: Clock,
    payments: PaymentsClient,
    ledger: LedgerClient,
    billing: BillingClient | None,
    bus: Bus,
    fanout: FanOut | None = None,
    notifications: NotificationsClient | None = None,
) -> Component:
    tokens = TokenCodec(
        settings.resolved_jwt_secret(),
        issuer=settings.auth.jwt_issuer,
        audience=settings.auth.jwt_audience,
        ttl_seconds=settings.auth.access_ttl_seconds,
    )
    keys = ApiKeyService(engine, clock)
    limits = RateLimits(settings.rate_limits, clock)
    auth = AuthService(
        engine,
        clock,
        tokens,
        settings.auth.refresh_ttl_seconds,
        settings.auth.admin_emails,
        keys,
        limits,
    )
    idem = IdempotencyStore(engine, clock)
    gw = Gateway(
        auth,
        idem,
        payments,
        ledger,
        billing,
        settings.psp.webhook_secret,
        settings.psp.webhook_tolerance_seconds,
        notifications,
    )
    health = Health("gateway")

    def downstream(client: PaymentsClient | LedgerClient) -> CheckFn:
        async def check() -> CheckResult:
            return CheckResult("ok", {"latency_ms": round(await client.ping(), 2)})

        return check

    health.add_db(engine)
    # Not critical: the gateway still serves what it can; a quick single try each, so a dead
    # dependency never makes the gateway's own /readyz slow.
    health.add("payments", downstream(payments), critical=False, timeout_seconds=0.3)
    health.add("ledger", downstream(ledger), critical=False, timeout_seconds=0.3)
    app: FastAPI = new_app(
        "gateway",
        title="PocketPay API",
        docs=True,
        max_body_bytes=settings.max_body_bytes,
        cors_origins=settings.cors_origins,
    )
    app.description = DESCRIPTION
    app.version = "1.0.0"
    install_openapi(app)
    app.include_router(health_router(health))
    api = build_router(gw)
    assert {getattr(r, "path", "") for r in api.routes} >= set(PER_IP_ROUTES), PER_IP_ROUTES
    app.include_router(api, dependencies=[Depends(limits.per_ip(PER_IP_ROUTES))])
    app.include_router(api_keys_router(keys, auth))
    app.include_router(admin_router(engine, bus, clock, tokens, payments))
    install_web(app, gw, settings, limits)
    streams = _streams(settings, engine, clock, bus, fanout or LocalFanOut())
    app.include_router(build_stream_router(auth, streams.hub))

    async def purge() -> bool:
        return await idem.purge() >= PURGE_BATCH

    # Keys are kept 24 h; every process of the gateway may purge (deletes are idempotent).
    purge_job = PeriodicJob("idempotency-purge", purge, PURGE_INTERVAL_SECONDS)
    relay = OutboxRelay(
        engine,
        outbox,
        bus,
        clock,
        source="gateway",
        poll_seconds=settings.bus.relay_poll_seconds,
        batch=settings.bus.relay_batch,
        publish_max_failures=settings.bus.publish_max_failures,
    )
    return Component(
        "gateway",
        app,
        health,
        on_start=[purge_job.start, streams.hub.start, streams.purge.start, relay.start],
        on_stop=[purge_job.stop, streams.hub.stop, streams.purge.stop, relay.stop],
        state={
            "tokens": tokens,
            "auth": auth,
            "idempotency": idem,
            "stream_hub": streams.hub,
            "stream_log": streams.log,
        },
    )


@dataclass
class _Streams:
    log: StreamLog
    hub: StreamHub
    purge: PeriodicJob


def _streams(
    settings: Settings, engine: AsyncEngine, clock: Clock, bus: Bus, fanout: FanOut
) -> _Streams:
    """Live updates: the log, its bus consumer (every gateway process shares the durable)
    and this process's hub of open streams."""
    s = settings.stream
    log = StreamLog(engine, clock, s.retention_hours)
    hub = StreamHub(
        log,
        clock,
        fanout,
        max_per_user=s.max_connections_per_user,
        queue_max=s.queue_max,
        poll_seconds=s.poll_seconds,
        heartbeat_seconds=s.heartbeat_seconds,
    )
    consumer = StreamConsumer(log, hub.wake_users)
    # Ordered: a user's events enter the log in the order they were published.
    bus.subscribe(
        STREAM_DURABLE, STREAM_SUBJECTS, traced_consumer(STREAM_DURABLE, consumer), ordered=True
    )

    async def purge() -> bool:
        return await log.purge() >= STREAM_PURGE_BATCH

    return _Streams(log, hub, PeriodicJob("stream-purge", purge, PURGE_INTERVAL_SECONDS))
