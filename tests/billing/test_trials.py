"""Trials through the public API, on both backends: a plan with trial_days makes a
subscription `trialing` with no invoice and no charge; the test clock moved past the trial's
end invoices the first period from the trial's end and charges it, from the wallet or a saved
card (`active`), or fails on a declining card (`past_due`, dunning scheduled)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.helpers import funded
from tests.support import Stack, eventually, running_stack

pytestmark = pytest.mark.timeout(240)
ADMIN = "ops@example.com"
DAY = 86400


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def billing(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    extra: dict[str, Any] = {"auth": {"admin_emails": [ADMIN]}}
    async with running_stack(request.param, tmp_path, **extra) as stack:
        yield stack


async def _invoices(stack: Stack, user: dict[str, Any]) -> list[dict[str, Any]]:
    return list((await stack.get(user, "/api/v1/invoices")).json()["data"])


async def _card(stack: Stack, user: dict[str, Any], card: str) -> str:
    r = await stack.post(user, "/api/v1/payment-methods", {"payment_method": card})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


async def test_trials_charge_nothing_until_they_end(billing: Stack) -> None:
    stack = billing
    admin = await stack.user(ADMIN)
    r = await stack.post(
        admin,
        "/api/v1/plans",
        {"name": "Pro", "amount_minor": 1200, "currency": "USD", "trial_days": 14},
    )
    assert r.status_code == 201 and r.json()["trial_days"] == 14, r.text
    plan = r.json()["id"]
    alice = await funded(stack, 5000)  # pays from her wallet
    carol, dave = await stack.user(), await stack.user()  # a paying and a declining card
    bodies = {
        "alice": (alice, {"plan_id": plan, "payment_source": "wallet"}),
        "carol": (
            carol,
            {"plan_id": plan, "payment_method": await _card(stack, carol, "pm_card_visa")},
        ),
        "dave": (
            dave,
            {
                "plan_id": plan,
                "payment_method": await _card(stack, dave, "pm_card_chargeCustomerFail"),
            },
        ),
    }
    subs: dict[str, dict[str, Any]] = {}
    for name, (user, body) in bodies.items():
        r = await stack.post(user, "/api/v1/subscriptions", body)
        assert r.status_code == 201, r.text
        subs[name] = r.json()
        assert subs[name]["status"] == "trialing" and subs[name]["latest_invoice"] is None
        assert subs[name]["trial_end"] == subs[name]["current_period_end"]
        assert await _invoices(stack, user) == []

    await stack.post(admin, "/api/v1/admin/test-clock/advance", {"seconds": 13 * DAY}, key=None)
    for name, (user, _body) in bodies.items():  # a day of trial left: still nothing
        got = (await stack.get(user, f"/api/v1/subscriptions/{subs[name]['id']}")).json()
        assert got["status"] == "trialing" and await _invoices(stack, user) == []
    for user in (carol, dave):
        assert (await stack.get(user, "/api/v1/payments")).json()["data"] == []
    assert (await stack.wallet(alice))["available_minor"] == 5000

    r = await stack.post(admin, "/api/v1/admin/test-clock/advance", {"seconds": 2 * DAY}, key=None)
    assert r.status_code == 200, r.text

    async def status(name: str, wanted: str) -> dict[str, Any]:
        user = bodies[name][0]

        async def check() -> dict[str, Any] | None:
            got = (await stack.get(user, f"/api/v1/subscriptions/{subs[name]['id']}")).json()
            return dict(got) if got["status"] == wanted else None

        return await eventually(check, timeout=30)

    for name in ("alice", "carol"):
        sub = await status(name, "active")
        (invoice,) = await _invoices(stack, bodies[name][0])
        assert invoice["status"] == "paid" and invoice["total_minor"] == 1200
        assert invoice["period_start"] == subs[name]["trial_end"] == sub["current_period_start"]
        assert [line["kind"] for line in invoice["lines"]] == ["subscription"]
    assert (await stack.wallet(alice))["available_minor"] == 3800
    payments = (await stack.get(carol, "/api/v1/payments")).json()["data"]
    assert [(p["purpose"], p["amount_minor"]) for p in payments] == [("invoice", 1200)]
    assert (await stack.wallet(carol))["available_minor"] == 0  # revenue, not her wallet

    await status("dave", "past_due")

    async def declined() -> dict[str, Any] | None:
        found = await _invoices(stack, dave)
        done = found and found[0]["next_attempt_at"] is not None
        return found[0] if done else None

    invoice = await eventually(declined, timeout=30)
    assert invoice["status"] == "open" and invoice["attempts"] == 1
    assert invoice["last_decline_code"] == "generic_decline"
    assert await stack.ledger_problems() == []
