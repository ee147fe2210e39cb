"""The ledger's consumer and invoice payments, on SQLite and PostgreSQL: the hold and capture
of a payment with ``purpose`` invoice credit the platform's revenue account, never the owner's
wallet, in any order the bus delivers the events, once however often they are delivered;
events without a purpose (written before payments had one) are top-ups."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.bus import Envelope
from pocketpay.kit.clock import ManualClock
from pocketpay.kit.ids import new_id
from pocketpay.ledger import service
from pocketpay.ledger.chart import system_account_id, wallet_account_id
from pocketpay.ledger.check import run_check
from pocketpay.ledger.consumers import LedgerConsumer

REVENUE = system_account_id("revenue", "USD")


def _invoice_payment(amount: int = 1000) -> dict[str, Any]:
    return {
        "payment_id": new_id("pay"),
        "owner_id": new_id("usr"),
        "currency": "USD",
        "amount_minor": amount,
        "amount_captured_minor": amount,
        "purpose": "invoice",
        "reference": new_id("in"),
    }


async def _deliver(
    engine: AsyncEngine, event_type: str, data: dict[str, Any], event_id: str | None = None
) -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    env = Envelope(event_id or new_id("evt"), event_type, clock.now(), data, source="payments")
    await LedgerConsumer(engine, clock)(env)


async def _balance(engine: AsyncEngine, account_id: str) -> service.Balance:
    async with engine.connect() as conn:
        return await service.balance(conn, account_id)


async def _wallet(engine: AsyncEngine, d: dict[str, Any]) -> service.Balance:
    return await _balance(engine, wallet_account_id(d["owner_id"], "USD"))


async def test_hold_capture_and_settlement_credit_revenue_once(engine: AsyncEngine) -> None:
    d = _invoice_payment(900)
    await _deliver(engine, "payments.payment.authorized", d)
    held = await _balance(engine, REVENUE)
    assert (held.credits_pending, held.credits_posted) == (900, 0)
    captured = new_id("evt")
    await _deliver(engine, "payments.payment.captured", d, captured)
    await _deliver(engine, "payments.payment.captured", d, captured)  # redelivered
    await _deliver(engine, "payments.payment.captured", d)  # republished: same transfer ids
    await _deliver(engine, "payments.payment.settled", d)
    revenue = await _balance(engine, REVENUE)
    assert (revenue.credits_pending, revenue.credits_posted) == (0, 900)
    wallet = await _wallet(engine, d)
    assert (wallet.credits_pending, wallet.credits_posted) == (0, 0)
    assert await run_check(engine) == []


async def test_capture_before_authorization_credits_revenue_once(engine: AsyncEngine) -> None:
    d = _invoice_payment(700)
    await _deliver(engine, "payments.payment.captured", d)
    await _deliver(engine, "payments.payment.authorized", d)
    revenue = await _balance(engine, REVENUE)
    assert (revenue.credits_pending, revenue.credits_posted) == (0, 700)
    assert (await _wallet(engine, d)).credits_posted == 0
    assert await run_check(engine) == []


async def test_void_before_hold_leaves_revenue_untouched(engine: AsyncEngine) -> None:
    d = _invoice_payment()
    await _deliver(engine, "payments.payment.failed", d)
    await _deliver(engine, "payments.payment.authorized", d)  # late: respects the tombstone
    revenue = await _balance(engine, REVENUE)
    assert (revenue.credits_pending, revenue.credits_posted) == (0, 0)
    assert await run_check(engine) == []


async def test_an_event_without_a_purpose_is_a_top_up(engine: AsyncEngine) -> None:
    d = _invoice_payment(400)
    del d["purpose"], d["reference"]
    await _deliver(engine, "payments.payment.captured", d)
    assert (await _wallet(engine, d)).available_minor == 400
    assert (await _balance(engine, REVENUE)).credits_posted == 0
    assert await run_check(engine) == []
