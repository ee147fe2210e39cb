"""Disputes end to end: the sandbox opens a chargeback on a top-up and sends the signed
``charge.dispute.*`` webhooks; payments records the dispute (asking the PSP, never trusting the
event body), the user answers with evidence, the sandbox decides by its rule (evidence with
``winning_evidence`` wins), and the ledger holds, releases or posts the amount, with a debt
when the money was already spent, repaid first by the next credit. ``pocketpay check`` stays
clean. On SQLite and on PostgreSQL + NATS."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pocketpay.kit import failpoints
from tests.api.test_webhooks import deliver, event
from tests.disputes.support import open_dispute, spent
from tests.support import Stack, eventually, running_stack

pytestmark = pytest.mark.timeout(180)

# The sandbox decides nothing by itself within a test: ``decide`` does.
UNDECIDED = {"dispute_decision_seconds": 3600.0}
WIN = "Delivered and signed for. winning_evidence"
LOSE = "We think the customer is mistaken."


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    failpoints.disarm()
    async with running_stack(request.param, tmp_path, sandbox=UNDECIDED) as s:
        yield s
    failpoints.disarm()


async def dispute_of(stack: Stack, user: dict[str, Any], payment_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        r = await stack.get(user, f"/api/v1/payments/{payment_id}/disputes")
        assert r.status_code == 200, r.text
        data: list[dict[str, Any]] = r.json()["data"]
        return data[0] if data else None

    return await eventually(check)


async def wait_dispute(
    stack: Stack, user: dict[str, Any], dispute_id: str, status: str
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        found: dict[str, Any] = (await stack.get(user, f"/api/v1/disputes/{dispute_id}")).json()
        return found if found["status"] == status else None

    return await eventually(check)


async def decide(stack: Stack) -> None:
    """The bank decides every submitted dispute now (the sandbox's next tick)."""
    settings = stack.sandbox.settings
    settings.dispute_decision_seconds = 0.0
    try:
        await stack.sandbox.tick()
    finally:
        settings.dispute_decision_seconds = UNDECIDED["dispute_decision_seconds"]


async def evidence(
    stack: Stack, user: dict[str, Any], dispute_id: str, text: str, key: str = "auto"
) -> Any:
    return await stack.post(
        user, f"/api/v1/disputes/{dispute_id}/evidence", {"text": text}, key=key
    )


def psp_dispute(stack: Stack, payment_id: str) -> Any:
    (found,) = [
        d
        for d in stack.sandbox.store.disputes.values()
        if stack.sandbox.store.payment_intents[d.payment_intent].metadata.get("payment_id")
        == payment_id
    ]
    return found


async def wallet_is(stack: Stack, user: dict[str, Any], **want: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        r = await stack.get(user, "/api/v1/wallets")
        (w,) = [w for w in r.json()["data"] if w["currency"] == "USD"]
        return w if all(w.get(k) == v for k, v in want.items()) else None

    return await eventually(check)


async def test_a_dispute_won_holds_the_amount_then_gives_it_back(stack: Stack) -> None:
    user = await stack.user()
    pay = await stack.pay(user, 5000, pm="pm_card_createDispute")
    dispute = await dispute_of(stack, user, pay["id"])
    assert dispute["object"] == "dispute"
    assert (dispute["status"], dispute["reason"]) == ("needs_response", "fraudulent")
    assert (dispute["amount_minor"], dispute["currency"]) == (5000, "USD")
    assert dispute["evidence_due_by"] is not None and dispute["evidence"] is None
    listed = (await stack.get(user, "/api/v1/disputes")).json()
    assert [d["id"] for d in listed["data"]] == [dispute["id"]]
    await wallet_is(stack, user, available_minor=0, debt_minor=0)

    r = await evidence(stack, user, dispute["id"], WIN)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["evidence"]) == ("under_review", WIN)
    assert psp_dispute(stack, pay["id"]).evidence == {"uncategorized_text": WIN}

    await decide(stack)
    won = await wait_dispute(stack, user, dispute["id"], "won")
    assert won["closed_at"] is not None
    await wallet_is(stack, user, available_minor=5000, posted_minor=5000, debt_minor=0)
    assert await stack.ledger_problems() == []


async def test_a_dispute_lost_takes_the_amount(stack: Stack) -> None:
    user = await stack.user()
    pay = await stack.pay(user, 5000, pm="pm_card_createDispute")
    dispute = await dispute_of(stack, user, pay["id"])
    r = await evidence(stack, user, dispute["id"], LOSE)
    assert r.status_code == 200, r.text
    await decide(stack)
    await wait_dispute(stack, user, dispute["id"], "lost")
    await wallet_is(stack, user, available_minor=0, posted_minor=0, pending_minor=0, debt_minor=0)
    assert await stack.ledger_problems() == []


async def test_money_already_spent_becomes_a_debt_repaid_by_the_next_top_up(
    stack: Stack,
) -> None:
    user, friend, pay = await spent(stack, 5000, 4000)
    await open_dispute(stack, pay["id"])
    dispute = await dispute_of(stack, user, pay["id"])
    # 1000 held from what is left; the 4000 already sent is a debt.
    w = await wallet_is(stack, user, available_minor=0, debt_minor=4000)
    assert w["debt_account_id"]
    accounts = (await stack.get(user, "/api/v1/accounts")).json()["data"]
    assert {a["type"] for a in accounts} == {"wallet", "debt"}

    await stack.pay(user, 6000)  # the next credit repays the debt first
    await wallet_is(stack, user, available_minor=2000, debt_minor=0)

    assert (await evidence(stack, user, dispute["id"], LOSE)).status_code == 200
    await decide(stack)
    await wait_dispute(stack, user, dispute["id"], "lost")
    await wallet_is(stack, user, available_minor=2000, posted_minor=2000, debt_minor=0)
    await stack.wait_available(friend, 4000)  # the friend keeps what was sent
    assert await stack.ledger_problems() == []


async def test_a_dispute_won_after_the_debt_was_repaid_gives_the_repayment_back(
    stack: Stack,
) -> None:
    user, _, pay = await spent(stack, 5000, 5000)
    await open_dispute(stack, pay["id"])
    dispute = await dispute_of(stack, user, pay["id"])
    await wallet_is(stack, user, available_minor=0, debt_minor=5000)
    await stack.pay(user, 3000)
    await wallet_is(stack, user, available_minor=0, debt_minor=2000)

    assert (await evidence(stack, user, dispute["id"], WIN)).status_code == 200
    await decide(stack)
    await wait_dispute(stack, user, dispute["id"], "won")
    # Where the user would be without the dispute: 5000 sent, 3000 topped up.
    await wallet_is(stack, user, available_minor=3000, posted_minor=3000, debt_minor=0)
    assert await stack.ledger_problems() == []


async def test_an_inquiry_holds_nothing(stack: Stack) -> None:
    user = await stack.user()
    pay = await stack.pay(user, 5000, pm="pm_card_createDisputeInquiry")
    dispute = await dispute_of(stack, user, pay["id"])
    assert dispute["status"] == "warning_needs_response"
    await stack.wait_available(user, 5000)
    assert (await evidence(stack, user, dispute["id"], LOSE)).status_code == 200
    await decide(stack)
    await wait_dispute(stack, user, dispute["id"], "warning_closed")
    await wallet_is(stack, user, available_minor=5000, debt_minor=0)
    assert await stack.ledger_problems() == []


async def test_evidence_is_sent_once_and_only_while_the_dispute_needs_it(stack: Stack) -> None:
    user, other = await stack.user(), await stack.user()
    pay = await stack.pay(user, 5000, pm="pm_card_createDispute")
    dispute = await dispute_of(stack, user, pay["id"])
    path = f"/api/v1/disputes/{dispute['id']}"

    bad = await stack.post(user, f"{path}/evidence", {"text": ""})
    assert (bad.status_code, bad.json()["code"]) == (422, "validation.failed")
    bad = await stack.post(user, f"{path}/evidence", {"text": "x", "extra": 1})
    assert bad.status_code == 422
    assert (await stack.get(other, path)).status_code == 404
    assert (await evidence(stack, other, dispute["id"], WIN)).status_code == 404
    assert (await stack.get(user, "/api/v1/disputes/dp_nothing")).status_code == 404
    assert psp_dispute(stack, pay["id"]).submission_count == 0  # nothing reached the PSP

    first = await evidence(stack, user, dispute["id"], WIN, key="ev-1")
    again = await evidence(stack, user, dispute["id"], WIN, key="ev-1")
    assert first.status_code == again.status_code == 200
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert psp_dispute(stack, pay["id"]).submission_count == 1

    late = await evidence(stack, user, dispute["id"], LOSE, key="ev-2")
    assert (late.status_code, late.json()["code"]) == (409, "disputes.not_open")
    assert psp_dispute(stack, pay["id"]).evidence == {"uncategorized_text": WIN}


@pytest.mark.parametrize("point", ["payments.dispute.before_psp", "payments.dispute.after_psp"])
async def test_a_crash_around_the_psp_call_converges_on_retry(stack: Stack, point: str) -> None:
    user = await stack.user()
    pay = await stack.pay(user, 5000, pm="pm_card_createDispute")
    dispute = await dispute_of(stack, user, pay["id"])
    failpoints.arm(point, "raise")
    r = await evidence(stack, user, dispute["id"], WIN, key="ev-crash")
    assert r.status_code == 500
    assert failpoints.hits(point) == 1
    failpoints.disarm()
    r = await evidence(stack, user, dispute["id"], WIN, key="ev-crash")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["evidence"]) == ("under_review", WIN)
    assert psp_dispute(stack, pay["id"]).submission_count == 1  # the PSP replayed its answer
    await decide(stack)
    await wait_dispute(stack, user, dispute["id"], "won")
    await wallet_is(stack, user, available_minor=5000, debt_minor=0)
    assert await stack.ledger_problems() == []


