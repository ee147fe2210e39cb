"""The ledger's consumer is order-insensitive per payment and never swallows an invariant
violation, on SQLite and PostgreSQL: events handled in the order several relays or a NAK and
redelivery can produce."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.bus import Envelope
from pocketpay.kit.clock import ManualClock
from pocketpay.kit.ids import new_id
from pocketpay.ledger import service
from pocketpay.ledger.chart import wallet_account_id
from pocketpay.ledger.check import run_check
from pocketpay.ledger.consumers import LedgerConsumer
from pocketpay.ledger.errors import PendingNotOpen, TransferNotFound


def _payment(amount: int = 1000) -> dict[str, Any]:
    return {
        "payment_id": new_id("pay"),
        "owner_id": new_id("usr"),
        "currency": "USD",
        "amount_minor": amount,
        "amount_captured_minor": amount,
    }


async def _deliver(engine: AsyncEngine, event_type: str, data: dict[str, Any]) -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    env = Envelope(new_id("evt"), event_type, clock.now(), data, source="payments")
    await LedgerConsumer(engine, clock)(env)


async def _wallet(engine: AsyncEngine, d: dict[str, Any]) -> service.Balance:
    async with engine.connect() as conn:
        return await service.balance(conn, wallet_account_id(d["owner_id"], "USD"))


@pytest.mark.parametrize("void", ["canceled", "failed"])
async def test_void_before_hold_leaves_nothing_pending(engine: AsyncEngine, void: str) -> None:
    d = _payment()
    await _deliver(engine, f"payments.payment.{void}", d)
    await _deliver(engine, "payments.payment.authorized", d)  # late: respects the tombstone
    w = await _wallet(engine, d)
    assert (w.credits_pending, w.credits_posted) == (0, 0)
    assert await run_check(engine) == []
    # and the capture of such a payment is an invariant violation, raised
    with pytest.raises(PendingNotOpen):
        await _deliver(engine, "payments.payment.captured", d)


async def test_capture_before_authorization_posts_once(engine: AsyncEngine) -> None:
    d = _payment(700)
    await _deliver(engine, "payments.payment.captured", d)
    await _deliver(engine, "payments.payment.authorized", d)
    w = await _wallet(engine, d)
    assert (w.available_minor, w.pending_minor) == (700, 0)
    assert await run_check(engine) == []


async def test_missing_refund_hold_is_raised_and_changes_nothing(engine: AsyncEngine) -> None:
    d = _payment()
    await _deliver(engine, "payments.payment.authorized", d)
    await _deliver(engine, "payments.payment.captured", d)
    refund = d | {"refund_id": new_id("re"), "amount_minor": 300, "held": True}
    with pytest.raises(TransferNotFound):
        await _deliver(engine, "payments.refund.succeeded", refund)
    assert (await _wallet(engine, d)).available_minor == 1000
    # a refund that was never held (refused before the hold, or a compensation): a no-op
    await _deliver(engine, "payments.refund.failed", refund | {"held": False})
    assert (await _wallet(engine, d)).available_minor == 1000
    assert await run_check(engine) == []
