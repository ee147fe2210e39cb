"""Payouts in the sandbox, through the official stripe SDK: bank account tokens with Stripe's
test numbers, available funds only, pending → in_transit → paid | failed on the sandbox's
tick, cancel while pending, the balance returned on failure and cancel, signed webhooks."""

from __future__ import annotations

from typing import Any

import pytest
import stripe
from sandbox_support import SECRET, SETTLE_DELAY, Receiver, Running, sandbox_up

from pocketpay.kit.clock import ManualClock
from pocketpay.settings import SandboxSettings

ROUTING = "110000000"
PAID = "000123456789"
NO_ACCOUNT = "000111111116"


async def funded(client: stripe.StripeClient, running: Running, clock: ManualClock) -> int:
    """Charge 100.00 and let it settle; the available USD balance."""
    params: Any = {
        "amount": 10_000,
        "currency": "usd",
        "payment_method": "pm_card_visa",
        "confirm": True,
    }
    await client.v1.payment_intents.create_async(params=params)
    clock.advance(SETTLE_DELAY)
    await running.sandbox.tick()
    return await available(client)


async def available(client: stripe.StripeClient) -> int:
    balance = await client.v1.balance.retrieve_async()
    return sum(e.amount for e in balance.available if e.currency == "usd")


async def bank_account(client: stripe.StripeClient, number: str = PAID) -> stripe.Token:
    params: Any = {
        "bank_account": {
            "country": "US",
            "currency": "usd",
            "routing_number": ROUTING,
            "account_number": number,
            "account_holder_name": "Ada Lovelace",
        }
    }
    return await client.v1.tokens.create_async(params=params)


async def payout(client: stripe.StripeClient, destination: str, amount: int = 2500) -> Any:
    params: Any = {"amount": amount, "currency": "usd", "destination": destination}
    return await client.v1.payouts.create_async(params=params)


async def payout_events(running: Running, receiver: Receiver) -> list[str]:
    await running.sandbox.flush_webhooks()
    events = [
        stripe.Webhook.construct_event(r.body.decode(), r.signature, SECRET)
        for r in receiver.received
    ]
    return [e.type for e in events if e.type.startswith("payout.")]


async def test_payout_goes_in_transit_then_paid(
    client: stripe.StripeClient, running: Running, clock: ManualClock, receiver: Receiver
) -> None:
    start = await funded(client, running, clock)
    token = await bank_account(client)
    assert token.id.startswith("btok_") and token.bank_account is not None
    assert (token.bank_account.last4, token.bank_account.routing_number) == ("6789", ROUTING)
    po = await payout(client, token.bank_account.id)
    assert (po.status, po.destination, po.amount) == ("pending", token.bank_account.id, 2500)
    assert await available(client) == start - 2500
    clock.advance(running.sandbox.settings.payout_transit_seconds)
    await running.sandbox.tick()
    assert (await client.v1.payouts.retrieve_async(po.id)).status == "in_transit"
    clock.advance(running.sandbox.settings.payout_arrival_seconds)
    await running.sandbox.tick()
    paid = await client.v1.payouts.retrieve_async(po.id)
    assert (paid.status, paid.failure_code) == ("paid", None)
    assert await available(client) == start - 2500
    assert await payout_events(running, receiver) == [
        "payout.created",
        "payout.updated",
        "payout.paid",
    ]


async def test_failing_account_fails_and_returns_the_funds(
    client: stripe.StripeClient, running: Running, clock: ManualClock, receiver: Receiver
) -> None:
    start = await funded(client, running, clock)
    token = await bank_account(client, NO_ACCOUNT)
    po = await payout(client, token.id)  # the token works as a destination too
    clock.advance(running.sandbox.settings.payout_arrival_seconds)
    await running.sandbox.tick()
    failed = await client.v1.payouts.retrieve_async(po.id)
    assert (failed.status, failed.failure_code) == ("failed", "no_account")
    assert failed.failure_balance_transaction is not None
    assert await available(client) == start
    assert (await payout_events(running, receiver))[-1] == "payout.failed"


async def test_cancel_only_while_pending(
    client: stripe.StripeClient, running: Running, clock: ManualClock
) -> None:
    start = await funded(client, running, clock)
    token = await bank_account(client)
    first = await payout(client, token.id)
    canceled = await client.v1.payouts.cancel_async(first.id)
    assert canceled.status == "canceled"
    assert await available(client) == start
    second = await payout(client, token.id)
    clock.advance(running.sandbox.settings.payout_transit_seconds)
    await running.sandbox.tick()
    with pytest.raises(stripe.InvalidRequestError) as err:
        await client.v1.payouts.cancel_async(second.id)
    assert err.value.code == "payout_not_cancelable"
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.payouts.cancel_async(first.id)


async def test_only_available_funds_are_paid_out(
    client: stripe.StripeClient, running: Running, clock: ManualClock
) -> None:
    token = await bank_account(client)
    with pytest.raises(stripe.InvalidRequestError) as empty:
        await payout(client, token.id, 1)
    assert empty.value.code == "balance_insufficient"
    start = await funded(client, running, clock)
    with pytest.raises(stripe.InvalidRequestError) as over:
        await payout(client, token.id, start + 1)
    assert over.value.code == "balance_insufficient"
    assert (await payout(client, token.id, start)).status == "pending"
    assert await available(client) == 0


async def test_bad_bank_accounts_and_destinations_are_refused(
    client: stripe.StripeClient,
) -> None:
    bad: list[dict[str, str]] = [
        {"country": "US", "routing_number": "11000", "account_number": PAID},
        {"country": "US", "routing_number": ROUTING, "account_number": "12ab"},
        {"country": "USA", "routing_number": ROUTING, "account_number": PAID},
        {"routing_number": ROUTING, "account_number": PAID},
    ]
    for fields in bad:
        with pytest.raises(stripe.InvalidRequestError) as err:
            await client.v1.tokens.create_async(params={"bank_account": fields})  # type: ignore[typeddict-item]
        assert err.value.param is not None and err.value.param.startswith("bank_account")
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await payout(client, "ba_missing")
    assert (missing.value.code, missing.value.param) == ("resource_missing", "destination")
    listed = await client.v1.payouts.list_async()
    assert listed.data == []


async def test_payouts_survive_a_restart(settings: SandboxSettings, clock: ManualClock) -> None:
    async with sandbox_up(settings, clock) as (sandbox, client, _url):
        params: Any = {
            "amount": 5000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
        await client.v1.payment_intents.create_async(params=params)
        clock.advance(SETTLE_DELAY)
        await sandbox.tick()
        token = await bank_account(client, NO_ACCOUNT)
        po = await payout(client, token.id, 1000)
    async with sandbox_up(settings, clock) as (sandbox, client, _url):
        clock.advance(settings.payout_arrival_seconds)
        await sandbox.tick()
        again = await client.v1.payouts.retrieve_async(po.id)
        listed = await client.v1.payouts.list_async(params={"status": "failed"})
    assert (again.status, again.failure_code) == ("failed", "no_account")
    assert [p.id for p in listed.data] == [po.id]
