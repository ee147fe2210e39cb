"""Subscriptions end to end through the public API, on both backends: plans, a wallet-paid
subscription renewed by the test clock, the PDF, dunning of a wallet that ran dry until the
subscription is canceled; a card-paid subscription; bad input and other users' objects."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from tests.api.helpers import assert_problem, funded
from tests.support import Stack, eventually, running_stack

pytestmark = pytest.mark.timeout(240)
ADMIN = "ops@example.com"
DAY = 86400


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def billing(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    extra: dict[str, Any] = {"auth": {"admin_emails": [ADMIN]}}
    async with running_stack(request.param, tmp_path, **extra) as stack:
        yield stack


async def _plan(stack: Stack, admin: dict[str, Any], **over: Any) -> dict[str, Any]:
    body = {"name": "Pro", "amount_minor": 1000, "currency": "USD", "interval": "month"} | over
    r = await stack.post(admin, "/api/v1/plans", body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def _advance(stack: Stack, admin: dict[str, Any], days: float) -> dict[str, Any]:
    r = await stack.post(
        admin, "/api/v1/admin/test-clock/advance", {"seconds": int(days * DAY)}, key=None
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _invoices(stack: Stack, user: dict[str, Any]) -> list[dict[str, Any]]:
    return list((await stack.get(user, "/api/v1/invoices")).json()["data"])


async def _sub(stack: Stack, user: dict[str, Any], sub_id: str) -> dict[str, Any]:
    return dict((await stack.get(user, f"/api/v1/subscriptions/{sub_id}")).json())


async def test_a_wallet_subscription_renews_then_dunning_cancels_it(billing: Stack) -> None:
    stack = billing
    admin = await stack.user(ADMIN)
    plan = await _plan(stack, admin)
    alice = await funded(stack, 5000)
    bob = await stack.user()

    r = await stack.post(
        alice, "/api/v1/subscriptions", {"plan_id": plan["id"], "payment_source": "wallet"}
    )
    assert r.status_code == 201, r.text
    sub = r.json()
    assert sub["status"] == "active" and sub["object"] == "subscription"
    (first,) = await _invoices(stack, alice)
    assert first["status"] == "paid" and first["total_minor"] == 1000
    assert first["number"].startswith("PP-") and first["number"].endswith("-0001")
    assert sum(line["amount_minor"] for line in first["lines"]) == first["total_minor"]
    assert (await stack.wallet(alice))["available_minor"] == 4000

    await _advance(stack, admin, 31)  # one renewal falls due and is paid
    second = (await _invoices(stack, alice))[0]
    assert second["status"] == "paid" and second["number"].endswith("-0002")
    assert second["period_start"] == first["period_end"]
    assert (await stack.wallet(alice))["available_minor"] == 3000

    pdf = await stack.get(alice, f"/api/v1/invoices/{second['id']}/pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert second["number"] in text and alice["user"]["email"] in text and "PAID" in text
    other = await stack.get(bob, f"/api/v1/invoices/{second['id']}/pdf")
    assert_problem(other, 404, "not_found")

    # The wallet runs dry: the next renewal fails and dunning retries after 2, 5, 7, 7 days.
    spend = await stack.post(
        alice,
        "/api/v1/transfers",
        {"recipient": bob["user"]["email"], "amount_minor": 3000, "currency": "USD"},
    )
    assert spend.status_code == 201, spend.text
    await _advance(stack, admin, 31)
    failing = (await _invoices(stack, alice))[0]
    assert failing["status"] == "open" and failing["last_decline_code"] == "insufficient_funds"
    assert failing["attempts"] == 1 and failing["next_attempt_at"] is not None
    assert (await _sub(stack, alice, sub["id"]))["status"] == "past_due"
    for days in (2, 5, 7):
        await _advance(stack, admin, days)
        assert (await _sub(stack, alice, sub["id"]))["status"] == "past_due"
    await _advance(stack, admin, 7)
    ended = await _sub(stack, alice, sub["id"])
    assert ended["status"] == "canceled" and ended["canceled_at"] is not None
    last = next(i for i in await _invoices(stack, alice) if i["id"] == failing["id"])
    assert last["status"] == "uncollectible" and last["attempts"] == 5
    assert (await stack.wallet(alice))["available_minor"] == 0
    # Nothing more happens to a canceled subscription, and every cent is accounted for.
    await _advance(stack, admin, 62)
    assert len(await _invoices(stack, alice)) == 3
    assert await stack.ledger_problems() == []


async def test_a_card_subscription_and_refusals(billing: Stack) -> None:
    stack = billing
    admin = await stack.user(ADMIN)
    plan = await _plan(stack, admin, amount_minor=2500, trial_days=0)
    alice, bob = await stack.user(), await stack.user()
    saved = await stack.post(alice, "/api/v1/payment-methods", {"payment_method": "pm_card_visa"})
    assert saved.status_code == 200, saved.text
    pm = saved.json()["id"]

    r = await stack.post(
        alice, "/api/v1/subscriptions", {"plan_id": plan["id"], "payment_method": pm}
    )
    assert r.status_code == 201, r.text
    sub = r.json()

    async def active() -> dict[str, Any] | None:
        got = await _sub(stack, alice, sub["id"])
        return got if got["status"] == "active" else None

    await eventually(active)
    (invoice,) = await _invoices(stack, alice)
    assert invoice["status"] == "paid"
    payments = (await stack.get(alice, "/api/v1/payments")).json()["data"]
    assert [p["purpose"] for p in payments] == ["invoice"]
    assert (await stack.wallet(alice))["available_minor"] == 0  # revenue, not the wallet

    # Refusals: no card for a card subscription, another user's card, an archived plan, a
    # user creating plans, another user's subscription, nonsense.
    no_card = await stack.post(alice, "/api/v1/subscriptions", {"plan_id": plan["id"]})
    assert_problem(no_card, 422, "billing.payment_method_required")
    theirs = await stack.post(
        bob, "/api/v1/subscriptions", {"plan_id": plan["id"], "payment_method": pm}
    )
    assert_problem(theirs, 404, "not_found")
    assert_problem(
        await stack.post(
            alice, "/api/v1/plans", {"name": "x", "amount_minor": 1, "currency": "USD"}
        ),
        403,
        "auth.forbidden",
    )
    assert_problem(await stack.get(bob, f"/api/v1/subscriptions/{sub['id']}"), 404, "not_found")
    archived = await stack.post(admin, f"/api/v1/plans/{plan['id']}/archive", key=None)
    assert archived.json()["active"] is False
    late = await stack.post(
        bob, "/api/v1/subscriptions", {"plan_id": plan["id"], "payment_source": "wallet"}
    )
    assert_problem(late, 409, "billing.plan_archived")
    assert plan["id"] not in [
        p["id"] for p in (await stack.get(bob, "/api/v1/plans")).json()["data"]
    ]
    bad = await stack.post(
        admin, "/api/v1/plans", {"name": "x", "amount_minor": -1, "currency": "USD"}
    )
    assert_problem(bad, 422, "validation.failed")
    assert_problem(
        await stack.post(admin, "/api/v1/admin/test-clock/advance", {"seconds": -5}, key=None),
        422,
        "validation.failed",
    )

    cancel = await stack.post(
        alice, f"/api/v1/subscriptions/{sub['id']}/cancel", {"at_period_end": True}, key=None
    )
    assert cancel.status_code == 200 and cancel.json()["cancel_at_period_end"] is True
    await _advance(stack, admin, 32)
    assert (await _sub(stack, alice, sub["id"]))["status"] == "canceled"
    assert len(await _invoices(stack, alice)) == 1  # canceled at the period's end: no renewal
    assert await stack.ledger_problems() == []


async def test_a_declining_card_goes_through_dunning_to_canceled(billing: Stack) -> None:
    """The README's promise: subscribe with a test card, switch to a card that declines,
    advance through the dunning schedule, watch past_due then canceled."""
    stack = billing
    admin = await stack.user(ADMIN)
    plan = await _plan(stack, admin, amount_minor=1500)
    alice = await stack.user()

    async def save(card: str) -> str:
        r = await stack.post(alice, "/api/v1/payment-methods", {"payment_method": card})
        assert r.status_code == 200, r.text
        return str(r.json()["id"])

    sub = (
        await stack.post(
            alice,
            "/api/v1/subscriptions",
            {"plan_id": plan["id"], "payment_method": await save("pm_card_visa")},
        )
    ).json()

    async def status(*wanted: str) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            got = await _sub(stack, alice, sub["id"])
            return got if got["status"] in wanted else None

        return await eventually(check, timeout=30)

    await status("active")
    failing = await save("pm_card_chargeCustomerFail")
    switched = await stack.post(
        alice, f"/api/v1/subscriptions/{sub['id']}", {"payment_method": failing}, key=None
    )
    assert switched.status_code == 200 and switched.json()["payment_method"] == failing

    async def attempts(n: int) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            inv = (await _invoices(stack, alice))[0]
            done = inv["attempts"] == n and inv["last_decline_code"] == "generic_decline"
            return inv if done and (inv["next_attempt_at"] or inv["status"] != "open") else None

        return await eventually(check, timeout=30)

    await _advance(stack, admin, 31)
    renewal = await attempts(1)
    assert renewal["status"] == "open"
    await status("past_due")
    for n, days in ((2, 2), (3, 5), (4, 7)):
        await _advance(stack, admin, days)
        await attempts(n)
        assert (await _sub(stack, alice, sub["id"]))["status"] == "past_due"
    await _advance(stack, admin, 7)
    last = await attempts(5)
    assert last["status"] == "uncollectible"
    await status("canceled")
    payments = (await stack.get(alice, "/api/v1/payments", limit=100)).json()["data"]
    statuses = [p["status"] for p in payments]  # the first invoice's, then five declines
    assert len(statuses) == 6 and statuses.count("failed") == 5, statuses
    assert set(statuses) - {"failed"} <= {"captured", "settled"}, statuses
    assert await stack.ledger_problems() == []
