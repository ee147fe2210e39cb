"""Settlement asks the PSP once per payment, at the ``available_on`` the PSP gave with the
capture; concurrent passes split the due payments; a PSP outage only delays settlement.

Real pieces throughout: the sandbox PSP served by uvicorn and driven by the official stripe
SDK through ``StripeProvider``, our payments tables (SQLite, and PostgreSQL for the claim
test), the payment flows. One injected ``ManualClock`` is the time of both sides, so nothing
sleeps. The observable is the sandbox's own request log: every ``GET
/v1/balance_transactions/<id>`` that reached it.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import stripe
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send

from pocketpay.kit import failpoints
from pocketpay.kit.clock import ManualClock, aware
from pocketpay.kit.db import create_engine
from pocketpay.payments import service
from pocketpay.payments.flows import Ctx, intents, recovery
from pocketpay.payments.models import payments
from pocketpay.payments.providers.stripe import StripeProvider
from pocketpay.sandbox import Sandbox, create_app
from pocketpay.settings import SandboxSettings
from tests.support import free_port, prepare_postgres, serving, sqlite_template

API_KEY = "sk_test_settlement_suite"
SETTLE_DELAY = 3.0
TXN_PATH = "/v1/balance_transactions/"


class RequestLog:
    """ASGI wrapper recording the path of every HTTP request the sandbox receives."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)

    def txn_retrieves(self) -> list[str]:
        return [p.removeprefix(TXN_PATH) for p in self.paths if p.startswith(TXN_PATH)]


class _Relay:
    """Stands in for the outbox relay (publishing events is not under test here)."""

    def notify(self) -> None:
        pass


@dataclass
class World:
    clock: ManualClock
    sandbox: Sandbox
    log: RequestLog
    url: str
    engine: AsyncEngine
    ctxs: list[Ctx] = field(default_factory=list)

    def ctx(self, engine: AsyncEngine | None = None) -> Ctx:
        provider = StripeProvider(API_KEY, self.url, self.clock)
        ctx = Ctx(
            engine or self.engine,
            self.clock,
            provider,
            None,  # type: ignore[arg-type]  # settlement never calls the ledger
            _Relay(),  # type: ignore[arg-type]
            settle_poll_seconds=1.0,
        )
        self.ctxs.append(ctx)
        return ctx

    def advance_to(self, unix: float) -> None:
        self.clock.advance(unix - self.clock.now().timestamp())


@asynccontextmanager
async def world(backend: str, tmp_path: Path) -> AsyncIterator[World]:
    clock = ManualClock(start=datetime.now(UTC))
    settings = SandboxSettings(
        api_key=API_KEY,
        webhook_secret="whsec_settlement_suite",
        settle_delay_seconds=SETTLE_DELAY,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'sandbox.db'}",
    )
    app = create_app(settings, clock, webhook_url="")  # events recorded, not sent
    log = RequestLog(app)
    if backend == "postgres":
        url = await prepare_postgres()
    else:
        db = tmp_path / "pocketpay.db"
        await asyncio.to_thread(lambda: shutil.copyfile(sqlite_template(), db))
        url = f"sqlite+aiosqlite:///{db}"
    engine = create_engine(url)
    try:
        async with serving(log, free_port()) as base:
            yield World(clock, app.state.sandbox, log, base, engine)
    finally:
        await engine.dispose()


backends = pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)


async def captured_payment(w: World, ctx: Ctx) -> Any:
    """A payment created, authorized and captured at the sandbox through our flows."""
    async with ctx.engine.begin() as conn:
        row = await service.create(
            conn,
            idempotency_key=uuid.uuid4().hex,
            owner_id="usr_settlement",
            amount_minor=5000,
            currency="USD",
            payment_method="pm_card_visa",
            capture_method="automatic",
            description=None,
            metadata={},
            provider="stripe",
            now=w.clock.now(),
        )
    await intents.authorize(ctx, row.id)
    return await payment(ctx, row.id)


async def payment(ctx: Ctx, pid: str) -> Any:
    async with ctx.engine.connect() as conn:
        return await service.get(conn, pid)


async def due_payment(w: World) -> tuple[Ctx, Any]:
    """A captured payment, with the clock at the moment its funds become available."""
    ctx = w.ctx()
    p = await captured_payment(w, ctx)
    w.advance_to(available_on(w, p.psp_balance_txn_id))
    return ctx, p


def available_on(w: World, txn_id: str) -> int:
    return w.sandbox.store.balance_transactions[txn_id].available_on


