"""Payouts end to end through the public API, on SQLite and on PostgreSQL + NATS: paid
(the hold posted), failed at the bank (funds back), canceled while pending, refused by the
wallet (nothing held) and by the PSP's available balance, bad destinations, another user's
payout, and a replayed Idempotency-Key (one payout at the PSP)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from pocketpay.kit.client import InternalClient
from pocketpay.kit.errors import AppError
from pocketpay.kit.listing import Page
from pocketpay.ledger.models import transfers
from pocketpay.payments.client import HttpPaymentsClient
from tests.payouts.support import (
    DEST,
    HOLD_STILL,
    NO_ACCOUNT,
    advance,
    body,
    funded,
    payout_stack,
    psp_payouts,
    row,
    wait_payout,
    wait_sent,
)
from tests.support import Stack, eventually, running_stack

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    async with payout_stack(request.param, tmp_path) as s:
        yield s


async def test_paid_payout_takes_the_money_once(stack: Stack) -> None:
    user = await funded(stack, 5000)
    r = await stack.post(user, "/api/v1/payouts", body(2000, description="Savings"))
    assert r.status_code == 202, r.text
    payout = r.json()
    assert payout["status"] == "pending" and payout["id"].startswith("po_")
    assert payout["destination"] == {
        "country": "US",
        "routing_number": "110000000",
        "last4": "6789",
    }
    wallet = await stack.wait_available(user, 3000)
    assert wallet["posted_minor"] == 5000  # held, not gone yet
    (at_psp,) = psp_payouts(stack, payout["id"])
    assert (at_psp.amount, at_psp.currency, at_psp.status) == (2000, "usd", "pending")
    stored = await row(stack, payout["id"])
    assert stored.psp_payout_id == at_psp.id and stored.last4 == "6789"
    assert DEST["account_number"] not in repr(tuple(stored))  # only the PSP has the number

    await advance(stack, payout["id"], arrive=False)
    await wait_payout(stack, user, payout["id"], "in_transit")
    await advance(stack, payout["id"], arrive=True)
    paid = await wait_payout(stack, user, payout["id"], "paid")
    assert paid["failure_code"] is None

    async def posted() -> dict[str, int] | None:
        w = await stack.wallet(user)
        return w if w["posted_minor"] == 3000 else None

    wallet = await eventually(posted)
    assert wallet["available_minor"] == 3000
    assert await stack.ledger_problems() == []
    listed = (await stack.get(user, "/api/v1/payouts")).json()
    assert [p["id"] for p in listed["data"]] == [payout["id"]]
    again = await stack.post(user, f"/api/v1/payouts/{payout['id']}/cancel", {})
    assert again.status_code == 409 and again.json()["code"] == "payouts.not_cancelable"


async def test_failed_payout_gives_the_money_back(stack: Stack) -> None:
    user = await funded(stack, 5000)
    r = await stack.post(user, "/api/v1/payouts", body(1500, account=NO_ACCOUNT))
    assert r.status_code == 202, r.text
    payout = r.json()
    await stack.wait_available(user, 3500)
    await advance(stack, payout["id"], arrive=True)
    failed = await wait_payout(stack, user, payout["id"], "failed")
    assert failed["failure_code"] == "no_account" and failed["failure_message"]
    wallet = await stack.wait_available(user, 5000)
    assert wallet["posted_minor"] == 5000 and wallet["pending_minor"] == 0
    assert len(psp_payouts(stack, payout["id"])) == 1
    assert await stack.ledger_problems() == []


async def test_cancel_while_pending_cancels_at_the_psp(stack: Stack) -> None:
    user = await funded(stack, 5000)
    payout = (await stack.post(user, "/api/v1/payouts", body(2500))).json()
    await wait_sent(stack, payout["id"])
    r = await stack.post(user, f"/api/v1/payouts/{payout['id']}/cancel", {})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "canceled"
    (at_psp,) = psp_payouts(stack, payout["id"])
    assert at_psp.status == "canceled"
    await stack.wait_available(user, 5000)
    again = await stack.post(user, f"/api/v1/payouts/{payout['id']}/cancel", {})
    assert again.status_code == 409 and again.json()["code"] == "payouts.not_cancelable"
    assert await stack.ledger_problems() == []


async def test_in_transit_payout_cannot_be_canceled(stack: Stack) -> None:
    user = await funded(stack, 3000)
    payout = (await stack.post(user, "/api/v1/payouts", body(1000))).json()
    await wait_sent(stack, payout["id"])
    await advance(stack, payout["id"], arrive=False)
    await wait_payout(stack, user, payout["id"], "in_transit")
    r = await stack.post(user, f"/api/v1/payouts/{payout['id']}/cancel", {})
    assert r.status_code == 409 and r.json()["code"] == "payouts.not_cancelable"
    assert (await stack.wallet(user))["available_minor"] == 2000


async def test_wallet_short_fails_the_payout_and_holds_nothing(stack: Stack) -> None:
    user = await funded(stack, 1000)
    r = await stack.post(user, "/api/v1/payouts", body(2000))
    assert r.status_code == 422 and r.json()["code"] == "ledger.insufficient_funds"
    (payout,) = (await stack.get(user, "/api/v1/payouts")).json()["data"]
    assert (payout["status"], payout["failure_code"]) == ("failed", "ledger.insufficient_funds")
    assert psp_payouts(stack, payout["id"]) == []
    wallet = await stack.wallet(user)
    assert (wallet["available_minor"], wallet["pending_minor"]) == (1000, 0)
    async with stack.runtime.engine.connect() as conn:
        held = (
            await conn.execute(
                transfers.select().where(transfers.c.id == f"payout_hold:{payout['id']}")
            )
        ).all()
    assert all(t.pending_state == "voided" for t in held)  # at most the void's tombstone
    assert await stack.ledger_problems() == []


async def test_psp_balance_short_fails_the_payout_and_gives_the_money_back(stack: Stack) -> None:
    user = await funded(stack, 4000)
    provider = stack.runtime.components["payments"].state["flows"].ctx.provider
    account = await provider.tokenize_bank_account(
        country="US",
        currency="USD",
        routing_number="110000000",
        account_number="000123456789",
        idempotency_key="platform-sweep-token",
    )
    # The platform sweeps its whole available balance (net of the PSP's fees): nothing is
    # left at the PSP to pay the user out with.
    await provider.create_payout(
        amount_minor=stack.sandbox.store.available("usd"),
        currency="USD",
        destination=account.bank_account_id,
        idempotency_key="platform-sweep",
        metadata={},
    )
    r = await stack.post(user, "/api/v1/payouts", body(1000))
    assert r.status_code == 202, r.text
    payout = r.json()
    assert (payout["status"], payout["failure_code"]) == (
        "failed",
        "payouts.psp_balance_insufficient",
    )
    assert psp_payouts(stack, payout["id"]) == []
    await stack.wait_available(user, 4000)
    assert await stack.ledger_problems() == []


@pytest.mark.parametrize(
    ("destination", "field"),
    [
        ({"country": "USA"}, "country"),
        ({"country": "1S"}, "country"),
        ({"routing_number": "11000000"}, "routing_number"),
        ({"routing_number": "11000000x"}, "routing_number"),
        ({"account_number": "123"}, "account_number"),
        ({"account_number": "1234567890123456789"}, "account_number"),
        ({"account_number": "0001234567-9"}, "account_number"),
    ],
)
async def test_bad_destination_is_refused_before_anything_happens(
    stack: Stack, destination: dict[str, str], field: str
) -> None:
    user = await stack.user()
    r = await stack.post(user, "/api/v1/payouts", {**body(500), "destination": DEST | destination})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "payouts.invalid_destination"
    assert field in r.json()["detail"]
    assert (await stack.get(user, "/api/v1/payouts")).json()["data"] == []
    assert stack.sandbox.store.payouts == {}


async def test_malformed_requests_are_refused(stack: Stack) -> None:
    user = await stack.user()
    no_dest = {"amount_minor": 500, "currency": "USD"}
    r = await stack.post(user, "/api/v1/payouts", no_dest)
    assert r.status_code == 422 and r.json()["code"] == "validation.failed"
    r = await stack.post(user, "/api/v1/payouts", body(500) | {"currency": "XXQ"})
    assert r.status_code == 422
    r = await stack.post(user, "/api/v1/payouts", body(500), key=None)
    assert r.status_code == 400 and r.json()["code"] == "idempotency.key_missing"
    r = await stack.post(user, "/api/v1/payouts", body(0))
    assert r.status_code == 422 and r.json()["code"] == "validation.failed"


async def test_another_users_payout_is_not_found(stack: Stack) -> None:
    alice = await funded(stack, 3000)
    bob = await stack.user()
    payout = (await stack.post(alice, "/api/v1/payouts", body(1000))).json()
    r = await stack.get(bob, f"/api/v1/payouts/{payout['id']}")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = await stack.post(bob, f"/api/v1/payouts/{payout['id']}/cancel", {})
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert (await stack.get(bob, "/api/v1/payouts")).json()["data"] == []
    assert (await stack.get(alice, f"/api/v1/payouts/{payout['id']}")).json()["status"] in (
        "pending",
        "in_transit",
    )


async def test_replayed_key_makes_one_payout(stack: Stack) -> None:
    user = await funded(stack, 5000)
    first = await stack.post(user, "/api/v1/payouts", body(1200), key="po-1")
    second = await stack.post(user, "/api/v1/payouts", body(1200), key="po-1")
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    reused = await stack.post(user, "/api/v1/payouts", body(1300), key="po-1")
    assert reused.status_code == 422 and reused.json()["code"] == "idempotency.key_reused"
    await wait_sent(stack, first.json()["id"])
    assert len(psp_payouts(stack, first.json()["id"])) == 1
    assert len((await stack.get(user, "/api/v1/payouts")).json()["data"]) == 1
    await stack.wait_available(user, 3800)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_lost_webhooks_the_poll_finishes_the_payout(tmp_path: Path, backend: str) -> None:
    # The sandbox's webhooks go nowhere: only the poll of sent payouts learns the outcome.
    lost = {"webhook_url": "http://127.0.0.1:9/nowhere"}
    async with running_stack(backend, tmp_path, sandbox=HOLD_STILL | lost) as s:
        user = await s.user()
        payment = await s.pay(user, 4000)
        await s.wait_status(user, payment["id"], "settled")  # settlement polls too
        r = await s.post(user, "/api/v1/payouts", body(1000))
        assert r.status_code == 202, r.text
        payout = r.json()
        await advance(s, payout["id"], arrive=True)
        await wait_payout(s, user, payout["id"], "paid")

        async def posted() -> dict[str, int] | None:
            w = await s.wallet(user)
            return w if (w["posted_minor"], w["pending_minor"]) == (3000, 0) else None

        await eventually(posted)
        assert s.sandbox.events_of("payout.paid")  # sent by the PSP, never received
        assert await s.ledger_problems() == []


async def test_scale_mode_client_over_the_internal_api(stack: Stack) -> None:
    """``HttpPaymentsClient`` (the gateway in another process) reaches payments' internal
    payout routes and gets the same models and error codes."""
    user = await funded(stack, 3000)
    owner = user["user"]["id"]
    internal = InternalClient(
        "payments",
        "http://payments.internal",
        token=stack.runtime.settings.resolved_internal_token(),
        transport=httpx.ASGITransport(app=stack.runtime.components["payments"].app),
    )
    client = HttpPaymentsClient(internal)
    try:
        made = await client.create_payout(owner, "http-1", body(700))
        assert (made.status, made.amount_minor, made.destination.last4) == ("pending", 700, "6789")
        assert await client.create_payout(owner, "http-1", body(700)) == made
        assert (await client.get_payout(owner, made.id)).id == made.id
        assert [p.id for p in (await client.list_payouts(owner, Page())).data] == [made.id]
        await wait_sent(stack, made.id)
        assert (await client.cancel_payout(owner, made.id)).status == "canceled"
        with pytest.raises(AppError) as refused:
            await client.create_payout(owner, "http-2", body(700, account="12"))
        assert refused.value.code == "payouts.invalid_destination"
        with pytest.raises(AppError) as missing:
            await client.get_payout("usr_someone_else", made.id)
        assert missing.value.code == "not_found"
    finally:
        await internal.aclose()
    await stack.wait_available(user, 3000)
