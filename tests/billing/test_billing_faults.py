"""Billing's crash windows and concurrency: a charge interrupted before or after asking the
ledger is resumed with the same ids (one charge), whether by the client's retry or by the
scheduler; two schedulers renewing at once make every invoice once (PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from pocketpay.billing.flows import BillingCtx, BillingFlows
from pocketpay.billing.models import charges, invoices
from pocketpay.kit import failpoints
from pocketpay.ledger.chart import TransferCode
from pocketpay.ledger.models import transfers
from tests.api.helpers import funded
from tests.safety.support import retrying_post
from tests.support import Stack, running_stack

pytestmark = pytest.mark.timeout(240)
ADMIN = "ops@example.com"
SETTINGS: dict[str, Any] = {
    "auth": {"admin_emails": [ADMIN]},
    "billing": {"resume_after_seconds": 0.0},
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def billing(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    failpoints.disarm()
    async with running_stack(request.param, tmp_path, **SETTINGS) as stack:
        yield stack
    failpoints.disarm()


async def _count(stack: Stack, query: Any) -> int:
    async with stack.runtime.engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


def _wallet_collections() -> Any:
    return select(func.count()).where(transfers.c.code == int(TransferCode.INVOICE_FROM_WALLET))


@pytest.mark.parametrize("point", ["billing.charge.before_ask", "billing.charge.after_ask"])
@pytest.mark.parametrize("recovery", ["client_retry", "scheduler"])
async def test_an_interrupted_charge_charges_once(
    billing: Stack, point: str, recovery: str
) -> None:
    stack = billing
    admin = await stack.user(ADMIN)
    plan = (
        await stack.post(
            admin, "/api/v1/plans", {"name": "Pro", "amount_minor": 1000, "currency": "USD"}
        )
    ).json()
    alice = await funded(stack, 5000)
    body = {"plan_id": plan["id"], "payment_source": "wallet"}
    failpoints.arm(point, "raise", count=1)
    first = await stack.post(alice, "/api/v1/subscriptions", body, key="sub-1")
    assert first.status_code >= 500  # the outcome is unknown to the client
    if recovery == "client_retry":
        _, last = await retrying_post(stack, alice, "/api/v1/subscriptions", body, key="sub-1")
        assert last.status_code == 201, last.text
        sub = last.json()
    else:
        r = await stack.post(admin, "/api/v1/admin/test-clock/advance", {"seconds": 1}, key=None)
        assert r.status_code == 200, r.text
        (sub,) = (await stack.get(alice, "/api/v1/subscriptions")).json()["data"]
    assert failpoints.hits(point) == 1
    got = (await stack.get(alice, f"/api/v1/subscriptions/{sub['id']}")).json()
    assert got["status"] == "active"
    (invoice,) = (await stack.get(alice, "/api/v1/invoices")).json()["data"]
    assert invoice["status"] == "paid" and invoice["attempts"] == 1
    assert await _count(stack, _wallet_collections()) == 1
    assert (await stack.wallet(alice))["available_minor"] == 4000
    assert await stack.ledger_problems() == []


@pytest.mark.postgres
async def test_two_schedulers_renew_each_subscription_once(tmp_path: Path) -> None:
    async with running_stack("postgres", tmp_path, **SETTINGS) as stack:
        admin = await stack.user(ADMIN)
        plan = (
            await stack.post(
                admin, "/api/v1/plans", {"name": "Pro", "amount_minor": 100, "currency": "USD"}
            )
        ).json()
        users = [await funded(stack, 1000) for _ in range(4)]
        for user in users:
            r = await stack.post(
                user, "/api/v1/subscriptions", {"plan_id": plan["id"], "payment_source": "wallet"}
            )
            assert r.status_code == 201, r.text
        one: BillingFlows = stack.runtime.components["billing"].state["flows"]
        ctx = one.ctx
        two = BillingFlows(BillingCtx(**{**ctx.__dict__}))
        await ctx.clock.advance(95 * 86400)  # three renewals due each, nobody has run them
        for _ in range(5):
            await asyncio.gather(one.run_due(), two.run_due())
        per_sub = select(invoices.c.subscription_id, func.count()).group_by(
            invoices.c.subscription_id
        )
        async with stack.runtime.engine.connect() as conn:
            counts = {row[1] for row in (await conn.execute(per_sub)).all()}
            paid = (
                await conn.execute(select(func.count()).where(charges.c.status == "succeeded"))
            ).scalar_one()
        assert counts == {4}  # the first period and three renewals, each made once
        assert paid == 16
        for user in users:
            assert (await stack.wallet(user))["available_minor"] == 600
        assert await stack.ledger_problems() == []