@backends
async def test_capture_records_available_on_and_settles_with_one_retrieve(
    backend: str, tmp_path: Path
) -> None:
    async with world(backend, tmp_path) as w:
        ctx = w.ctx()
        p = await captured_payment(w, ctx)
        assert p.status == "captured"
        due = available_on(w, p.psp_balance_txn_id)
        # From the capture's own answer (nested expansion), not from a request of its own.
        assert aware(p.settle_check_at) == datetime.fromtimestamp(due, UTC)
        assert w.log.txn_retrieves() == []

        assert await recovery.settle_due(ctx) == 0  # not due yet: the PSP is not asked
        w.advance_to(due - 0.001)
        assert await recovery.settle_due(ctx) == 0
        assert w.log.txn_retrieves() == []
        assert (await payment(ctx, p.id)).status == "captured"

        w.advance_to(due)
        assert await recovery.settle_due(ctx) == 1
        assert (await payment(ctx, p.id)).status == "settled"
        assert w.log.txn_retrieves() == [p.psp_balance_txn_id]

        w.clock.advance(600)
        assert await recovery.settle_due(ctx) == 0
        assert w.log.txn_retrieves() == [p.psp_balance_txn_id]


@backends
async def test_psp_outage_during_settlement_leaves_payment_captured_until_later(
    backend: str, tmp_path: Path
) -> None:
    async with world(backend, tmp_path) as w:
        ctx, p = await due_payment(w)
        w.sandbox.faults.outage = True
        assert await recovery.settle_due(ctx) == 1  # asked, no answer: unknown, not failed
        after = await payment(ctx, p.id)
        assert after.status == "captured"
        assert aware(after.settle_check_at) > w.clock.now()  # backed off, not lost
        assert await recovery.settle_due(ctx) == 0  # not asked again before its next check

        w.sandbox.faults.outage = False
        w.advance_to(aware(after.settle_check_at).timestamp())
        assert await recovery.settle_due(ctx) == 1
        assert (await payment(ctx, p.id)).status == "settled"
        # One request refused by the outage, one answered after it.
        assert w.log.txn_retrieves() == [p.psp_balance_txn_id] * 2


@backends
@pytest.mark.parametrize("point", ["payments.settle.after_lease", "payments.settle.after_psp"])
async def test_a_crash_in_a_settlement_pass_settles_the_payment_after_its_lease(
    backend: str, point: str, tmp_path: Path
) -> None:
    """Crash windows of settlement: after the claim's lease committed (no PSP call made) and
    after the PSP answered (nothing written). Either way the payment stays captured, nobody
    asks about it while the lease runs, and the first pass after the lease settles it once."""
    async with world(backend, tmp_path) as w:
        ctx, p = await due_payment(w)
        failpoints.arm(point, "crash")
        try:
            with pytest.raises(failpoints.Crash):
                await recovery.settle_due(ctx)
        finally:
            failpoints.disarm()
        after = await payment(ctx, p.id)
        assert after.status == "captured"
        asked = len(w.log.txn_retrieves())
        assert asked == (1 if point.endswith("after_psp") else 0)

        w.clock.advance(recovery.SETTLE_LEASE_SECONDS - 1)
        assert await recovery.settle_due(ctx) == 0  # leased: not asked again yet
        assert len(w.log.txn_retrieves()) == asked

        w.clock.advance(1)
        assert await recovery.settle_due(ctx) == 1
        assert (await payment(ctx, p.id)).status == "settled"
        assert len(w.log.txn_retrieves()) == asked + 1


@backends
async def test_unknown_available_on_is_polled_at_once_then_backs_off(
    backend: str, tmp_path: Path
) -> None:
    async with world(backend, tmp_path) as w:
        ctx = w.ctx()
        p = await captured_payment(w, ctx)
        async with ctx.engine.begin() as conn:  # as if the PSP had not said when
            await conn.execute(
                update(payments).where(payments.c.id == p.id).values(settle_check_at=None)
            )
        assert await recovery.settle_due(ctx) == 1  # asked at once: still pending
        after = await payment(ctx, p.id)
        assert after.status == "captured" and after.settle_check_at is not None
        assert await recovery.settle_due(ctx) == 0
        w.advance_to(available_on(w, p.psp_balance_txn_id) + 10)
        assert await recovery.settle_due(ctx) == 1
        assert (await payment(ctx, p.id)).status == "settled"
        assert len(w.log.txn_retrieves()) == 2


