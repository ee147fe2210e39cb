"""Customers, saved payment methods and off-session charges, through the official stripe SDK:
what subscription billing needs from the sandbox."""

from __future__ import annotations

from typing import Any

import pytest
import stripe
from sandbox_support import Running, sandbox_up

from pocketpay.kit.clock import ManualClock
from pocketpay.settings import SandboxSettings


async def customer(client: stripe.StripeClient, **extra: Any) -> stripe.Customer:
    params: Any = {"email": "ada@example.com", "name": "Ada", **extra}
    return await client.v1.customers.create_async(params=params)


async def attach(client: stripe.StripeClient, card: str, cus_id: str) -> stripe.PaymentMethod:
    return await client.v1.payment_methods.attach_async(card, params={"customer": cus_id})


async def charge_off_session(
    client: stripe.StripeClient, cus_id: str | None, pm_id: str, amount: int = 1200
) -> stripe.PaymentIntent:
    params: Any = {
        "amount": amount,
        "currency": "usd",
        "payment_method": pm_id,
        "off_session": True,
        "confirm": True,
        "metadata": {"invoice_id": "inv_1"},
    }
    if cus_id is not None:
        params["customer"] = cus_id
    return await client.v1.payment_intents.create_async(params=params)


async def test_saved_card_is_a_new_payment_method_charged_off_session(
    client: stripe.StripeClient, running: Running
) -> None:
    cus = await customer(client, metadata={"user_id": "u_1"})
    assert cus.id.startswith("cus_") and cus.object == "customer"
    assert (cus.email, cus.name, cus.metadata["user_id"]) == ("ada@example.com", "Ada", "u_1")
    assert cus.invoice_settings.default_payment_method is None

    pm = await attach(client, "pm_card_visa", cus.id)
    assert pm.id.startswith("pm_") and pm.id != "pm_card_visa"
    assert (pm.customer, pm.type, pm.card is not None) == (cus.id, "card", True)
    assert pm.card is not None and (pm.card.brand, pm.card.last4) == ("visa", "4242")
    assert (await client.v1.payment_methods.retrieve_async(pm.id)).customer == cus.id
    listed = await client.v1.customers.payment_methods.list_async(cus.id)
    assert (listed.object, [p.id for p in listed.data]) == ("list", [pm.id])
    cus = await client.v1.customers.update_async(
        cus.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    assert cus.invoice_settings.default_payment_method == pm.id
    fetched = await client.v1.customers.retrieve_async(cus.id)
    assert fetched.invoice_settings.default_payment_method == pm.id

    pi = await charge_off_session(client, cus.id, pm.id)
    assert (pi.status, pi.customer, pi.payment_method, pi.amount_received) == (
        "succeeded",
        cus.id,
        pm.id,
        1200,
    )
    charge = await client.v1.charges.retrieve_async(str(pi.latest_charge))
    assert charge.customer == cus.id and charge.payment_method == pm.id
    assert charge.payment_method_details is not None
    assert charge.payment_method_details.card is not None
    assert charge.payment_method_details.card.last4 == "4242"
    (succeeded,) = running.sandbox.events_of("payment_intent.succeeded")
    assert succeeded["data"]["object"]["customer"] == cus.id
    assert [e["data"]["object"]["id"] for e in running.sandbox.events_of("customer.created")] == [
        cus.id
    ]
    assert running.sandbox.events_of("payment_method.attached")[0]["data"]["object"]["id"] == pm.id
    other = await customer(client)
    await charge_off_session(client, other.id, "pm_card_mastercard")
    mine = await client.v1.payment_intents.list_async(params={"customer": cus.id})
    assert [p.id for p in mine.data] == [pi.id]


async def test_charge_customer_fail_attaches_then_declines(
    client: stripe.StripeClient, running: Running
) -> None:
    cus = await customer(client)
    pm = await attach(client, "pm_card_chargeCustomerFail", cus.id)
    assert pm.card is not None and pm.card.last4 == "0341" and pm.customer == cus.id
    with pytest.raises(stripe.CardError) as err:
        await charge_off_session(client, cus.id, pm.id)
    assert (err.value.http_status, err.value.code) == (402, "card_declined")
    error = err.value.error
    assert error is not None and error.decline_code == "generic_decline"
    assert error.message == "Your card was declined."
    intent: Any = error.payment_intent
    assert (intent["status"], intent["customer"]) == ("requires_payment_method", cus.id)
    assert intent["last_payment_error"]["payment_method"]["id"] == pm.id
    pi = await client.v1.payment_intents.retrieve_async(intent["id"])
    assert pi.last_payment_error is not None
    assert pi.last_payment_error.decline_code == "generic_decline"
    (failed,) = running.sandbox.events_of("payment_intent.payment_failed")
    assert failed["data"]["object"]["id"] == pi.id
    assert failed["data"]["object"]["customer"] == cus.id
    # The card stays saved: the next renewal attempt declines the same way.
    with pytest.raises(stripe.CardError):
        await charge_off_session(client, cus.id, pm.id)


@pytest.mark.parametrize(
    ("card", "decline_code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card"),
    ],
)
async def test_decline_cards_fail_at_attach(
    client: stripe.StripeClient, running: Running, card: str, decline_code: str
) -> None:
    cus = await customer(client)
    with pytest.raises(stripe.CardError) as err:
        await attach(client, card, cus.id)
    assert (err.value.http_status, err.value.code) == (402, "card_declined")
    assert err.value.error is not None and err.value.error.decline_code == decline_code
    assert (await client.v1.customers.payment_methods.list_async(cus.id)).data == []
    assert running.sandbox.store.payment_methods == {}


