"""A fault at every phase boundary of every money flow, with a client that retries with the
same Idempotency-Key, as the API tells it to: exactly one effect per key, one PSP charge per
payment, one PSP refund per refund, the ledger consistent. On SQLite + embedded bus and on
PostgreSQL + NATS (the ``stack`` fixture).

A ``raise`` failpoint after a commit is an unknown outcome seen from the caller (the effect
happened, the answer was lost: a timeout, a 5xx, a dropped connection); a lock left by a
request that died is expired by hand (what 60 seconds would do)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select, update

from pocketpay.gateway.models import idempotency_keys
from pocketpay.kit import failpoints
from pocketpay.ledger.models import transfers
from tests.safety.support import (
    CARD,
    funded_user,
    payment_rows,
    psp_intents,
    psp_refunds,
    reconciled,
    retrying_post,
)
from tests.support import Stack, eventually

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("point", ["payments.create.after_commit", "payments.authorize.before_psp"])
async def test_create_unknown_outcome_makes_one_payment_and_one_charge(
    stack: Stack, point: str
) -> None:
    user = await stack.user()
    failpoints.arm(point, "raise")
    body = {"amount_minor": 2500, "currency": "USD", "payment_method": CARD}
    first, last = await retrying_post(stack, user, "/api/v1/payments", body, key="create-1")
    assert last.status_code == 202, last.text
    pid = last.json()["id"]
    await stack.wait_status(user, pid, "captured")
    await stack.wait_available(user, 2500)
    assert await payment_rows(stack, user) == 1
    assert len(await psp_intents(stack, pid)) == 1
    assert await stack.ledger_problems() == []
    await reconciled(stack)
    if point == "payments.create.after_commit":
        assert first.status_code >= 500  # the client saw a failure, the effect happened


async def test_authorize_psp_answer_lost_resumes_with_the_same_key(stack: Stack) -> None:
    user = await stack.user()
    failpoints.arm("payments.authorize.after_psp", "raise")
    payment = await stack.pay(user, 4000)  # the bus redelivers; the PSP replays the intent
    assert failpoints.hits("payments.authorize.after_psp") == 1
    assert len(await psp_intents(stack, payment["id"])) == 1
    await stack.wait_available(user, 4000)
    assert await stack.ledger_problems() == []
    await reconciled(stack)


async def test_response_lost_after_commit_replays_after_lock_expiry(stack: Stack) -> None:
    """The gateway died between the downstream commit and storing the response."""
    user = await stack.user()
    failpoints.arm("gateway.idempotency.before_store", "raise")
    body = {"amount_minor": 1500, "currency": "USD", "payment_method": CARD}
    r1 = await stack.post(user, "/api/v1/payments", body, key="lost-1")
    assert r1.status_code == 500
    r2 = await stack.post(user, "/api/v1/payments", body, key="lost-1")
    assert r2.status_code == 409 and r2.headers["Retry-After"]  # the dead request's lock
    async with stack.runtime.engine.begin() as conn:  # what LOCK_SECONDS would do
        await conn.execute(
            update(idempotency_keys)
            .where(idempotency_keys.c.key == "lost-1")
            .values(locked_until=datetime(2000, 1, 1, tzinfo=UTC))
        )
    r3 = await stack.post(user, "/api/v1/payments", body, key="lost-1")
    assert r3.status_code == 202, r3.text
    await stack.wait_status(user, r3.json()["id"], "captured")
    assert await payment_rows(stack, user) == 1
    r4 = await stack.post(user, "/api/v1/payments", body | {"amount_minor": 99}, key="lost-1")
    assert r4.status_code == 422 and r4.json()["code"] == "idempotency.key_reused"


async def test_transfer_unknown_outcome_moves_money_once(stack: Stack) -> None:
    alice = await funded_user(stack, 5000)
    bob = await stack.user()
    failpoints.arm("ledger.transfer.after_commit", "raise")
    body = {"recipient": bob["user"]["email"], "amount_minor": 700, "currency": "USD"}
    first, last = await retrying_post(stack, alice, "/api/v1/transfers", body, key="tr-1")
    assert first.status_code >= 500 and last.status_code == 201, last.text
    assert (await stack.wallet(alice))["available_minor"] == 4300
    assert (await stack.wallet(bob))["available_minor"] == 700
    async with stack.runtime.engine.connect() as conn:
        n = await conn.scalar(
            select(func.count()).where(transfers.c.code == 104, transfers.c.amount_minor == 700)
        )
    assert n == 1
    assert await stack.ledger_problems() == []
    await reconciled(stack)


@pytest.mark.parametrize(
    "point",
    [
        "payments.refund.after_reserve",
        "payments.refund.after_hold",
        "payments.refund.after_held",
        "payments.refund.after_psp",
    ],
)
async def test_refund_fault_at_each_phase_refunds_once(stack: Stack, point: str) -> None:
    user = await stack.user()
    payment = await stack.pay(user, 6000)
    await stack.wait_available(user, 6000)
    failpoints.arm(point, "raise")
    path = f"/api/v1/payments/{payment['id']}/refunds"
    first, last = await retrying_post(stack, user, path, {"amount_minor": 2500}, key="re-1")
    assert first.status_code >= 500 and last.status_code == 202, last.text
    refund = last.json()

    async def done() -> dict[str, Any] | None:
        body: dict[str, Any] = (await stack.get(user, f"/api/v1/refunds/{refund['id']}")).json()
        return body if body["status"] == "succeeded" else None

    await eventually(done)
    await stack.wait_available(user, 3500)
    refunds = await psp_refunds(stack, payment["id"])
    assert [r.amount_minor for r in refunds] == [2500]
    assert await stack.ledger_problems() == []
    await reconciled(stack)


@pytest.mark.parametrize("point", ["payments.capture.after_psp", "payments.cancel.after_psp"])
async def test_capture_and_cancel_unknown_outcome_converge(stack: Stack, point: str) -> None:
    user = await stack.user()
    payment = await stack.pay(user, 3000, capture="manual", until="authorized")
    failpoints.arm(point, "raise")
    verb = "capture" if "capture" in point else "cancel"
    path = f"/api/v1/payments/{payment['id']}/{verb}"
    first, last = await retrying_post(stack, user, path, {}, key=f"{verb}-1")
    assert first.status_code >= 500 and last.status_code == 200, last.text
    want = "captured" if verb == "capture" else "canceled"
    assert last.json()["status"] == want
    [intent] = await psp_intents(stack, payment["id"])
    assert intent.status == ("succeeded" if verb == "capture" else "canceled")
    await stack.wait_available(user, 3000 if verb == "capture" else 0)
    if verb == "cancel":

        async def voided() -> bool:
            w = await stack.wallet(user)
            return w["pending_minor"] == 0

        await eventually(voided)
    assert await stack.ledger_problems() == []
    await reconciled(stack)
