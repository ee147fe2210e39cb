"""``StripeProvider`` turns a card decline into ``PspDeclined`` with the decline code, the
PSP's message and the intent id (the stripe 16.x SDK's error objects are not dicts: reading
them as dicts raised AttributeError on every decline)."""

from __future__ import annotations

import pytest
import stripe
from sandbox_support import API_KEY, Running

from pocketpay.kit.clock import ManualClock
from pocketpay.payments.providers.base import PspDeclined
from pocketpay.payments.providers.stripe import StripeProvider


@pytest.mark.parametrize(
    ("card", "decline_code", "message"),
    [
        ("pm_card_chargeDeclined", "generic_decline", "Your card was declined."),
        (
            "pm_card_chargeDeclinedInsufficientFunds",
            "insufficient_funds",
            "Your card has insufficient funds.",
        ),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card", "Your card has expired."),
    ],
)
async def test_a_decline_carries_code_message_and_intent(
    running: Running, clock: ManualClock, card: str, decline_code: str, message: str
) -> None:
    provider = StripeProvider(API_KEY, running.url, clock)
    with pytest.raises(PspDeclined) as declined:
        await provider.authorize(
            amount_minor=1200,
            currency="USD",
            payment_method=card,
            capture_method="automatic",
            idempotency_key=f"decline-{card}",
            metadata={"payment_id": "pay_decline"},
        )
    assert isinstance(declined.value.__cause__, stripe.CardError)
    assert declined.value.code == decline_code
    assert str(declined.value) == message
    intent_id = declined.value.intent_id
    assert intent_id is not None and intent_id in running.sandbox.store.payment_intents
    # A decline is the PSP's answer, not an outage: the breaker counts it as a success.
    assert provider.breaker.state == "closed"
    assert provider.stats()["errors_5m"] == 0
