"""Builds engines, the bus, clients and apps from settings, for any set of components.

Embedded (the default): every component in this process on one SQLite file, the database
bus, the sandbox PSP mounted at /sandbox. The components' internal APIs are not on the public
port at all: a component's client *is* the component's API object (``PaymentsApi``,
``LedgerApi``), called directly, with no HTTP hop; only their health routes are public, under
/components/<name>/.
Scale: one component per process, on PostgreSQL and NATS, reaching the others over HTTP
with the same typed clients; a process serving one component serves its internal API, which
requires the internal token (``Settings.resolved_internal_token``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import httpx
import structlog
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.billing.client import BillingClient, HttpBillingClient
from pocketpay.kit.bus import Bus, EmbeddedBus
from pocketpay.kit.client import InternalClient
from pocketpay.kit.clock import Clock, SystemClock
from pocketpay.kit.component import Component, health_only
from pocketpay.kit.db import create_engine
from pocketpay.kit.failpoints import arm_from_env
from pocketpay.kit.fanout import FanOut, LocalFanOut, NatsFanOut
from pocketpay.kit.jobs import task_stacks
from pocketpay.ledger.client import HttpLedgerClient, LedgerClient
from pocketpay.notifications.client import HttpNotificationsClient, NotificationsClient
from pocketpay.payments.client import HttpPaymentsClient, PaymentsClient
from pocketpay.payments.providers.stripe import StripeProvider
from pocketpay.settings import Settings

log = structlog.get_logger(__name__)

EMBEDDED = ("gateway", "payments", "ledger", "billing", "notifications", "sandbox", "monitor")


def make_bus(settings: Settings, engine: AsyncEngine, clock: Clock) -> Bus:
    b = settings.bus
    if settings.bus_url.startswith("nats://"):
        from pocketpay.kit.bus_nats import NatsBus

        return NatsBus(
            settings.bus_url,
            engine,
            clock,
            stream=b.stream,
            max_deliver=b.max_deliver,
            retry_delay_ms=b.retry_delay_ms,
            retry_cap_ms=b.retry_cap_ms,
            ack_wait_seconds=b.ack_wait_seconds,
            subject_prefix=b.subject_prefix,
            consumer_concurrency=b.consumer_concurrency,
        )
    # EmbeddedBus refuses anything but SQLite (with a ValueError saying to use NATS).
    return EmbeddedBus(
        engine,
        clock,
        max_deliver=b.max_deliver,
        retry_delay_ms=b.retry_delay_ms,
        retry_cap_ms=b.retry_cap_ms,
        poll_seconds=b.relay_poll_seconds,
        batch=b.relay_batch,
    )


def make_fanout(settings: Settings) -> FanOut:
    """Stream wakes: in this process (embedded), else NATS core subjects every gateway
    process listens on (scale; the bus's subject prefix keeps test runs apart)."""
    if settings.bus_url.startswith("nats://"):
        prefix = settings.bus.subject_prefix + settings.stream.fanout_prefix
        return NatsFanOut(settings.bus_url, prefix)
    return LocalFanOut()


class Runtime:
    def __init__(
        self, settings: Settings, components: tuple[str, ...] = EMBEDDED, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        self.names = components
        self.clock = clock or SystemClock()
        arm_from_env()  # POCKETPAY_FAILPOINTS: processes started by fault tests
        self.engine = create_engine(
            settings.resolved_database_url(), pool_size=settings.db_pool_size
        )
        self.bus = make_bus(settings, self.engine, self.clock)
        self.components: dict[str, Component] = {}
        self.clients: list[InternalClient] = []
        self.sandbox_app: FastAPI | None = None
        self._build()
        self.app = self._compose()

    # -- wiring ---------------------------------------------------------------------------------

    def _http(self, name: str) -> InternalClient:
        """An HTTP client of a component that runs in another process."""
        s = self.settings
        if name not in s.urls:
            raise RuntimeError(
                f"component {name} is neither in this process nor in "
                f'POCKETPAY_URLS; set POCKETPAY_URLS=\'{{"{name}": "http://..."}}\''
            )
        client = InternalClient(
            name,
            s.urls[name],
            token=s.resolved_internal_token(),
            timeout_seconds=s.psp.timeout_seconds + 5,
        )
        self.clients.append(client)
        return client

    def _payments(self) -> PaymentsClient:
        """In this process: the payments API object itself (direct calls, no HTTP)."""
        if "payments" in self.components:
            api: PaymentsClient = self.components["payments"].state["api"]
            return api
        return HttpPaymentsClient(self._http("payments"))

    def _ledger(self) -> LedgerClient:
        if "ledger" in self.components:
            api: LedgerClient = self.components["ledger"].state["api"]
            return api
        return HttpLedgerClient(self._http("ledger"))

    def _billing(self) -> BillingClient | None:
        """Billing is optional at scale: a deployment without it (no process, no URL) serves
        the billing routes as 503 ``billing.unavailable``."""
        if "billing" in self.components:
            api: BillingClient = self.components["billing"].state["api"]
            return api
        if "billing" not in self.settings.urls:
            return None
        return HttpBillingClient(self._http("billing"))

    def _notifications(self) -> NotificationsClient | None:
        """Optional like billing: without it the notification routes answer 503
        ``notifications.unavailable``."""
        if "notifications" in self.components:
            api: NotificationsClient = self.components["notifications"].state["api"]
            return api
        if "notifications" not in self.settings.urls:
            return None
        return HttpNotificationsClient(self._http("notifications"))

    def provider(self) -> StripeProvider:
        s = self.settings
        base = s.psp.api_base or (
            f"{s.resolved_public_url()}/sandbox" if s.psp.provider == "sandbox" else ""
        )
        return StripeProvider(
            s.psp.api_key,
            base,
            self.clock,
            timeout_seconds=s.psp.timeout_seconds,
            ping_timeout_seconds=s.psp.ping_timeout_seconds,
            failure_threshold=s.psp.breaker_failure_threshold,
            reset_seconds=s.psp.breaker_reset_seconds,
            name=s.psp.provider,
        )

    def _build(self) -> None:
        s, e, c = self.settings, self.engine, self.clock
        if "ledger" in self.names:
            from pocketpay.ledger.app import build as build_ledger

            self.components["ledger"] = build_ledger(s, e, c, self.bus)
        if "payments" in self.names:
            from pocketpay.payments.app import build as build_payments

            self.components["payments"] = build_payments(
                s, e, c, self.bus, self.provider(), self._ledger()
            )
        if "billing" in self.names:
            from pocketpay.billing.app import build as build_billing

            self.components["billing"] = build_billing(
                s, e, c, self.bus, self._payments(), self._ledger()
            )
        if "notifications" in self.names:
            from pocketpay.notifications.app import build as build_notifications

            self.components["notifications"] = build_notifications(s, e, c, self.bus)
        if "gateway" in self.names:
            from pocketpay.gateway.app import build as build_gateway

            self.components["gateway"] = build_gateway(
                s,
                e,
                c,
                self._payments(),
                self._ledger(),
                self._billing(),
                self.bus,
                make_fanout(s),
                notifications=self._notifications(),
            )
        if "sandbox" in self.names:
            from pocketpay.sandbox import create_app as sandbox_app

            hook = s.sandbox.webhook_url or f"{s.resolved_public_url()}/api/v1/webhooks/stripe"
            self.sandbox_app = sandbox_app(s.sandbox, c, webhook_url=hook)
            # Kept before _compose replaces the root app's lifespan (the sandbox may be root).
            self._sandbox_lifespan = self.sandbox_app.router.lifespan_context
        if "monitor" in self.names:
            self.components["monitor"] = self._build_monitor()

    def _monitor_targets(self) -> dict[str, str]:
        """Configured targets, else this process's own components (embedded mode)."""
        s = self.settings
        if s.monitor.targets:
            return dict(s.monitor.targets)
        base = s.resolved_public_url()
        targets: dict[str, str] = {
            n: f"{base}/components/{n}"
            for n in ("payments", "ledger", "billing", "notifications")
            if n in self.names
        }
        if "gateway" in self.names:
            targets["gateway"] = base
        if "sandbox" in self.names:
            targets["sandbox"] = f"{base}/sandbox"
        targets.update({n: u for n, u in s.urls.items() if n != "monitor"})
        return targets

    def _build_monitor(self) -> Component:
        from pocketpay.kit.tokens import TokenCodec
        from pocketpay.monitor.app import create_app as monitor_app

        s = self.settings
        tokens = TokenCodec(
            s.resolved_jwt_secret(),
            issuer=s.auth.jwt_issuer,
            audience=s.auth.jwt_audience,
            ttl_seconds=s.auth.access_ttl_seconds,
        )
        settings = s.monitor.model_copy(update={"targets": self._monitor_targets()})
        login = (
            f"{s.urls['gateway']}/api/v1/auth/login"
            if "gateway" in s.urls
            else ("/api/v1/auth/login")
        )
        app = monitor_app(settings, self.clock, tokens=tokens, engine=self.engine, login_url=login)
        lifespan = app.router.lifespan_context(app)

        async def start() -> None:
            # In one process the first poll would race the server's own start-up (and
            # report it down): begin polling once this process serves requests.
            self._monitor_start = asyncio.create_task(self._start_when_serving(lifespan))

        async def stop() -> None:
            if not self._monitor_start.done():
                self._monitor_start.cancel()
                return
            await lifespan.__aexit__(None, None, None)

        return Component("monitor", app, app.state.health, on_start=[start], on_stop=[stop])

    async def _start_when_serving(self, lifespan: Any) -> None:
        url = f"{self.settings.resolved_public_url()}/healthz"
        async with httpx.AsyncClient(timeout=1.0) as client:
            for _ in range(600):  # bounded: at most about a minute
                try:
                    if (await client.get(url)).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        await lifespan.__aenter__()

    def _compose(self) -> FastAPI:
        """The app this process serves.

        A process of one component (scale mode) serves that component's app, internal API
        included, guarded by the internal token. With several components in the process the
        others' internal APIs are not mounted at all (their callers are in this process);
        only their health routes are, at /components/<name>/, for operators and the monitor.
        """
        root: FastAPI
        if "gateway" in self.components:
            root = self.components["gateway"].app
        elif len(self.components) == 1:
            root = next(iter(self.components.values())).app
        elif self.sandbox_app is not None and not self.components:
            root = self.sandbox_app
        else:
            root = FastAPI()
        for name, comp in self.components.items():
            if comp.app is not root:
                token = self.settings.resolved_internal_token()
                root.mount(f"/components/{name}", health_only(comp.app, token))
        if self.sandbox_app is not None and self.sandbox_app is not root:
            root.mount("/sandbox", self.sandbox_app)
        monitor = self.components.get("monitor")
        if monitor is not None and monitor.app is not root:
            # /status, /alerts and /admin/health at the root too: routes of the root app
            # match first, everything else falls through to the monitor.
            root.mount("/", monitor.app)
        root.router.lifespan_context = self._lifespan
        return root

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Any) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self.sandbox_app is not None:
            await self._sandbox_lifespan_enter()
        await self.bus.start()
        for comp in self.components.values():
            await comp.start()
        log.info("pocketpay.started", components=list(self.names))

    async def stop(self) -> None:
        """Stop everything, each step bounded: a shutdown that waits forever is an outage of
        its own (and a supervisor would SIGKILL it anyway, which loses nothing: every flow
        resumes from its recovery point). A step that overruns is logged with every task's
        stack, so the culprit is named."""
        for comp in reversed(list(self.components.values())):
            await _bounded(f"stop {comp.name}", comp.stop())
        await _bounded("close bus", self.bus.close())
        if self.sandbox_app is not None:
            await _bounded("stop sandbox", self._sandbox_lifespan_exit())
        for client in self.clients:
            await _bounded(f"close client {client.component}", client.aclose())
        await _bounded("dispose engine", self.engine.dispose())

    async def _sandbox_lifespan_enter(self) -> None:
        assert self.sandbox_app is not None
        self._sandbox_cm = self._sandbox_lifespan(self.sandbox_app)
        await self._sandbox_cm.__aenter__()

    async def _sandbox_lifespan_exit(self) -> None:
        await self._sandbox_cm.__aexit__(None, None, None)


STOP_STEP_SECONDS = 15.0


async def _bounded(step: str, work: Awaitable[None]) -> None:
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=STOP_STEP_SECONDS)
    if done:
        task.result()
        return
    log.error(
        "runtime.stop_step_overran", step=step, seconds=STOP_STEP_SECONDS, tasks=task_stacks()
    )
    task.cancel()