async def test_a_redelivered_webhook_changes_nothing(stack: Stack) -> None:
    user = await stack.user()
    pay = await stack.pay(user, 5000, pm="pm_card_createDispute")
    dispute = await dispute_of(stack, user, pay["id"])
    await wallet_is(stack, user, available_minor=0)
    await stack.sandbox.flush_webhooks()
    (created,) = [
        e
        for e in stack.sandbox.events_of("charge.dispute.created")
        if e["data"]["object"]["payment_intent"] == psp_dispute(stack, pay["id"]).payment_intent
    ]
    again = await deliver(stack, json.dumps(created).encode())
    assert again.json() == {"received": True, "status": "duplicate"}
    # The same dispute under a new event id: recorded already, nothing is held twice.
    renamed = event("charge.dispute.created", created["data"]["object"])
    fresh = await deliver(stack, json.dumps(renamed).encode())
    assert fresh.json() == {"received": True, "status": "processed"}
    listed = (await stack.get(user, "/api/v1/disputes")).json()["data"]
    assert [d["id"] for d in listed] == [dispute["id"]]
    await wallet_is(stack, user, available_minor=0, posted_minor=5000, debt_minor=0)
    assert await stack.ledger_problems() == []


async def test_accepting_a_dispute_loses_it_at_once(stack: Stack) -> None:
    user = await stack.user()
    pay = await stack.pay(user, 5000, pm="pm_card_createDispute")
    dispute = await dispute_of(stack, user, pay["id"])
    path = f"/api/v1/disputes/{dispute['id']}/close"
    r = await stack.post(user, path, {}, key="close-1")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["closed_at"] is not None) == ("lost", True)
    assert psp_dispute(stack, pay["id"]).status == "lost"
    again = await stack.post(user, path, {}, key="close-2")
    assert (again.status_code, again.json()["code"]) == (409, "disputes.not_open")
    await wallet_is(stack, user, available_minor=0, posted_minor=0, debt_minor=0)
    assert await stack.ledger_problems() == []


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_lost_webhooks_the_sweep_finds_the_dispute_and_its_decision(
    tmp_path: Path, backend: str
) -> None:
    # The sandbox's webhooks go nowhere: only the sweep of the PSP's disputes learns of it.
    lost = UNDECIDED | {"webhook_url": "http://127.0.0.1:9/nowhere"}
    async with running_stack(backend, tmp_path, sandbox=lost) as s:
        flows = s.runtime.components["payments"].state["flows"]
        user = await s.user()
        pay = await s.pay(user, 5000, pm="pm_card_createDispute")
        assert psp_dispute(s, pay["id"]).status == "needs_response"
        assert await flows.sweep_disputes(3600) == 1
        dispute = await dispute_of(s, user, pay["id"])
        await wallet_is(s, user, available_minor=0, debt_minor=0)
        assert await flows.sweep_disputes(3600) == 0  # known, nothing new

        assert (await evidence(s, user, dispute["id"], WIN)).status_code == 200
        await decide(s)
        assert s.sandbox.events_of("charge.dispute.closed")  # sent, never received
        assert await flows.sweep_disputes(3600) == 1
        await wait_dispute(s, user, dispute["id"], "won")
        await wallet_is(s, user, available_minor=5000, debt_minor=0)
        assert await s.ledger_problems() == []
