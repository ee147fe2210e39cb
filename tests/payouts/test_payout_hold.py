"""The ledger's side of a payout, on SQLite and on PostgreSQL: ``LedgerClient.payout_hold``
through the ``LedgerApi`` object and through ``HttpLedgerClient`` over the ledger's internal
app (``POST /payout-holds``), and the consumer's answers to ``payments.payout.*``: paid posts
the hold, failed voids it, a cancel handled before the hold leaves a tombstone that makes the
late hold a no-op."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.bus import Envelope
from pocketpay.kit.clock import SystemClock
from pocketpay.kit.errors import AppError
from pocketpay.ledger import service
from pocketpay.ledger.api import LedgerApi
from pocketpay.ledger.chart import system_account_id, wallet_account_id
from pocketpay.ledger.check import run_check
from pocketpay.ledger.client import HttpLedgerClient, LedgerClient
from pocketpay.ledger.consumers import LedgerConsumer
from tests.ledger.test_ledger_service import fund, snapshot
from tests.support import ledger_only

SETTLED = system_account_id("psp_settled", "USD")


@dataclass
class Ledger:
    api: LedgerApi
    http: HttpLedgerClient
    engine: AsyncEngine

    def client(self, kind: str) -> LedgerClient:
        return self.api if kind == "api" else self.http

    async def funded(self, amount: int) -> str:
        owner = f"usr_{uuid.uuid4().hex[:12]}"
        await fund(self.engine, wallet_account_id(owner, "USD"), amount, owner)
        return owner

    async def wallet(self, owner: str) -> service.Balance:
        async with self.engine.connect() as conn:
            return await service.balance(conn, wallet_account_id(owner, "USD"))

    async def on(self, kind: str, payout_id: str, owner: str, amount: int) -> None:
        """The consumer handles ``payments.payout.<kind>`` of this payout."""
        data = {"id": payout_id, "owner_id": owner, "amount_minor": amount, "currency": "USD"}
        env = Envelope(
            f"evt_{uuid.uuid4().hex}", f"payments.payout.{kind}", datetime.now(UTC), data
        )
        await LedgerConsumer(self.engine, SystemClock())(env)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    async with ledger_only(request.param, tmp_path) as parts:
        yield Ledger(*parts)


async def _hold(client: LedgerClient, payout_id: str, owner: str, amount: int) -> str:
    try:
        held = await client.payout_hold(
            payout_id=payout_id, owner_id=owner, amount_minor=amount, currency="USD"
        )
    except AppError as exc:
        return exc.code
    return held.status


@pytest.mark.parametrize("kind", ["api", "http"])
async def test_hold_then_paid_posts_it_once(ledger: Ledger, kind: str) -> None:
    owner = await ledger.funded(100)
    po = f"po_{uuid.uuid4().hex[:20]}"
    assert await _hold(ledger.client(kind), po, owner, 30) == "held"
    assert await _hold(ledger.client(kind), po, owner, 30) == "held"  # a retry: no second hold
    w = await ledger.wallet(owner)
    assert (w.available_minor, w.posted_minor, w.debits_pending) == (70, 100, 30)
    await ledger.on("paid", po, owner, 30)
    await ledger.on("paid", po, owner, 30)  # redelivered with another event id: a no-op
    w = await ledger.wallet(owner)
    assert (w.available_minor, w.posted_minor, w.debits_pending) == (70, 70, 0)
    assert await run_check(ledger.engine) == []


@pytest.mark.parametrize("kind", ["api", "http"])
async def test_short_wallet_holds_nothing(ledger: Ledger, kind: str) -> None:
    owner = await ledger.funded(100)
    before = await snapshot(ledger.engine)
    assert await _hold(ledger.client(kind), "po_short", owner, 101) == "ledger.insufficient_funds"
    assert await snapshot(ledger.engine) == before


async def test_failed_gives_the_money_back(ledger: Ledger) -> None:
    owner = await ledger.funded(100)
    assert await _hold(ledger.api, "po_failed", owner, 40) == "held"
    await ledger.on("failed", "po_failed", owner, 40)
    w = await ledger.wallet(owner)
    assert (w.available_minor, w.posted_minor, w.debits_pending) == (100, 100, 0)
    assert await run_check(ledger.engine) == []


async def test_canceled_before_the_hold_makes_the_late_hold_a_no_op(ledger: Ledger) -> None:
    owner = await ledger.funded(100)
    await ledger.on("canceled", "po_early", owner, 40)
    assert await _hold(ledger.api, "po_early", owner, 40) == "held"  # the tombstone answers
    w = await ledger.wallet(owner)
    assert (w.available_minor, w.posted_minor, w.debits_pending) == (100, 100, 0)
    assert await run_check(ledger.engine) == []
