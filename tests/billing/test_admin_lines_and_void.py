"""An admin's one-off invoice lines and voids through the public API, on both backends: a line
lands on the next renewal invoice (total = sum of lines = the ledger's posting) and on no
other; a retried request adds it once; a voided past-due invoice is never charged by dunning
while the subscription stays past_due until its next invoice is paid; refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from pocketpay.billing.api import BillingApi
from pocketpay.billing.models import outbox, pending_lines
from pocketpay.kit.errors import KeyReused
from pocketpay.ledger.models import transfers
from tests.api.helpers import assert_problem, funded
from tests.support import Stack, running_stack

pytestmark = pytest.mark.timeout(240)
ADMIN = "ops@example.com"
DAY = 86400


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def billing(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    extra: dict[str, Any] = {"auth": {"admin_emails": [ADMIN]}}
    async with running_stack(request.param, tmp_path, **extra) as stack:
        yield stack


async def _setup(stack: Stack, wallet: int) -> tuple[dict[str, Any], dict[str, Any], str]:
    """An admin, a user with ``wallet`` USD and her active wallet subscription to a plan of
    1000 a month."""
    admin = await stack.user(ADMIN)
    plan = await stack.post(
        admin,
        "/api/v1/plans",
        {"name": "Pro", "amount_minor": 1000, "currency": "USD", "interval": "month"},
    )
    assert plan.status_code == 201, plan.text
    alice = await funded(stack, wallet)
    r = await stack.post(
        alice, "/api/v1/subscriptions", {"plan_id": plan.json()["id"], "payment_source": "wallet"}
    )
    assert r.status_code == 201 and r.json()["status"] == "active", r.text
    return admin, alice, str(r.json()["id"])


async def _advance(stack: Stack, admin: dict[str, Any], days: float) -> None:
    r = await stack.post(
        admin, "/api/v1/admin/test-clock/advance", {"seconds": int(days * DAY)}, key=None
    )
    assert r.status_code == 200, r.text


async def _invoices(stack: Stack, user: dict[str, Any]) -> list[dict[str, Any]]:
    """Newest first."""
    return list((await stack.get(user, "/api/v1/invoices", limit=100)).json()["data"])


async def _collected(stack: Stack, invoice_id: str) -> list[int]:
    """The amounts the ledger moved from the wallet for ``invoice_id`` (one per charge)."""
    t = transfers.c
    q = select(t.amount_minor).where(t.id.like(f"inv\\_pay:{invoice_id}:%", escape="\\"))
    async with stack.runtime.engine.connect() as conn:
        return [int(a) for a in (await conn.scalars(q)).all()]


async def _line(
    stack: Stack, admin: dict[str, Any], sub_id: str, body: dict[str, Any], key: str = "auto"
) -> Any:
    return await stack.post(admin, f"/api/v1/subscriptions/{sub_id}/lines", body, key=key)


async def test_one_off_lines_go_on_the_next_invoice_once(billing: Stack) -> None:
    stack = billing
    admin, alice, sub_id = await _setup(stack, 5000)
    fee = {"description": "Setup fee", "amount_minor": 250}
    r = await _line(stack, admin, sub_id, fee, key="fee-1")
    assert r.status_code == 201, r.text
    item = r.json()
    assert item["object"] == "invoice_item" and item["id"].startswith("ii_")
    assert (item["kind"], item["amount_minor"], item["currency"]) == ("one_off", 250, "USD")
    assert item["invoice_id"] is None and item["subscription_id"] == sub_id

    # A retry: replayed by the gateway, and found again by billing itself (the retry after an
    # unknown outcome); the same key with another line is refused there too.
    again = await _line(stack, admin, sub_id, fee, key="fee-1")
    assert again.status_code == 201 and again.json()["id"] == item["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    api: BillingApi = stack.runtime.components["billing"].state["api"]
    direct = await api.add_invoice_item(admin["user"]["id"], "fee-1", sub_id, fee)
    assert direct.id == item["id"]
    with pytest.raises(KeyReused):
        await api.add_invoice_item(admin["user"]["id"], "fee-1", sub_id, fee | {"amount_minor": 1})
    credit = await _line(stack, admin, sub_id, {"description": "Goodwill", "amount_minor": -100})
    assert credit.status_code == 201, credit.text
    async with stack.runtime.engine.connect() as conn:
        waiting = (await conn.execute(select(pending_lines.c.id))).scalars().all()
        types = (await conn.execute(select(outbox.c.type))).scalars().all()
    assert sorted(waiting) == sorted([item["id"], credit.json()["id"]])
    assert types.count("billing.invoice_item.created") == 2

    await _advance(stack, admin, 31)
    renewal = (await _invoices(stack, alice))[0]
    assert renewal["status"] == "paid", renewal
    kinds = [(line["kind"], line["amount_minor"]) for line in renewal["lines"]]
    assert kinds == [("subscription", 1000), ("one_off", 250), ("one_off", -100)]
    assert renewal["total_minor"] == sum(a for _, a in kinds) == 1150
    assert await _collected(stack, renewal["id"]) == [1150]
    assert (await stack.wallet(alice))["available_minor"] == 5000 - 1000 - 1150

    await _advance(stack, admin, 31)  # the lines were taken: the next invoice has none
    following = (await _invoices(stack, alice))[0]
    assert following["id"] != renewal["id"] and following["total_minor"] == 1000
    assert [line["kind"] for line in following["lines"]] == ["subscription"]
    assert await _collected(stack, following["id"]) == [1000]
    assert await stack.ledger_problems() == []


async def test_one_off_line_refusals(billing: Stack) -> None:
    stack = billing
    admin, alice, sub_id = await _setup(stack, 1000)
    fee = {"description": "Setup fee", "amount_minor": 250}
    assert_problem(await _line(stack, alice, sub_id, fee), 403, "auth.forbidden")
    assert_problem(await _line(stack, admin, "sub_nope", fee), 404, "not_found")
    for bad in (
        {"description": "x", "amount_minor": 0},
        {"description": "", "amount_minor": 5},
        {"description": "x", "amount_minor": 1.5},
        {"description": "x", "amount_minor": 10**13},
        {"description": "x\x00", "amount_minor": 5},
        {"amount_minor": 5},
        fee | {"currency": "EUR"},
    ):
        assert_problem(await _line(stack, admin, sub_id, bad), 422, "validation.failed")
    assert_problem(await _line(stack, admin, sub_id, fee, key=None), 400, "idempotency.key_missing")
    r = await stack.post(alice, f"/api/v1/subscriptions/{sub_id}/cancel", key=None)
    assert r.json()["status"] == "canceled"
    assert_problem(await _line(stack, admin, sub_id, fee), 409, "billing.invalid_transition")


async def test_a_voided_past_due_invoice_is_never_charged(billing: Stack) -> None:
    stack = billing
    admin, alice, sub_id = await _setup(stack, 1000)  # the first invoice empties the wallet
    (first,) = await _invoices(stack, alice)
    await _advance(stack, admin, 31)
    failing = (await _invoices(stack, alice))[0]
    assert failing["status"] == "open" and failing["attempts"] == 1
    sub = (await stack.get(alice, f"/api/v1/subscriptions/{sub_id}")).json()
    assert sub["status"] == "past_due"

    void = f"/api/v1/invoices/{failing['id']}/void"
    assert_problem(await stack.post(alice, void, key=None), 403, "auth.forbidden")
    assert_problem(
        await stack.post(admin, f"/api/v1/invoices/{first['id']}/void", key=None),
        409,
        "billing.invalid_transition",
    )
    assert_problem(
        await stack.post(admin, "/api/v1/invoices/in_nope/void", key=None), 404, "not_found"
    )
    r = await stack.post(admin, void, key=None)
    assert r.status_code == 200, r.text
    voided = r.json()
    assert voided["status"] == "void" and voided["voided_at"] is not None
    assert voided["next_attempt_at"] is None and voided["total_minor"] == 1000
    assert_problem(await stack.post(admin, void, key=None), 409, "billing.invalid_transition")
    assert_problem(
        await stack.post(alice, f"/api/v1/invoices/{failing['id']}/pay", key=None),
        409,
        "billing.invalid_transition",
    )
    async with stack.runtime.engine.connect() as conn:
        events = (await conn.execute(select(outbox.c.type, outbox.c.data))).all()
    assert [d["invoice_id"] for t, d in events if t == "billing.invoice.voided"] == [failing["id"]]

    # The wallet can pay again, yet no retry of the schedule (2, 5, 7, 7 days) charges it.
    await stack.pay(alice, 5000, until="settled")
    await stack.wait_available(alice, 5000)
    for days in (2, 5, 7, 7):
        await _advance(stack, admin, days)
        got = next(i for i in await _invoices(stack, alice) if i["id"] == failing["id"])
        assert (got["status"], got["attempts"]) == ("void", 1)
        sub = (await stack.get(alice, f"/api/v1/subscriptions/{sub_id}")).json()
        assert sub["status"] == "past_due"  # dunning has nothing left to give up on
    assert await _collected(stack, failing["id"]) == []
    assert (await stack.wallet(alice))["available_minor"] == 5000

    # The next period's invoice is paid: active again.
    await _advance(stack, admin, 10)
    nxt = (await _invoices(stack, alice))[0]
    assert nxt["id"] not in (first["id"], failing["id"]) and nxt["status"] == "paid"
    sub = (await stack.get(alice, f"/api/v1/subscriptions/{sub_id}")).json()
    assert sub["status"] == "active"
    assert (await stack.wallet(alice))["available_minor"] == 4000
    assert await stack.ledger_problems() == []
