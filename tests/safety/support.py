"""Helpers for the fault tests: a client that retries like a real one, and counts of effects
at the PSP and in our tables."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from pocketpay.payments.models import payments
from pocketpay.payments.providers.base import PspIntent, PspRefund
from tests.support import Stack, eventually

CARD = "pm_card_visa"
MAX_RETRIES = 5


async def retrying_post(
    stack: Stack, user: dict[str, Any], path: str, body: Any, *, key: str
) -> tuple[httpx.Response, httpx.Response]:
    """POST with one Idempotency-Key until the answer is not a 5xx or a 409 (in progress):
    what the API tells clients to do. Returns (first answer, last answer)."""
    first = last = await stack.post(user, path, body, key=key)
    for _ in range(MAX_RETRIES):
        if last.status_code < 500 and last.status_code != 409:
            break
        last = await stack.post(user, path, body, key=key)
    return first, last


def _provider(stack: Stack) -> Any:
    return stack.runtime.components["payments"].state["flows"].ctx.provider


async def psp_intents(stack: Stack, payment_id: str) -> list[PspIntent]:
    """Every PaymentIntent the PSP holds for one of our payments."""
    return [
        i
        async for i in _provider(stack).list_intents()
        if i.metadata.get("payment_id") == payment_id
    ]


async def psp_refunds(stack: Stack, payment_id: str) -> list[PspRefund]:
    return [
        r
        async for r in _provider(stack).list_refunds()
        if r.metadata.get("payment_id") == payment_id
    ]


async def payment_rows(stack: Stack, user: dict[str, Any]) -> int:
    async with stack.runtime.engine.connect() as conn:
        n = await conn.scalar(select(func.count()).where(payments.c.owner_id == user["user"]["id"]))
    return int(n or 0)


async def funded_user(stack: Stack, amount: int) -> dict[str, Any]:
    user = await stack.user()
    await stack.pay(user, amount)
    await stack.wait_available(user, amount)
    return user


async def reconciled(stack: Stack, timeout: float = 30.0) -> None:
    """``pocketpay check``'s three-way reconciliation (no grace period) comes out clean once
    the system has drained: what is in flight settles, nothing is left inconsistent."""
    from datetime import UTC, datetime

    from pocketpay.reconcile import reconcile

    last: list[str] = []

    async def clean() -> bool:
        report = await reconcile(
            stack.runtime.engine,
            _provider(stack),
            now=datetime.now(UTC),
            grace_seconds=0,
            hold_deadline_seconds=0,
            require_psp=True,
        )
        last[:] = [f.line() for f in report.findings]
        return not report.findings

    try:
        await eventually(clean, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"three-way check not clean: {last}") from None