@backends
async def test_balance_available_webhook_runs_no_settlement_pass(
    backend: str, tmp_path: Path
) -> None:
    async with world(backend, tmp_path) as w:
        ctx, p = await due_payment(w)
        event = {"id": f"evt_{uuid.uuid4().hex}", "type": "balance.available", "data": {}}
        assert await recovery.handle_psp_event(ctx, event) == {"status": "processed"}
        assert w.log.txn_retrieves() == []  # the settle job's to do, not the webhook request's
        assert (await payment(ctx, p.id)).status == "captured"


@pytest.mark.postgres
async def test_concurrent_passes_never_ask_about_the_same_payment_twice(tmp_path: Path) -> None:
    async with world("postgres", tmp_path) as w:
        ctx_a = w.ctx()
        ctx_b = w.ctx(create_engine(str(w.engine.url.render_as_string(hide_password=False))))
        try:
            made = [await captured_payment(w, ctx_a) for _ in range(24)]
            w.advance_to(max(available_on(w, p.psp_balance_txn_id) for p in made))
            w.sandbox.faults.latency_ms = 20  # keep both passes' PSP calls in flight together
            claimed = []
            for _ in range(10):
                a, b = await asyncio.gather(
                    recovery.settle_due(ctx_a, limit=5), recovery.settle_due(ctx_b, limit=5)
                )
                claimed += [a, b]
                if a == b == 0:
                    break
            asked = w.log.txn_retrieves()
            assert sorted(asked) == sorted(p.psp_balance_txn_id for p in made)  # once each
            assert sum(claimed) == len(made)
            assert any(c for c in claimed[1::2])  # the second process did take a share
            async with w.engine.connect() as conn:
                statuses = set(
                    (
                        await conn.execute(
                            select(payments.c.status).where(payments.c.id.in_([p.id for p in made]))
                        )
                    ).scalars()
                )
            assert statuses == {"settled"}
        finally:
            await ctx_b.engine.dispose()


@pytest.mark.postgres
async def test_a_claimed_payment_still_pending_is_not_asked_again_within_its_lease(
    tmp_path: Path,
) -> None:
    """Two processes, payments whose check is due but whose funds are not available yet:
    each is asked once by one of them, and neither asks again until its next check."""
    async with world("postgres", tmp_path) as w:
        ctx_a = w.ctx()
        ctx_b = w.ctx(create_engine(str(w.engine.url.render_as_string(hide_password=False))))
        try:
            made = [await captured_payment(w, ctx_a) for _ in range(12)]
            async with w.engine.begin() as conn:  # due now, funds available in 3 s
                await conn.execute(
                    update(payments)
                    .where(payments.c.id.in_([p.id for p in made]))
                    .values(settle_check_at=w.clock.now())
                )
            w.sandbox.faults.latency_ms = 20
            runs: list[Callable[[], Any]] = [
                lambda: recovery.settle_due(ctx_a, limit=4),
                lambda: recovery.settle_due(ctx_b, limit=4),
            ]
            for _ in range(5):
                await asyncio.gather(*(run() for run in runs))
            asked = w.log.txn_retrieves()
            assert sorted(asked) == sorted(p.psp_balance_txn_id for p in made)
        finally:
            await ctx_b.engine.dispose()


async def test_sandbox_expands_the_charge_balance_transaction_as_stripe_does(
    tmp_path: Path,
) -> None:
    async with world("sqlite", tmp_path) as w:
        client = stripe.StripeClient(API_KEY, base_addresses={"api": w.url})
        pi = await client.v1.payment_intents.create_async(
            {
                "amount": 1200,
                "currency": "usd",
                "payment_method": "pm_card_visa",
                "confirm": True,
                "expand": ["latest_charge.balance_transaction"],
            }
        )
        charge = pi.latest_charge
        assert not isinstance(charge, str) and charge is not None
        assert charge.object == "charge"
        txn = charge.balance_transaction
        assert not isinstance(txn, str) and txn is not None
        assert txn.object == "balance_transaction"
        assert txn.status == "pending"
        assert txn.available_on == available_on(w, txn.id)
        assert txn.source == charge.id
        # Without expand, ids as before.
        plain = await client.v1.payment_intents.retrieve_async(pi.id)
        assert plain.latest_charge == charge.id
        shallow = await client.v1.payment_intents.retrieve_async(
            pi.id, {"expand": ["latest_charge"]}
        )
        assert shallow.latest_charge.balance_transaction == txn.id  # type: ignore[union-attr]
        # What the adapter reads from the same answer.
        r = await StripeProvider(API_KEY, w.url, w.clock).retrieve(pi.id)
        assert (r.balance_txn_id, r.available_on) == (txn.id, txn.available_on)
