"""Races and states reality forces on us: a cancel racing the asynchronous authorization,
concurrent partial refunds where one fails, a refund of spent money, webhooks the PSP must
resend, attempts that never conclude. Both backends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, update

from pocketpay.kit import failpoints
from pocketpay.payments.flows import recovery, refunds
from pocketpay.payments.models import attempts, psp_events
from pocketpay.payments.providers.base import PspUnavailable
from tests.safety.support import (
    CARD,
    funded_user,
    psp_intents,
    psp_refunds,
    reconciled,
    retrying_post,
)
from tests.support import Stack, eventually

pytestmark = pytest.mark.timeout(180)


def _ctx(stack: Stack) -> Any:
    return stack.runtime.components["payments"].state["flows"].ctx


@pytest.mark.parametrize("capture", ["automatic", "manual"])
async def test_cancel_racing_authorization_leaves_no_charge(stack: Stack, capture: str) -> None:
    """The cancel commits while the authorization is on its way to the PSP: the PSP's answer
    meets a canceled payment and is compensated (void or full refund at the PSP)."""
    user = await stack.user()
    failpoints.arm("payments.authorize.before_psp", "block")
    body = {"amount_minor": 4200, "currency": "USD", "payment_method": CARD}
    created = await stack.post(user, "/api/v1/payments", body | {"capture_method": capture})
    pid = created.json()["id"]
    await eventually(lambda: _true(failpoints.hits("payments.authorize.before_psp") == 1))
    canceled = await stack.post(user, f"/api/v1/payments/{pid}/cancel", {})
    assert canceled.json()["status"] == "canceled"
    failpoints.release("payments.authorize.before_psp")

    async def compensated() -> bool:
        found = await psp_intents(stack, pid)
        if not found:
            return False
        assert len(found) == 1  # one authorization, never two
        intent = found[0]
        if capture == "manual":
            return intent.status == "canceled"
        refunded = [r for r in await psp_refunds(stack, pid) if r.status == "succeeded"]
        return sum(r.amount_minor for r in refunded) == intent.amount_received_minor == 4200

    await eventually(compensated)
    assert (await stack.get(user, f"/api/v1/payments/{pid}")).json()["status"] == "canceled"
    w = await stack.wallet(user)
    assert (w["available_minor"], w["pending_minor"]) == (0, 0)
    assert await stack.ledger_problems() == []
    await reconciled(stack)


async def _true(value: bool) -> bool:
    return value


async def test_concurrent_partial_refunds_one_failing(stack: Stack) -> None:
    """A succeeds while B is in flight and then fails: the payment must not become
    ``refunded`` (terminal) with money still captured; B's amount is refundable again."""
    user = await stack.user()
    payment = await stack.pay(user, 10_000)
    await stack.wait_available(user, 10_000)
    path = f"/api/v1/payments/{payment['id']}/refunds"
    # B must stay held until the test fails it: the reconciler would otherwise resume it
    # after attempt_retry_seconds (0.5 s in tests, less than a loaded machine takes for A).
    _ctx(stack).retry_seconds = 3600.0
    failpoints.arm("payments.refund.after_held", "raise")  # B stops, held, before the PSP
    b = await stack.post(user, path, {"amount_minor": 6000}, key="refund-b")
    assert b.status_code == 500
    a = await stack.post(user, path, {"amount_minor": 4000}, key="refund-a")
    assert a.status_code == 202 and a.json()["status"] == "succeeded", a.text
    p = (await stack.get(user, f"/api/v1/payments/{payment['id']}")).json()
    assert p["status"] in ("captured", "settled")  # 4000 + 6000 reserved, only 4000 refunded
    [b_row] = [r for r in await _refund_rows(stack) if r.amount_minor == 6000]
    assert b_row.status == "held"
    await refunds.finish(_ctx(stack), b_row.id, ok=False, failure="expired_or_canceled_card")
    p = (await stack.get(user, f"/api/v1/payments/{payment['id']}")).json()
    assert p["status"] in ("captured", "settled") and p["amount_refunded_minor"] == 4000
    await stack.wait_available(user, 6000)  # B's hold voided, A's posted
    again = await stack.post(user, path, {"amount_minor": 6000}, key="refund-c")
    assert again.json()["status"] == "succeeded", again.text
    p = await stack.wait_status(user, payment["id"], "refunded")
    assert p["amount_refunded_minor"] == 10_000
    assert await stack.ledger_problems() == []
    await reconciled(stack)


