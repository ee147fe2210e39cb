"""Disputes in the sandbox, through the official stripe SDK: opened by the dispute test cards
or the ops route, answered with evidence (won or lost by Stripe's test-mode rule), accepted,
lost by deadline; the balance moves and the signed ``charge.dispute.*`` webhooks go out."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import stripe
from sandbox_support import SECRET, Receiver, Running, sandbox_up

from pocketpay.kit.clock import ManualClock
from pocketpay.sandbox.disputes import DISPUTE_FEE, EVIDENCE_WINDOW_SECONDS
from pocketpay.settings import SandboxSettings


async def pay(
    client: stripe.StripeClient, card: str = "pm_card_visa", **extra: Any
) -> stripe.PaymentIntent:
    params: dict[str, Any] = {
        "amount": 5000,
        "currency": "usd",
        "payment_method": card,
        "confirm": True,
        **extra,
    }
    return await client.v1.payment_intents.create_async(params=params)  # type: ignore[arg-type]


async def only_dispute(client: stripe.StripeClient, pi_id: str) -> stripe.Dispute:
    listed = await client.v1.disputes.list_async(params={"payment_intent": pi_id})
    assert len(listed.data) == 1
    return listed.data[0]


async def balance_net(client: stripe.StripeClient) -> int:
    b = await client.v1.balance.retrieve_async()
    return sum(e.amount for e in b.available) + sum(e.amount for e in b.pending)


async def webhook_types(running: Running, receiver: Receiver) -> list[str]:
    await running.sandbox.flush_webhooks()
    events = [
        stripe.Webhook.construct_event(r.body.decode(), r.signature, SECRET)
        for r in receiver.received
    ]
    return [e.type for e in events if e.type.startswith("charge.dispute.")]


async def test_dispute_card_opens_a_dispute_and_withdraws_funds(
    client: stripe.StripeClient, running: Running, receiver: Receiver
) -> None:
    pi = await pay(client, "pm_card_createDispute")
    assert pi.status == "succeeded"
    dispute = await only_dispute(client, pi.id)
    assert (dispute.status, dispute.reason, dispute.amount) == (
        "needs_response",
        "fraudulent",
        5000,
    )
    assert dispute.charge == pi.latest_charge
    assert dispute.evidence_details.due_by == dispute.created + EVIDENCE_WINDOW_SECONDS
    charge = await client.v1.charges.retrieve_async(str(pi.latest_charge))
    assert charge.disputed is True
    # The charge's net, minus the disputed amount and the fee.
    txn = await client.v1.balance_transactions.retrieve_async(str(charge.balance_transaction))
    assert await balance_net(client) == txn.net - 5000 - DISPUTE_FEE
    assert await webhook_types(running, receiver) == [
        "charge.dispute.created",
        "charge.dispute.funds_withdrawn",
    ]
    assert (await client.v1.disputes.retrieve_async(dispute.id)).id == dispute.id


async def test_winning_evidence_wins_and_reinstates_the_amount(
    client: stripe.StripeClient, running: Running, receiver: Receiver
) -> None:
    pi = await pay(client, "pm_card_createDispute")
    dispute = await only_dispute(client, pi.id)
    before = await balance_net(client)
    updated = await client.v1.disputes.update_async(
        dispute.id, params={"evidence": {"uncategorized_text": "winning_evidence"}}
    )
    assert (updated.status, updated.evidence_details.submission_count) == ("under_review", 1)
    await running.sandbox.tick()
    won = await client.v1.disputes.retrieve_async(dispute.id)
    assert won.status == "won"
    assert await balance_net(client) == before + 5000  # the fee is not returned
    assert (await webhook_types(running, receiver))[-3:] == [
        "charge.dispute.updated",
        "charge.dispute.funds_reinstated",
        "charge.dispute.closed",
    ]


async def test_other_evidence_loses_and_evidence_is_frozen_after_submit(
    client: stripe.StripeClient, running: Running
) -> None:
    pi = await pay(client, "pm_card_createDisputeProductNotReceived")
    dispute = await only_dispute(client, pi.id)
    assert dispute.reason == "product_not_received"
    draft = await client.v1.disputes.update_async(
        dispute.id,
        params={"evidence": {"customer_name": "Ada"}, "submit": False},
    )
    assert (draft.status, draft.evidence["customer_name"]) == ("needs_response", "Ada")
    await client.v1.disputes.update_async(
        dispute.id, params={"evidence": {"uncategorized_text": "losing_evidence"}}
    )
    before = await balance_net(client)
    await running.sandbox.tick()
    lost = await client.v1.disputes.retrieve_async(dispute.id)
    assert lost.status == "lost"
    assert await balance_net(client) == before
    with pytest.raises(stripe.InvalidRequestError) as err:
        await client.v1.disputes.update_async(
            dispute.id, params={"evidence": {"uncategorized_text": "winning_evidence"}}
        )
    assert err.value.code == "dispute_not_updatable"


async def test_close_accepts_the_loss(client: stripe.StripeClient) -> None:
    pi = await pay(client, "pm_card_createDispute")
    dispute = await only_dispute(client, pi.id)
    closed = await client.v1.disputes.close_async(dispute.id)
    assert closed.status == "lost"
    with pytest.raises(stripe.InvalidRequestError) as err:
        await client.v1.disputes.close_async(dispute.id)
    assert err.value.code == "dispute_closed"


async def test_unanswered_dispute_is_lost_at_its_deadline(
    client: stripe.StripeClient, running: Running, clock: ManualClock
) -> None:
    pi = await pay(client, "pm_card_createDispute")
    dispute = await only_dispute(client, pi.id)
    clock.advance(EVIDENCE_WINDOW_SECONDS - 1)
    await running.sandbox.tick()
    assert (await client.v1.disputes.retrieve_async(dispute.id)).status == "needs_response"
    clock.advance(1)
    await running.sandbox.tick()
    assert (await client.v1.disputes.retrieve_async(dispute.id)).status == "lost"


async def test_inquiry_moves_no_money(client: stripe.StripeClient, running: Running) -> None:
    pi = await pay(client, "pm_card_createDisputeInquiry")
    charge = await client.v1.charges.retrieve_async(str(pi.latest_charge))
    txn = await client.v1.balance_transactions.retrieve_async(str(charge.balance_transaction))
    dispute = await only_dispute(client, pi.id)
    assert dispute.status == "warning_needs_response"
    assert await balance_net(client) == txn.net
    await client.v1.disputes.update_async(
        dispute.id, params={"evidence": {"uncategorized_text": "winning_evidence"}}
    )
    await running.sandbox.tick()
    assert (await client.v1.disputes.retrieve_async(dispute.id)).status == "warning_closed"
    assert await balance_net(client) == txn.net


async def test_ops_route_disputes_any_captured_payment_once(
    client: stripe.StripeClient, running: Running
) -> None:
    pi = await pay(client)
    held = await pay(client, capture_method="manual")
    async with httpx.AsyncClient(base_url=running.url) as raw:
        opened = await raw.post(
            "/_sandbox/disputes", json={"payment_intent": pi.id, "reason": "duplicate"}
        )
        again = await raw.post("/_sandbox/disputes", json={"payment_intent": pi.id})
        uncaptured = await raw.post("/_sandbox/disputes", json={"payment_intent": held.id})
        bad_reason = await raw.post(
            "/_sandbox/disputes", json={"payment_intent": pi.id, "reason": "bored"}
        )
    assert opened.status_code == 200, opened.text
    assert (opened.json()["status"], opened.json()["reason"]) == ("needs_response", "duplicate")
    assert again.status_code == 400 and again.json()["error"]["code"] == "charge_disputed"
    assert uncaptured.status_code == 400
    assert bad_reason.status_code == 422
    assert (await only_dispute(client, pi.id)).id == opened.json()["id"]


async def test_bad_evidence_is_refused(client: stripe.StripeClient) -> None:
    pi = await pay(client, "pm_card_createDispute")
    dispute = await only_dispute(client, pi.id)
    with pytest.raises(stripe.InvalidRequestError) as err:
        await client.v1.disputes.update_async(dispute.id, params={"evidence": {"mood": "sad"}})
    assert err.value.param == "evidence[mood]"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await client.v1.disputes.retrieve_async("dp_missing")
    assert missing.value.code == "resource_missing"
    assert (
        await client.v1.disputes.retrieve_async(dispute.id)
    ).evidence_details.has_evidence is False


async def test_disputes_survive_a_restart(settings: SandboxSettings, clock: ManualClock) -> None:
    async with sandbox_up(settings, clock) as (_sandbox, client, _url):
        pi = await pay(client, "pm_card_createDispute")
        dispute = await only_dispute(client, pi.id)
    async with sandbox_up(settings, clock) as (_sandbox, client, _url):
        again = await client.v1.disputes.retrieve_async(dispute.id)
        charge = await client.v1.charges.retrieve_async(str(pi.latest_charge))
    assert (again.status, again.amount, charge.disputed) == ("needs_response", 5000, True)
