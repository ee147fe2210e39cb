"""``StripeProvider`` keeps cards for a customer and charges them off-session (what billing
needs), against the sandbox through the official SDK: the same idempotency key converges."""

from __future__ import annotations

import pytest
from sandbox_support import API_KEY, Running

from pocketpay.kit.clock import ManualClock
from pocketpay.payments.providers.base import PspDeclined, PspRejected
from pocketpay.payments.providers.stripe import StripeProvider


async def _charge(provider: StripeProvider, pm: str, customer: str, key: str) -> str:
    result = await provider.authorize(
        amount_minor=2500,
        currency="USD",
        payment_method=pm,
        capture_method="automatic",
        idempotency_key=key,
        metadata={"payment_id": f"pay_{key}"},
        customer=customer,
        off_session=True,
    )
    return result.status


async def test_a_saved_card_is_charged_off_session(running: Running, clock: ManualClock) -> None:
    provider = StripeProvider(API_KEY, running.url, clock)
    customer = await provider.create_customer(idempotency_key="cus-1", metadata={"owner": "u1"})
    assert customer == await provider.create_customer(
        idempotency_key="cus-1", metadata={"owner": "u1"}
    )  # a retry converges on the same customer
    card = await provider.attach_payment_method("pm_card_visa", customer, "attach-1")
    assert card.psp_payment_method_id.startswith("pm_")
    assert card.psp_payment_method_id != "pm_card_visa"
    assert (card.brand, card.last4) == ("visa", "4242")
    assert card == await provider.attach_payment_method("pm_card_visa", customer, "attach-1")

    assert await _charge(provider, card.psp_payment_method_id, customer, "k1") == "succeeded"
    intent = next(
        pi
        for pi in running.sandbox.store.payment_intents.values()
        if pi.metadata.get("payment_id") == "pay_k1"
    )
    assert intent.customer == customer

    failing = await provider.attach_payment_method("pm_card_chargeCustomerFail", customer, "a-2")
    with pytest.raises(PspDeclined) as declined:
        await _charge(provider, failing.psp_payment_method_id, customer, "k2")
    assert declined.value.code == "generic_decline"

    await provider.detach_payment_method(card.psp_payment_method_id)
    with pytest.raises(PspRejected):
        await _charge(provider, card.psp_payment_method_id, customer, "k3")


async def test_a_card_refused_at_attach_is_a_decline(running: Running, clock: ManualClock) -> None:
    provider = StripeProvider(API_KEY, running.url, clock)
    customer = await provider.create_customer(idempotency_key="cus-2", metadata={})
    with pytest.raises(PspDeclined) as declined:
        await provider.attach_payment_method("pm_card_chargeDeclined", customer, "attach-x")
    assert declined.value.code == "generic_decline"
    assert provider.breaker.state == "closed"