async def _refund_rows(stack: Stack) -> list[Any]:
    from pocketpay.payments.models import refunds as table

    async with stack.runtime.engine.connect() as conn:
        return list((await conn.execute(select(table))).all())


async def test_refund_of_spent_money_fails_and_never_reaches_the_psp(stack: Stack) -> None:
    alice = await funded_user(stack, 3000)
    bob = await stack.user()
    payment = (await stack.get(alice, "/api/v1/payments")).json()["data"][0]
    sent = await stack.post(
        alice,
        "/api/v1/transfers",
        {"recipient": bob["user"]["email"], "amount_minor": 2500, "currency": "USD"},
    )
    assert sent.status_code == 201
    r = await stack.post(alice, f"/api/v1/payments/{payment['id']}/refunds", {})
    assert r.status_code == 422 and r.json()["code"] == "ledger.insufficient_funds"
    assert await psp_refunds(stack, payment["id"]) == []
    [row] = await _refund_rows(stack)
    assert row.status == "failed"
    p = (await stack.get(alice, f"/api/v1/payments/{payment['id']}")).json()
    assert p["amount_refunded_minor"] == 0
    assert await stack.ledger_problems() == []
    await reconciled(stack)


async def test_webhook_is_resent_when_the_psp_cannot_be_asked(stack: Stack) -> None:
    """A webhook whose effect needs the PSP's current state fails (503) while the PSP is
    unreachable, and records nothing: the PSP's retry is applied."""
    user = await stack.user()
    payment = await stack.pay(user, 2000, capture="manual", until="authorized")
    [intent] = await psp_intents(stack, payment["id"])
    event = {
        "id": "evt_resend_1",
        "type": "payment_intent.succeeded",
        "data": {"object": {"id": intent.intent_id, "metadata": {"payment_id": payment["id"]}}},
    }
    # The PSP captured (say, from its dashboard); its webhook arrives while it is unreachable.
    provider = _ctx(stack).provider
    await provider.capture(intent.intent_id, None, f"pp_{payment['id']}_capture")
    original = provider.retrieve

    async def down(intent_id: str) -> Any:
        raise PspUnavailable(f"timeout retrieving {intent_id}")

    provider.retrieve = down
    try:
        with pytest.raises(Exception) as exc:
            await recovery.handle_psp_event(_ctx(stack), event)
        assert getattr(exc.value, "status", None) == 503
        async with stack.runtime.engine.connect() as conn:
            seen = await conn.scalar(
                select(psp_events.c.event_id).where(psp_events.c.event_id == event["id"])
            )
        assert seen is None  # not claimed: the resent event is processed
    finally:
        provider.retrieve = original
    assert await recovery.handle_psp_event(_ctx(stack), event) == {"status": "processed"}
    assert await recovery.handle_psp_event(_ctx(stack), event) == {"status": "duplicate"}
    await stack.wait_status(user, payment["id"], "captured", "settled")
    await stack.wait_available(user, 2000)


async def test_attempt_that_never_concludes_is_flagged_stuck(stack: Stack) -> None:
    """The reconciler resumes an open attempt a bounded number of times, then flags it for an
    operator (payments' readiness degrades) instead of retrying forever."""
    user = await stack.user()
    ctx = _ctx(stack)
    failpoints.arm("payments.authorize.before_psp", "raise", count=None)
    r = await stack.post(
        user, "/api/v1/payments", {"amount_minor": 900, "currency": "USD", "payment_method": CARD}
    )
    pid = r.json()["id"]
    row = await eventually(lambda: _attempt(stack, pid))  # recorded before the PSP call
    assert row.status == "pending"
    for _ in range(ctx.max_tries + 1):
        await _age_attempts(stack, pid)
        await recovery.reconcile(ctx)
    row = await _attempt(stack, pid)
    assert row is not None and row.status == "stuck" and row.tries == ctx.max_tries
    ready = (await stack.http.get("/components/payments/readyz")).json()
    assert ready["status"] == "degraded"
    failpoints.disarm("payments.authorize.before_psp")


