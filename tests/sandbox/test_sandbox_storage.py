"""The sandbox remembers across restarts (its own database), and lists as Stripe lists."""

from __future__ import annotations

from typing import Any

import pytest
import stripe
from sandbox_support import SETTLE_DELAY, sandbox_up

from pocketpay.kit.clock import ManualClock
from pocketpay.payments.providers.stripe import StripeProvider
from pocketpay.settings import SandboxSettings

PARAMS: Any = {
    "amount": 1500,
    "currency": "usd",
    "payment_method": "pm_card_visa",
    "confirm": True,
    "metadata": {"payment_id": "pay_1"},
}


async def test_restart_remembers_intents_refunds_and_keys(
    settings: SandboxSettings, clock: ManualClock
) -> None:
    async with sandbox_up(settings, clock) as (_sb, client, _url):
        first = await client.v1.payment_intents.create_async(
            params=PARAMS, options={"idempotency_key": "pp_pay_1_authorize"}
        )
        refund = await client.v1.refunds.create_async(
            params={"payment_intent": first.id, "amount": 500, "metadata": {"refund_id": "re_1"}}
        )
    async with sandbox_up(settings, clock) as (sandbox, client, _url):
        again = await client.v1.payment_intents.create_async(
            params=PARAMS, options={"idempotency_key": "pp_pay_1_authorize"}
        )
        assert again.id == first.id
        assert again.last_response is not None
        assert again.last_response.headers["Idempotent-Replayed"] == "true"
        assert len(sandbox.store.payment_intents) == 1 and len(sandbox.store.charges) == 1
        listed = await client.v1.payment_intents.list_async()
        assert [pi.id for pi in listed.data] == [first.id]
        assert listed.data[0].metadata["payment_id"] == "pay_1"
        charge = await client.v1.charges.retrieve_async(str(first.latest_charge))
        assert (charge.amount_captured, charge.amount_refunded) == (1500, 500)
        assert (await client.v1.refunds.retrieve_async(refund.id)).amount == 500
        # A reused key with other parameters is still refused after the restart.
        with pytest.raises(stripe.IdempotencyError):
            await client.v1.payment_intents.create_async(
                params={**PARAMS, "amount": 99}, options={"idempotency_key": "pp_pay_1_authorize"}
            )


async def test_settlement_is_announced_once_across_restarts(
    settings: SandboxSettings, clock: ManualClock
) -> None:
    async with sandbox_up(settings, clock) as (sandbox, client, _url):
        await client.v1.payment_intents.create_async(params=PARAMS)
        clock.advance(SETTLE_DELAY)
        assert len(await sandbox.tick()) == 1
    async with sandbox_up(settings, clock) as (sandbox, client, _url):
        assert await sandbox.tick() == []
        assert sandbox.events_of("balance.available") == []
        balance = await client.v1.balance.retrieve_async()
        assert balance.available[0].amount > 0


async def test_lists_page_newest_first_with_filters(
    settings: SandboxSettings, clock: ManualClock
) -> None:
    async with sandbox_up(settings, clock) as (_sb, client, _url):
        made = []
        for i in range(5):
            params = {**PARAMS, "metadata": {"payment_id": f"pay_{i}"}}
            made.append(await client.v1.payment_intents.create_async(params=params))
            clock.advance(10)
        page = await client.v1.payment_intents.list_async(params={"limit": 2})
        assert (page.object, page.has_more) == ("list", True)
        assert [pi.id for pi in page.data] == [made[4].id, made[3].id]
        walked = [pi.id async for pi in page.auto_paging_iter()]
        assert walked == [pi.id for pi in reversed(made)]
        recent = await client.v1.payment_intents.list_async(
            params={"created": {"gte": made[3].created}}
        )
        assert [pi.metadata["payment_id"] for pi in recent.data] == ["pay_4", "pay_3"]
        after = await client.v1.payment_intents.list_async(params={"starting_after": made[1].id})
        assert [pi.id for pi in after.data] == [made[0].id] and after.has_more is False

        for pi, amount in ((made[0], 100), (made[0], 200), (made[2], 300)):
            await client.v1.refunds.create_async(
                params={"payment_intent": pi.id, "amount": amount, "metadata": {"refund_id": "r"}}
            )
        of_first = await client.v1.refunds.list_async(params={"payment_intent": made[0].id})
        assert [r.amount for r in of_first.data] == [200, 100]
        assert all(r.metadata["refund_id"] == "r" for r in of_first.data)
        every = [r.amount async for r in (await client.v1.refunds.list_async()).auto_paging_iter()]
        assert every == [300, 200, 100]
        with pytest.raises(stripe.InvalidRequestError):
            await client.v1.refunds.list_async(params={"starting_after": "re_nope"})


async def test_provider_lists_typed_results(settings: SandboxSettings, clock: ManualClock) -> None:
    async with sandbox_up(settings, clock) as (_sb, client, url):
        provider = StripeProvider(settings.api_key, url, clock)
        ids = []
        for i in range(3):
            params = {**PARAMS, "metadata": {"payment_id": f"pay_{i}"}}
            ids.append((await client.v1.payment_intents.create_async(params=params)).id)
        refund = await client.v1.refunds.create_async(
            params={"payment_intent": ids[1], "amount": 100, "metadata": {"refund_id": "re_x"}}
        )
        intents = [pi async for pi in provider.list_intents()]
        assert [pi.intent_id for pi in intents] == ids[::-1]
        assert intents[0].metadata == {"payment_id": "pay_2"}
        assert (intents[0].status, intents[0].amount_received_minor, intents[0].currency) == (
            "succeeded",
            1500,
            "USD",
        )
        refunds = [r async for r in provider.list_refunds(intent_id=ids[1])]
        assert [(r.refund_id, r.intent_id, r.metadata) for r in refunds] == [
            (refund.id, ids[1], {"refund_id": "re_x"})
        ]
        assert [r async for r in provider.list_refunds(intent_id=ids[0])] == []
