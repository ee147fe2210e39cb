"""Helpers for the payout tests: a stack whose sandbox moves payouts only when a test says so,
funded users, and the sandbox's side of a payout."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select

from pocketpay.payments.models import payouts
from tests.support import Stack, eventually, running_stack

ROUTING = "110000000"
PAID_ACCOUNT = "000123456789"
NO_ACCOUNT = "000111111116"  # Stripe's test number that fails with no_account
DEST = {"country": "US", "routing_number": ROUTING, "account_number": PAID_ACCOUNT}
# The sandbox never moves a payout by itself within a test: ``advance`` does.
HOLD_STILL = {"payout_transit_seconds": 3600.0, "payout_arrival_seconds": 7200.0}


@asynccontextmanager
async def payout_stack(backend: str, var_dir: Path, **extra: Any) -> AsyncIterator[Stack]:
    async with running_stack(backend, var_dir, sandbox=HOLD_STILL, **extra) as stack:
        yield stack


async def funded(stack: Stack, amount: int) -> dict[str, Any]:
    """A user whose top-up is settled: in the wallet and in the PSP's available balance."""
    user = await stack.user()
    await stack.pay(user, amount, until="settled")
    await stack.wait_available(user, amount)
    return user


def body(amount: int = 2000, account: str = PAID_ACCOUNT, **more: Any) -> dict[str, Any]:
    return {
        "amount_minor": amount,
        "currency": "USD",
        "destination": DEST | {"account_number": account},
        **more,
    }


def psp_payouts(stack: Stack, payout_id: str) -> list[Any]:
    """The sandbox's payouts made for one of ours."""
    return [
        p for p in stack.sandbox.store.payouts.values() if p.metadata.get("payout_id") == payout_id
    ]


async def advance(stack: Stack, payout_id: str, *, arrive: bool) -> None:
    """Make the sandbox move our payout now: in transit, and (``arrive``) paid or failed."""
    sandbox = stack.sandbox
    async with sandbox.lock:
        (po,) = psp_payouts(stack, payout_id)
        po.in_transit_at = 0
        if arrive:
            po.arrival_date = 0
    await sandbox.tick()


async def wait_payout(
    stack: Stack, user: dict[str, Any], payout_id: str, status: str
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        found: dict[str, Any] = (await stack.get(user, f"/api/v1/payouts/{payout_id}")).json()
        return found if found["status"] == status else None

    return await eventually(check)


async def row(stack: Stack, payout_id: str) -> Any:
    async with stack.runtime.engine.connect() as conn:
        return (await conn.execute(select(payouts).where(payouts.c.id == payout_id))).one()


async def wait_sent(stack: Stack, payout_id: str) -> Any:
    """Our payout once the PSP's id is recorded (stage ``sent``)."""

    async def check() -> Any:
        found = await row(stack, payout_id)
        return found if found.stage == "sent" else None

    return await eventually(check, timeout=30.0)
