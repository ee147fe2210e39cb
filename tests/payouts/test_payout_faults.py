"""A payout that dies at each phase boundary is finished by the recovery paths alone, with the
same ids: exactly one payout at the PSP, the wallet down by the amount once paid (or whole
when it fails), ``pocketpay check`` clean. And a cancel of a payout the crash left without a
PSP payout guarantees none is made later. On SQLite and on PostgreSQL + NATS."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pocketpay.kit import failpoints
from pocketpay.kit.ids import derive_id
from pocketpay.payments.flows import payouts
from pocketpay.payments.models import payouts as payouts_table
from tests.payouts.support import (
    NO_ACCOUNT,
    PAID_ACCOUNT,
    advance,
    body,
    funded,
    payout_stack,
    psp_payouts,
    row,
    wait_payout,
    wait_sent,
)
from tests.support import Stack, eventually

pytestmark = pytest.mark.timeout(180)

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
POINTS = [
    "payments.payout.after_reserve",
    "payments.payout.after_hold",
    "payments.payout.after_psp",
]


@pytest.fixture(autouse=True)
def _disarm() -> None:
    failpoints.disarm()


async def _count(stack: Stack, owner_id: str) -> int:
    async with stack.runtime.engine.connect() as conn:
        n = await conn.scalar(select(func.count()).where(payouts_table.c.owner_id == owner_id))
    return int(n or 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize(("account", "outcome"), [(PAID_ACCOUNT, "paid"), (NO_ACCOUNT, "failed")])
async def test_crash_at_each_phase_is_recovered_by_the_reconciler(
    tmp_path: Path, backend: str, point: str, account: str, outcome: str
) -> None:
    async with payout_stack(backend, tmp_path) as stack:
        user = await funded(stack, 6000)
        failpoints.arm(point, "raise")
        r = await stack.post(user, "/api/v1/payouts", body(2500, account=account), key="po-c")
        assert r.status_code == 500  # the client saw a failure; it does not retry here
        assert failpoints.hits(point) == 1
        payout_id = derive_id("po", user["user"]["id"], "po-c")
        # The reconciler resumes the open attempt with the same ids.
        await wait_sent(stack, payout_id)
        assert len(psp_payouts(stack, payout_id)) == 1
        await stack.wait_available(user, 3500)
        await advance(stack, payout_id, arrive=True)
        await wait_payout(stack, user, payout_id, outcome)
        expected = 3500 if outcome == "paid" else 6000

        async def settled_wallet() -> dict[str, int] | None:
            w = await stack.wallet(user)
            done = (w["available_minor"], w["posted_minor"], w["pending_minor"])
            return w if done == (expected, expected, 0) else None

        await eventually(settled_wallet)
        assert len(psp_payouts(stack, payout_id)) == 1
        assert await _count(stack, user["user"]["id"]) == 1
        assert await stack.ledger_problems() == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("point", ["payments.payout.after_reserve", "payments.payout.after_hold"])
async def test_cancel_after_a_crash_before_the_psp_means_no_psp_payout_ever(
    tmp_path: Path, backend: str, point: str
) -> None:
    # The reconciler waits an hour: the test decides when recovery runs.
    async with payout_stack(backend, tmp_path, psp={"attempt_retry_seconds": 3600.0}) as stack:
        user = await funded(stack, 5000)
        failpoints.arm(point, "raise")
        r = await stack.post(user, "/api/v1/payouts", body(2000), key="po-x")
        assert r.status_code == 500
        payout_id = derive_id("po", user["user"]["id"], "po-x")
        c = await stack.post(user, f"/api/v1/payouts/{payout_id}/cancel", {})
        assert c.status_code == 200, c.text
        assert c.json()["status"] == "canceled"
        # Recovery comes later (the reconciler's resume, the client's retry): no PSP payout.
        ctx = stack.runtime.components["payments"].state["flows"].ctx
        await payouts.resume(ctx, payout_id)
        await payouts.send(ctx, payout_id)
        retry = await stack.post(user, "/api/v1/payouts", body(2000), key="po-x")
        assert retry.status_code == 202 and retry.json()["status"] == "canceled"
        assert psp_payouts(stack, payout_id) == []
        assert (await row(stack, payout_id)).psp_payout_id is None
        wallet = await stack.wait_available(user, 5000)
        assert wallet["pending_minor"] == 0
        assert await stack.ledger_problems() == []


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_cancel_that_wins_the_race_stops_the_psp_call(tmp_path: Path, backend: str) -> None:
    """The first request holds the money, then waits (blocked) before it claims the PSP call;
    a cancel lands meanwhile. The claim checks the status in its own transaction: the first
    request goes on, finds the payout canceled, and never asks the PSP."""
    async with payout_stack(backend, tmp_path, psp={"attempt_retry_seconds": 3600.0}) as stack:
        user = await funded(stack, 5000)
        point = "payments.payout.after_hold"
        failpoints.arm(point, "block")
        first = asyncio.create_task(stack.post(user, "/api/v1/payouts", body(2000), key="race"))
        await eventually(lambda: _true(failpoints.hits(point) == 1))
        payout_id = derive_id("po", user["user"]["id"], "race")
        assert (await row(stack, payout_id)).stage == "reserved"  # held at the ledger
        c = await stack.post(user, f"/api/v1/payouts/{payout_id}/cancel", {})
        assert c.status_code == 200 and c.json()["status"] == "canceled", c.text
        failpoints.release(point)
        answer = await first
        assert answer.status_code == 202 and answer.json()["status"] == "canceled"
        assert psp_payouts(stack, payout_id) == []
        wallet = await stack.wait_available(user, 5000)
        assert wallet["pending_minor"] == 0
        assert await stack.ledger_problems() == []


async def _true(value: bool) -> bool | None:
    return value or None
