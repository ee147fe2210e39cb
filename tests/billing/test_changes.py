"""Pause, resume and plan changes through the public API with the test clock, on both
backends: nothing renews or is charged while paused; a resume starts a new cycle charged at
once; plan changes prorated exactly as ``billing.proration`` says (pending lines on the next
renewal, an invoice now, or none), a credit larger than the invoice carried forward, a new
interval resetting the cycle; refusals that change nothing; the crash windows between a
committed change and its charge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pocketpay.billing.proration import plan_change
from pocketpay.kit import failpoints
from tests.api.helpers import assert_problem, funded
from tests.support import Stack, running_stack

pytestmark = pytest.mark.timeout(240)
ADMIN = "ops@example.com"
DAY = 86400


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def billing(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    failpoints.disarm()
    extra: dict[str, Any] = {
        "auth": {"admin_emails": [ADMIN]},
        "billing": {"resume_after_seconds": 0.0},  # a pending charge is resumed by the next pass
    }
    async with running_stack(request.param, tmp_path, **extra) as stack:
        yield stack
    failpoints.disarm()


async def _plan(stack: Stack, admin: dict[str, Any], **over: Any) -> dict[str, Any]:
    body = {"name": "Basic", "amount_minor": 1000, "currency": "USD", "interval": "month"} | over
    r = await stack.post(admin, "/api/v1/plans", body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def _advance(stack: Stack, admin: dict[str, Any], days: float) -> None:
    r = await stack.post(
        admin, "/api/v1/admin/test-clock/advance", {"seconds": int(days * DAY)}, key=None
    )
    assert r.status_code == 200, r.text


async def _invoices(stack: Stack, user: dict[str, Any]) -> list[dict[str, Any]]:
    """Newest first."""
    return list((await stack.get(user, "/api/v1/invoices", limit=100)).json()["data"])


async def _sub(stack: Stack, user: dict[str, Any], sub_id: str) -> dict[str, Any]:
    return dict((await stack.get(user, f"/api/v1/subscriptions/{sub_id}")).json())


async def _subscribe(stack: Stack, user: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    r = await stack.post(
        user, "/api/v1/subscriptions", {"plan_id": plan["id"], "payment_source": "wallet"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "active"
    return dict(r.json())


async def _act(stack: Stack, user: dict[str, Any], sub_id: str, what: str) -> Any:
    return await stack.post(user, f"/api/v1/subscriptions/{sub_id}/{what}", key=None)


async def _change(stack: Stack, user: dict[str, Any], sub_id: str, **body: Any) -> Any:
    return await stack.post(user, f"/api/v1/subscriptions/{sub_id}", body, key=None)


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _check_total(invoice: dict[str, Any]) -> None:
    assert invoice["total_minor"] == sum(line["amount_minor"] for line in invoice["lines"])


async def test_pause_stops_billing_and_resume_starts_a_new_cycle(billing: Stack) -> None:
    stack = billing
    admin = await stack.user(ADMIN)
    plan = await _plan(stack, admin)
    alice, bob = await funded(stack, 2000), await stack.user()
    sub = await _subscribe(stack, alice, plan)
    assert_problem(await _act(stack, alice, sub["id"], "resume"), 409, "billing.invalid_transition")
    assert_problem(await _act(stack, bob, sub["id"], "pause"), 404, "not_found")

    paused = await _act(stack, alice, sub["id"], "pause")
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert_problem(await _act(stack, alice, sub["id"], "pause"), 409, "billing.invalid_transition")
    await _advance(stack, admin, 61)  # two periods' ends pass: no invoice, no charge
    assert len(await _invoices(stack, alice)) == 1
    assert (await stack.wallet(alice))["available_minor"] == 1000

    resumed = await _act(stack, alice, sub["id"], "resume")
    assert resumed.status_code == 200, resumed.text
    now = resumed.json()
    assert now["status"] == "active"
    latest = (await _invoices(stack, alice))[0]
    assert (
        latest["status"] == "paid" and latest["total_minor"] == 1000 and len(latest["lines"]) == 1
    )
    assert now["latest_invoice"] == latest["id"]
    assert latest["period_start"] == now["current_period_start"] == now["updated_at"]
    assert latest["period_end"] == now["current_period_end"]
    assert (await stack.wallet(alice))["available_minor"] == 0

    # The next period follows the new anchor; paused again with an empty wallet, the resume's
    # charge fails and the subscription goes past_due through the state table.
    assert (await _act(stack, alice, sub["id"], "pause")).json()["status"] == "paused"
    await _advance(stack, admin, 40)
    assert len(await _invoices(stack, alice)) == 2
    again = await _act(stack, alice, sub["id"], "resume")
    assert again.status_code == 200 and again.json()["status"] == "past_due"
    failing = (await _invoices(stack, alice))[0]
    assert failing["status"] == "open" and failing["last_decline_code"] == "insufficient_funds"
    assert_problem(await _act(stack, alice, sub["id"], "pause"), 409, "billing.invalid_transition")
    assert await stack.ledger_problems() == []


async def test_an_upgrade_with_prorations_lands_on_the_next_renewal(billing: Stack) -> None:
    stack = billing
    admin = await stack.user(ADMIN)
    basic, pro = await _plan(stack, admin), await _plan(stack, admin, name="Pro", amount_minor=3000)
    alice = await funded(stack, 10000)
    sub = await _subscribe(stack, alice, basic)
    await _advance(stack, admin, 10)
    r = await _change(stack, alice, sub["id"], plan_id=pro["id"])
    assert r.status_code == 200, r.text
    changed = r.json()
    assert changed["plan_id"] == pro["id"] and changed["status"] == "active"
    assert changed["current_period_end"] == sub["current_period_end"]  # same cycle
    assert len(await _invoices(stack, alice)) == 1  # nothing invoiced now
    assert (await _change(stack, alice, sub["id"], plan_id=pro["id"])).json() == changed  # retry

    await _advance(stack, admin, 25)
    renewal = (await _invoices(stack, alice))[0]
    kinds = [line["kind"] for line in renewal["lines"]]
    assert kinds == ["subscription", "proration", "proration"], renewal["lines"]
    plan_line, credit, charge = renewal["lines"]
    assert (
        plan_line["amount_minor"] == 3000 and plan_line["period_start"] == renewal["period_start"]
    )
    at = _at(credit["period_start"])
    assert credit["period_start"] == changed["updated_at"]
    expected = plan_change(
        1000, 3000, _at(sub["current_period_start"]), _at(sub["current_period_end"]), at
    )
    assert (credit["amount_minor"], charge["amount_minor"]) == expected
    assert credit["amount_minor"] < 0 < charge["amount_minor"]
    _check_total(renewal)
    assert renewal["status"] == "paid"
    assert (await stack.wallet(alice))["available_minor"] == 10000 - 1000 - renewal["total_minor"]
    assert await stack.ledger_problems() == []


async def test_always_invoice_now_and_a_credit_carried_forward(billing: Stack) -> None:
    stack = billing
    admin = await stack.user(ADMIN)
    basic, pro = await _plan(stack, admin), await _plan(stack, admin, name="Pro", amount_minor=3000)
    alice = await funded(stack, 10000)
    sub = await _subscribe(stack, alice, basic)
    start, end = _at(sub["current_period_start"]), _at(sub["current_period_end"])
    await _advance(stack, admin, 10)
    up = await _change(
        stack, alice, sub["id"], plan_id=pro["id"], proration_behavior="always_invoice"
    )
    assert up.status_code == 200, up.text
    now = (await _invoices(stack, alice))[0]
    assert up.json()["latest_invoice"] == now["id"]
    assert now["status"] == "paid" and [x["kind"] for x in now["lines"]] == ["proration"] * 2
    at = _at(now["period_start"])
    assert tuple(x["amount_minor"] for x in now["lines"]) == plan_change(1000, 3000, start, end, at)
    assert now["period_end"] == sub["current_period_end"]
    _check_total(now)
    paid = 1000 + now["total_minor"]
    assert (await stack.wallet(alice))["available_minor"] == 10000 - paid

    # Back down at once: the credit exceeds the charge, so the invoice is settled at zero and
    # the rest is carried to the next invoice as a credit line.
    await _advance(stack, admin, 1)
    down = await _change(
        stack, alice, sub["id"], plan_id=basic["id"], proration_behavior="always_invoice"
    )
    assert down.status_code == 200, down.text
    settled = (await _invoices(stack, alice))[0]
    assert settled["status"] == "paid" and settled["total_minor"] == 0
    credit, charge, carried = settled["lines"]
    back = plan_change(3000, 1000, start, end, _at(settled["period_start"]))
    assert (credit["amount_minor"], charge["amount_minor"]) == back
    assert carried["kind"] == "credit" and carried["amount_minor"] == -sum(back)
    _check_total(settled)

    # The credit (about 19 days of the difference) is larger than a month of Basic: the
    # renewal is settled at zero too and carries the rest again, to the one after.
    credit_left = 1000 + sum(back)
    assert credit_left < 0
    await _advance(stack, admin, 25)
    renewal = (await _invoices(stack, alice))[0]
    assert [(x["kind"], x["amount_minor"]) for x in renewal["lines"]] == [
        ("subscription", 1000),
        ("credit", sum(back)),
        ("credit", -credit_left),
    ]
    assert renewal["total_minor"] == 0 and renewal["status"] == "paid"
    _check_total(renewal)
    await _advance(stack, admin, 31)
    renewal = (await _invoices(stack, alice))[0]
    assert [(x["kind"], x["amount_minor"]) for x in renewal["lines"]] == [
        ("subscription", 1000),
        ("credit", credit_left),
    ]
    assert renewal["total_minor"] == 1000 + credit_left and renewal["status"] == "paid"
    _check_total(renewal)
    paid += renewal["total_minor"]
    assert (await stack.wallet(alice))["available_minor"] == 10000 - paid
    assert await stack.ledger_problems() == []


async def test_refusals_none_and_an_interval_change(billing: Stack) -> None:
    stack = billing
    admin = await stack.user(ADMIN)
    basic, pro = await _plan(stack, admin), await _plan(stack, admin, name="Pro", amount_minor=3000)
    euro = await _plan(stack, admin, currency="EUR")
    gone = await _plan(stack, admin, name="Old")
    await stack.post(admin, f"/api/v1/plans/{gone['id']}/archive", key=None)
    yearly = await _plan(stack, admin, name="Yearly", amount_minor=10000, interval="year")
    alice, bob = await funded(stack, 20000), await stack.user()
    sub = await _subscribe(stack, alice, basic)
    await _advance(stack, admin, 5)
    before = await _sub(stack, alice, sub["id"])

    sid = sub["id"]
    assert_problem(
        await _change(stack, alice, sid, plan_id=euro["id"]), 422, "billing.currency_mismatch"
    )
    assert_problem(
        await _change(stack, alice, sid, plan_id=gone["id"]), 409, "billing.plan_archived"
    )
    assert_problem(await _change(stack, alice, sid, plan_id="plan_nope"), 404, "not_found")
    assert_problem(await _change(stack, bob, sid, plan_id=pro["id"]), 404, "not_found")
    assert_problem(await _change(stack, alice, sid), 422, "validation.failed")
    assert_problem(
        await _change(stack, alice, sid, plan_id=pro["id"], proration_behavior="later"),
        422,
        "validation.failed",
    )
    assert await _sub(stack, alice, sid) == before  # nothing changed
    assert len(await _invoices(stack, alice)) == 1

    none = await _change(stack, alice, sid, plan_id=pro["id"], proration_behavior="none")
    assert none.status_code == 200 and none.json()["plan_id"] == pro["id"]
    assert len(await _invoices(stack, alice)) == 1
    await _advance(stack, admin, 30)
    renewal = (await _invoices(stack, alice))[0]
    assert [(x["kind"], x["amount_minor"]) for x in renewal["lines"]] == [("subscription", 3000)]
    assert renewal["total_minor"] == 3000 and renewal["status"] == "paid"

    # Another interval: a new cycle from now, the unused month credited.
    await _advance(stack, admin, 3)
    current = await _sub(stack, alice, sid)
    r = await _change(stack, alice, sid, plan_id=yearly["id"])
    assert r.status_code == 200, r.text
    reset = r.json()
    assert reset["current_period_start"] == reset["updated_at"]
    start = _at(reset["current_period_start"])
    assert _at(reset["current_period_end"]) == start.replace(year=start.year + 1)
    first = (await _invoices(stack, alice))[0]
    assert first["id"] == reset["latest_invoice"] and first["status"] == "paid"
    (plan_line, credit) = first["lines"]
    assert plan_line["amount_minor"] == 10000 and plan_line["period_start"] == first["period_start"]
    unused, _ = plan_change(
        3000, 0, _at(current["current_period_start"]), _at(current["current_period_end"]), start
    )
    assert credit["kind"] == "proration" and credit["amount_minor"] == unused < 0
    _check_total(first)
    await _advance(stack, admin, 300)  # still within the new year: no renewal
    assert (await _invoices(stack, alice))[0]["id"] == first["id"]
    spent = 1000 + 3000 + first["total_minor"]
    assert (await stack.wallet(alice))["available_minor"] == 20000 - spent
    assert await stack.ledger_problems() == []


async def test_a_charge_in_flight_when_paused_completes_and_it_stays_paused(
    billing: Stack,
) -> None:
    """A renewal's charge asked the ledger, then the process died; the user pauses. The
    resumed charge gets the ledger's replay (one transfer): the invoice is paid, the
    subscription stays paused."""
    stack = billing
    admin = await stack.user(ADMIN)
    plan = await _plan(stack, admin)
    alice = await funded(stack, 5000)
    sub = await _subscribe(stack, alice, plan)
    failpoints.arm("billing.charge.after_ask", "raise", count=1)
    r = await stack.post(admin, "/api/v1/admin/test-clock/advance", {"seconds": 31 * DAY}, key=None)
    assert r.status_code >= 500
    assert (await _invoices(stack, alice))[0]["status"] == "open"
    assert (await _act(stack, alice, sub["id"], "pause")).json()["status"] == "paused"
    await _advance(stack, admin, 0.0001)
    renewal = (await _invoices(stack, alice))[0]
    assert renewal["status"] == "paid" and renewal["attempts"] == 1
    assert (await _sub(stack, alice, sub["id"]))["status"] == "paused"
    assert (await stack.wallet(alice))["available_minor"] == 3000
    await _advance(stack, admin, 40)
    assert len(await _invoices(stack, alice)) == 2
    assert await stack.ledger_problems() == []


@pytest.mark.parametrize("point", ["billing.change.after_commit", "billing.resume.after_commit"])
async def test_a_crash_after_the_change_commits_charges_once(billing: Stack, point: str) -> None:
    """The change (or resume) committed, the process died before charging its invoice: the
    invoice is open and due, the scheduler's next pass charges it, once."""
    stack = billing
    admin = await stack.user(ADMIN)
    basic, pro = await _plan(stack, admin), await _plan(stack, admin, name="Pro", amount_minor=3000)
    alice = await funded(stack, 10000)
    sub = await _subscribe(stack, alice, basic)
    await _advance(stack, admin, 10)
    failpoints.arm(point, "raise", count=1)
    if point == "billing.resume.after_commit":
        await _act(stack, alice, sub["id"], "pause")
        r = await _act(stack, alice, sub["id"], "resume")
    else:
        r = await _change(
            stack, alice, sub["id"], plan_id=pro["id"], proration_behavior="always_invoice"
        )
    assert r.status_code >= 500 and failpoints.hits(point) == 1
    pending = (await _invoices(stack, alice))[0]
    assert pending["status"] == "open" and pending["attempts"] == 0
    await _advance(stack, admin, 0.0001)
    done = (await _invoices(stack, alice))[0]
    assert done["id"] == pending["id"] and done["status"] == "paid" and done["attempts"] == 1
    assert (await _sub(stack, alice, sub["id"]))["status"] == "active"
    left = 10000 - 1000 - done["total_minor"]
    assert (await stack.wallet(alice))["available_minor"] == left
    assert await stack.ledger_problems() == []
