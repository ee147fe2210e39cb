"""Helpers for the dispute tests: the cardholder's bank opens a dispute on any captured payment
of ours (the sandbox's operator route), and a user who already spent a top-up."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from pocketpay.payments.models import payments
from pocketpay.sandbox import disputes as sandbox_disputes
from pocketpay.sandbox.state import Store
from tests.support import Stack


async def open_dispute(stack: Stack, payment_id: str, *, inquiry: bool = False) -> None:
    """The cardholder's bank disputes one of our captured payments, as ``POST
    /_sandbox/disputes`` does."""
    async with stack.runtime.engine.connect() as conn:
        intent = await conn.scalar(
            select(payments.c.psp_intent_id).where(payments.c.id == payment_id)
        )
    assert intent is not None

    def op(store: Store) -> dict[str, Any]:
        pi = store.payment_intent(intent)
        assert pi.latest_charge is not None
        charge = store.charge(pi.latest_charge)
        return sandbox_disputes.open_for_charge(store, charge, inquiry=inquiry).to_stripe()

    outcome = await stack.sandbox.execute(op)
    assert outcome.status == 200, outcome.body


async def spent(
    stack: Stack, paid: int, sent: int
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(user, friend, payment): the user topped up ``paid`` and sent ``sent`` of it to the
    friend, both settled in the wallets."""
    user, friend = await stack.user(), await stack.user()
    pay = await stack.pay(user, paid)
    await stack.wait_available(user, paid)
    r = await stack.post(
        user,
        "/api/v1/transfers",
        {"recipient": friend["user"]["email"], "amount_minor": sent, "currency": "USD"},
    )
    assert r.status_code in (200, 201), r.text
    await stack.wait_available(friend, sent)
    return user, friend, pay