async def _age_attempts(stack: Stack, pid: str) -> None:
    """Make the payment's attempts older than the reconciler's retry horizon."""
    async with stack.runtime.engine.begin() as conn:
        await conn.execute(
            update(attempts)
            .where(attempts.c.payment_id == pid)
            .values(updated_at=datetime(2000, 1, 1, tzinfo=UTC))
        )


async def _attempt(stack: Stack, pid: str) -> Any:
    async with stack.runtime.engine.connect() as conn:
        return (await conn.execute(select(attempts).where(attempts.c.payment_id == pid))).first()


async def test_replayed_request_after_success_changes_nothing(stack: Stack) -> None:
    user = await stack.user()
    payment = await stack.pay(user, 5000)
    await stack.wait_available(user, 5000)
    path = f"/api/v1/payments/{payment['id']}/refunds"
    first, _ = await retrying_post(stack, user, path, {"amount_minor": 1000}, key="same")
    again = await stack.post(user, path, {"amount_minor": 1000}, key="same")
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    assert len(await psp_refunds(stack, payment["id"])) == 1


async def test_an_open_breaker_does_not_use_up_the_tries(stack: Stack) -> None:
    """During a PSP outage the breaker is open and refuses calls without reaching the PSP: the
    reconciler waits instead of counting tries, so a long outage flags nothing stuck."""
    user = await stack.user()
    ctx = _ctx(stack)
    failpoints.arm("payments.authorize.before_psp", "raise", count=None)
    r = await stack.post(
        user, "/api/v1/payments", {"amount_minor": 800, "currency": "USD", "payment_method": CARD}
    )
    pid = r.json()["id"]
    await eventually(lambda: _attempt(stack, pid))
    breaker = ctx.provider.breaker
    for _ in range(ctx.max_tries + 2):
        while breaker.state != "open":  # the PSP keeps failing (its reset is short in tests)
            breaker.record_failure(breaker.before_call())
        await _age_attempts(stack, pid)
        await recovery.reconcile(ctx)
    row = await _attempt(stack, pid)
    assert (row.status, row.tries) == ("pending", 0)
    failpoints.disarm("payments.authorize.before_psp")
    breaker.record_success()  # the PSP is back
    await recovery.reconcile(ctx)
    await stack.wait_status(user, pid, "captured", "settled")


async def test_lost_webhook_of_an_automatic_capture_is_found_by_the_reconciler(
    stack: Stack,
) -> None:
    """The PSP answered ``requires_capture`` for an automatic-capture payment (it captures
    later, on its own) and the webhook saying it did is lost: the open capture attempt makes
    the reconciler ask, and the payment is captured and credited."""
    from pocketpay.payments.flows import intents
    from pocketpay.payments.models import payments as payments_table

    user = await stack.user()
    ctx = _ctx(stack)
    payment = await stack.pay(user, 1200, capture="manual", until="authorized")
    pid = payment["id"]
    async with stack.runtime.engine.begin() as conn:  # as if the answer had not arrived yet
        await conn.execute(
            update(payments_table)
            .where(payments_table.c.id == pid)
            .values(status="created", capture_method="automatic")
        )
        await conn.execute(attempts.delete().where(attempts.c.payment_id == pid))
    [intent] = await psp_intents(stack, pid)
    await intents.apply_intent(ctx, pid, await ctx.provider.retrieve(intent.intent_id), cause="psp")
    row = await _attempt(stack, pid)
    assert (row.operation, row.status) == ("capture", "pending")
    # The PSP captures; its webhook never arrives.
    await ctx.provider.capture(intent.intent_id, None, "psp-side-capture")
    await _age_attempts(stack, pid)
    await recovery.reconcile(ctx)
    await stack.wait_status(user, pid, "captured", "settled")
    assert (await _attempt(stack, pid)).status == "succeeded"
    await stack.wait_available(user, 1200)
