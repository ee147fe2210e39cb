"""A user's debt through the public API, on SQLite and on PostgreSQL + NATS: GET /wallets
carries it, GET /api/v1/accounts lists the debt account after its wallet, and the account's
own routes (by id, balance now and at a time, transactions) serve it. The dispute event is
handed to the ledger's consumer directly (the payments side is tested in tests/disputes)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pocketpay.kit.bus import Envelope
from pocketpay.kit.clock import SystemClock
from pocketpay.kit.ids import new_id
from pocketpay.ledger.consumers import LedgerConsumer
from tests.api.helpers import assert_problem
from tests.support import Stack


async def open_dispute(stack: Stack, user: dict[str, Any], payment_id: str, amount: int) -> None:
    data = {
        "id": new_id("dp"),
        "object": "dispute",
        "payment_id": payment_id,
        "owner_id": user["user"]["id"],
        "currency": "USD",
        "amount_minor": amount,
        "status": "needs_response",
        "reason": "fraudulent",
        "purpose": "top_up",
        "evidence_due_by": None,
        "created_at": datetime.now(UTC).isoformat(),
    }
    clock = SystemClock()
    env = Envelope(new_id("evt"), "payments.dispute.created", clock.now(), data, source="payments")
    await LedgerConsumer(stack.runtime.engine, clock)(env)


async def test_the_debt_account_through_the_api(stack: Stack) -> None:
    alice, bob = await stack.user(), await stack.user()
    pay = await stack.pay(alice, 1000, until="captured")
    await stack.wait_available(alice, 1000)
    sent = await stack.post(
        alice,
        "/api/v1/transfers",
        {"recipient": bob["user"]["email"], "amount_minor": 600, "currency": "USD"},
    )
    assert sent.status_code == 201, sent.text
    await open_dispute(stack, alice, pay["id"], 1000)

    [wallet] = (await stack.get(alice, "/api/v1/wallets")).json()["data"]
    debt_id = f"debt_{alice['user']['id']}_USD"
    assert (wallet["available_minor"], wallet["debt_minor"], wallet["debt_account_id"]) == (
        0,
        600,
        debt_id,
    )
    listed = (await stack.get(alice, "/api/v1/accounts")).json()["data"]
    assert [(a["type"], a["id"]) for a in listed] == [("wallet", wallet["id"]), ("debt", debt_id)]
    debt = listed[1]
    assert (debt["posted_minor"], debt["available"], debt["pending_minor"]) == (-600, "-6.00", 0)
    assert (await stack.get(alice, f"/api/v1/accounts/{debt_id}")).json() == debt
    now = (await stack.get(alice, f"/api/v1/accounts/{debt_id}/balance")).json()
    assert (now["posted_minor"], now["at"]) == (-600, None)
    before = await stack.get(
        alice, f"/api/v1/accounts/{debt_id}/balance", at="2000-01-01T00:00:00+00:00"
    )
    assert before.json()["posted_minor"] == 0
    txs = (await stack.get(alice, f"/api/v1/accounts/{debt_id}/transactions")).json()["data"]
    assert [(t["code"], t["direction"], t["amount"]) for t in txs] == [
        ("dispute_debt", "debit", "6.00")
    ]
    assert (await stack.get(bob, "/api/v1/accounts")).json()["data"][0]["type"] == "wallet"
    for path in ("", "/balance", "/transactions"):
        assert_problem(await stack.get(bob, f"/api/v1/accounts/{debt_id}{path}"), 404, "not_found")
    assert await stack.ledger_problems() == []
