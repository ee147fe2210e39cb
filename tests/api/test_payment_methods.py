"""Saved payment methods: save a card at the PSP, top up with it, detach it; declines,
other users' methods and bad ids; each crash window of the save flow converges on one PSP
customer and one attachment (both backends)."""

from __future__ import annotations

from typing import Any

import pytest

from pocketpay.kit import failpoints
from tests.api.helpers import assert_problem
from tests.safety.support import retrying_post
from tests.support import Stack, eventually

pytestmark = pytest.mark.timeout(180)


def _attached(stack: Stack, test_card: str | None = None) -> list[Any]:
    """The sandbox's payment methods attached to a customer (of this card, if given)."""
    return [
        pm
        for pm in stack.sandbox.store.payment_methods.values()
        if pm.customer and (test_card is None or pm.test_card == test_card)
    ]


async def _save(stack: Stack, user: dict[str, Any], card: str, key: str = "auto") -> Any:
    return await stack.post(user, "/api/v1/payment-methods", {"payment_method": card}, key=key)


async def test_save_top_up_with_it_and_detach(stack: Stack) -> None:
    alice = await stack.user()
    r = await _save(stack, alice, "pm_card_visa", key="save-1")
    assert r.status_code == 200, r.text
    method = r.json()
    assert method["object"] == "payment_method" and method["status"] == "active"
    assert method["card"] == {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034}
    again = await _save(stack, alice, "pm_card_visa", key="save-1")
    assert again.json() == method and again.headers["idempotent-replayed"] == "true"
    listed = (await stack.get(alice, "/api/v1/payment-methods")).json()
    assert [m["id"] for m in listed["data"]] == [method["id"]]

    paid = await stack.pay(alice, 3100, pm=method["id"])
    assert paid["payment_method"] == method["id"]
    await stack.wait_available(alice, 3100)
    (intent,) = [
        pi
        for pi in stack.sandbox.store.payment_intents.values()
        if pi.metadata.get("payment_id") == paid["id"]
    ]
    (customer,) = {pm.customer for pm in _attached(stack)}
    assert intent.customer == customer  # charged as the saved card of the user's customer

    detach = f"/api/v1/payment-methods/{method['id']}/detach"
    gone = await stack.post(alice, detach, key=None)
    assert gone.status_code == 200 and gone.json()["status"] == "detached"
    assert gone.json()["detached_at"] is not None
    assert _attached(stack) == []
    assert (await stack.post(alice, detach, key=None)).json()["status"] == "detached"
    refused = await stack.post(
        alice,
        "/api/v1/payments",
        {"amount_minor": 100, "currency": "USD", "payment_method": method["id"]},
    )
    assert_problem(refused, 422, "payments.invalid_payment_method")
    assert await stack.ledger_problems() == []


async def test_declines_and_other_users_methods(stack: Stack) -> None:
    alice, bob = await stack.user(), await stack.user()
    declined = await _save(stack, alice, "pm_card_chargeDeclined")
    body = assert_problem(declined, 402, "payments.card_declined")
    assert "generic_decline" in body["detail"]
    assert (await stack.get(alice, "/api/v1/payment-methods")).json()["data"] == []

    # Saved fine, then every charge declines: the payment fails with the PSP's code.
    failing = (await _save(stack, alice, "pm_card_chargeCustomerFail")).json()
    payment = await stack.pay(alice, 900, pm=failing["id"], until="failed")
    assert payment["failure_code"] == "generic_decline"

    visa = (await _save(stack, alice, "pm_card_visa")).json()
    not_found = await stack.get(bob, f"/api/v1/payment-methods/{visa['id']}")
    assert_problem(not_found, 404, "not_found")
    theirs = await stack.post(
        bob,
        "/api/v1/payments",
        {"amount_minor": 100, "currency": "USD", "payment_method": visa["id"]},
    )
    assert_problem(theirs, 422, "payments.invalid_payment_method")
    detach = await stack.post(bob, f"/api/v1/payment-methods/{visa['id']}/detach", key=None)
    assert_problem(detach, 404, "not_found")
    assert visa["id"] in {
        pm["id"] for pm in (await stack.get(alice, "/api/v1/payment-methods")).json()["data"]
    }
    bad = await _save(stack, alice, "card_4242")
    assert_problem(bad, 422, "validation.failed")
    unknown = await _save(stack, alice, "pm_card_nosuchcard")
    assert_problem(unknown, 422, "payments.invalid_payment_method")


@pytest.mark.parametrize(
    "point", ["payments.methods.after_customer", "payments.methods.after_attach"]
)
async def test_a_save_interrupted_at_each_phase_converges(stack: Stack, point: str) -> None:
    alice = await stack.user()
    failpoints.arm(point, "raise", count=1)
    try:
        first, last = await retrying_post(
            stack, alice, "/api/v1/payment-methods", {"payment_method": "pm_card_visa"}, key="k"
        )
    finally:
        failpoints.disarm()
    assert first.status_code >= 500 and last.status_code == 200, last.text
    assert len(_attached(stack, "pm_card_visa")) == 1
    assert len(stack.sandbox.store.customers) == 1
    methods = (await stack.get(alice, "/api/v1/payment-methods")).json()["data"]
    assert [m["id"] for m in methods] == [last.json()["id"]]


async def test_a_lost_psp_answer_is_retried_into_one_attachment(stack: Stack) -> None:
    """The PSP attaches the card but our side times out (unknown outcome, 503); the retry with
    the same key gets the PSP's replay of that attachment, not a second one."""
    alice = await stack.user()
    await _save(stack, alice, "pm_card_mastercard")  # the customer exists: only attach hangs
    stack.sandbox.faults.timeout = True
    lost = await _save(stack, alice, "pm_card_visa", key="lost")
    assert_problem(lost, 503, "payments.provider_unavailable")
    stack.sandbox.faults.timeout = False  # the held attach now goes through at the PSP

    async def saved() -> dict[str, Any] | None:
        r = await _save(stack, alice, "pm_card_visa", key="lost")
        return dict(r.json()) if r.status_code == 200 else None

    method = await eventually(saved)
    assert len(_attached(stack, "pm_card_visa")) == 1
    assert method["card"]["last4"] == "4242"