async def test_foreign_and_detached_payment_methods_are_refused(
    client: stripe.StripeClient, running: Running
) -> None:
    owner, stranger = await customer(client), await customer(client, email="eve@example.com")
    pm = await attach(client, "pm_card_visa", owner.id)

    with pytest.raises(stripe.InvalidRequestError) as foreign:
        await charge_off_session(client, stranger.id, pm.id)
    assert (foreign.value.http_status, foreign.value.param) == (400, "payment_method")
    assert str(foreign.value.user_message).startswith(
        f"The PaymentMethod {pm.id} does not belong to the Customer you supplied {stranger.id}."
    )
    with pytest.raises(stripe.InvalidRequestError) as no_customer:
        await charge_off_session(client, None, pm.id)
    assert f"belongs to the Customer {owner.id}" in str(no_customer.value.user_message)
    assert running.sandbox.store.payment_intents == {}  # refused at create: no intent
    # At confirm the refusal carries the intent, as Stripe's does.
    later = await client.v1.payment_intents.create_async(
        params={"amount": 500, "currency": "usd", "customer": stranger.id}
    )
    with pytest.raises(stripe.InvalidRequestError) as at_confirm:
        await client.v1.payment_intents.confirm_async(later.id, params={"payment_method": pm.id})
    assert at_confirm.value.error is not None
    assert at_confirm.value.error.payment_intent["id"] == later.id  # type: ignore[index]
    with pytest.raises(stripe.InvalidRequestError) as taken:
        await attach(client, pm.id, stranger.id)
    assert "already been attached to a customer" in str(taken.value.user_message)

    await client.v1.customers.update_async(
        owner.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    pending = await client.v1.payment_intents.create_async(
        params={"amount": 500, "currency": "usd", "customer": owner.id, "payment_method": pm.id}
    )
    detached = await client.v1.payment_methods.detach_async(pm.id)
    assert detached.customer is None
    owner = await client.v1.customers.retrieve_async(owner.id)
    assert owner.invoice_settings.default_payment_method is None
    assert (await client.v1.customers.payment_methods.list_async(owner.id)).data == []
    events = running.sandbox.events_of("payment_method.detached")
    assert [e["data"]["object"]["id"] for e in events] == [pm.id]
    with pytest.raises(stripe.InvalidRequestError) as reused:
        await charge_off_session(client, owner.id, pm.id)
    assert (reused.value.http_status, reused.value.param) == (400, "payment_method")
    assert "It may not be used again." in str(reused.value.user_message)
    with pytest.raises(stripe.InvalidRequestError):
        await attach(client, pm.id, owner.id)
    with pytest.raises(stripe.InvalidRequestError) as chosen_before:  # before the detach
        await client.v1.payment_intents.confirm_async(pending.id)
    assert "It may not be used again." in str(chosen_before.value.user_message)
    with pytest.raises(stripe.InvalidRequestError) as twice:
        await client.v1.payment_methods.detach_async(pm.id)
    assert "not attached to a customer" in str(twice.value.user_message)


async def test_customer_updates_defaults_and_missing_objects(
    client: stripe.StripeClient,
) -> None:
    cus = await customer(
        client,
        payment_method="pm_card_mastercard",
        invoice_settings={"default_payment_method": "pm_card_mastercard"},
        metadata={"a": "1", "b": "2"},
    )
    (saved,) = (await client.v1.customers.payment_methods.list_async(cus.id)).data
    assert saved.id != "pm_card_mastercard" and saved.customer == cus.id
    assert cus.invoice_settings.default_payment_method == saved.id
    cus = await client.v1.customers.update_async(
        cus.id, params={"name": "Ada L.", "metadata": {"a": "", "c": "3"}}
    )
    assert (cus.name, cus.email, cus.metadata.to_dict()) == (
        "Ada L.",
        "ada@example.com",
        {"b": "2", "c": "3"},
    )
    other = await customer(client)
    with pytest.raises(stripe.InvalidRequestError) as foreign_default:
        await client.v1.customers.update_async(
            other.id, params={"invoice_settings": {"default_payment_method": saved.id}}
        )
    assert foreign_default.value.param == "invoice_settings[default_payment_method]"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        await client.v1.customers.retrieve_async("cus_nope")
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as no_customer:
        await attach(client, "pm_card_visa", "cus_nope")
    assert (no_customer.value.http_status, no_customer.value.param) == (400, "customer")
    with pytest.raises(stripe.InvalidRequestError) as no_pm:
        await client.v1.payment_methods.retrieve_async("pm_nope")
    assert (no_pm.value.http_status, no_pm.value.code) == (404, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as pi_customer:
        await charge_off_session(client, "cus_nope", "pm_card_visa")
    assert (pi_customer.value.http_status, pi_customer.value.param) == (400, "customer")
    with pytest.raises(stripe.InvalidRequestError) as unconfirmed:
        await client.v1.payment_intents.create_async(
            params={"amount": 500, "currency": "usd", "customer": cus.id, "off_session": True}
        )
    assert unconfirmed.value.param == "off_session"


async def test_customer_create_is_idempotent(client: stripe.StripeClient, running: Running) -> None:
    params: Any = {"email": "ada@example.com", "metadata": {"user_id": "u_1"}}
    first = await client.v1.customers.create_async(
        params=params, options={"idempotency_key": "cus-u_1"}
    )
    again = await client.v1.customers.create_async(
        params=params, options={"idempotency_key": "cus-u_1"}
    )
    assert again.id == first.id
    assert again.last_response is not None
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert list(running.sandbox.store.customers) == [first.id]
    with pytest.raises(stripe.IdempotencyError):
        await client.v1.customers.create_async(
            params={**params, "email": "eve@example.com"}, options={"idempotency_key": "cus-u_1"}
        )


async def test_restart_keeps_customers_and_attachments(
    settings: SandboxSettings, clock: ManualClock
) -> None:
    async with sandbox_up(settings, clock) as (_sb, client, _url):
        cus = await customer(client, metadata={"user_id": "u_1"})
        kept = await attach(client, "pm_card_visa", cus.id)
        failing = await attach(client, "pm_card_chargeCustomerFail", cus.id)
        gone = await attach(client, "pm_card_amex", cus.id)
        await client.v1.payment_methods.detach_async(gone.id)
        await client.v1.customers.update_async(
            cus.id, params={"invoice_settings": {"default_payment_method": kept.id}}
        )
    async with sandbox_up(settings, clock) as (sandbox, client, _url):
        again = await client.v1.customers.retrieve_async(cus.id)
        assert (again.email, again.metadata["user_id"]) == ("ada@example.com", "u_1")
        assert again.invoice_settings.default_payment_method == kept.id
        listed = await client.v1.customers.payment_methods.list_async(cus.id)
        assert [p.id for p in listed.data] == [failing.id, kept.id]  # newest first
        assert (await charge_off_session(client, cus.id, kept.id)).status == "succeeded"
        with pytest.raises(stripe.CardError):  # still remembers which test card it is
            await charge_off_session(client, cus.id, failing.id)
        with pytest.raises(stripe.InvalidRequestError):
            await charge_off_session(client, cus.id, gone.id)
        assert len(sandbox.store.payment_methods) == 3
