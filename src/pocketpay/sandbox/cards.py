"""Stripe's test payment methods: which succeed, which decline and how, and when.

Stripe checks a card when it is attached to a customer: the decline cards fail there already
(``declines_on_attach``), except ``pm_card_chargeCustomerFail`` (4000 0000 0000 0341), which
attaches and then declines every charge, the card for testing failed renewals.

The dispute cards succeed and then open a dispute (``dispute_reason``) once the charge is
captured: ``pm_card_createDispute`` (fraudulent), ``pm_card_createDisputeProductNotReceived``
and ``pm_card_createDisputeInquiry`` (an inquiry, which moves no money).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pocketpay.sandbox.errors import StripeError, resource_missing
from pocketpay.sandbox.models import PaymentMethod


@dataclass(frozen=True)
class CardSpec:
    brand: str
    last4: str
    decline_code: str | None = None
    message: str = ""
    exp_year: int = 2034
    declines_on_attach: bool = False
    dispute_reason: str | None = None
    dispute_inquiry: bool = False


_DECLINED = "Your card was declined."

CARDS: dict[str, CardSpec] = {
    "pm_card_visa": CardSpec("visa", "4242"),
    "pm_card_mastercard": CardSpec("mastercard", "4444"),
    "pm_card_amex": CardSpec("amex", "8431"),
    "pm_card_chargeDeclined": CardSpec(
        "visa", "0002", "generic_decline", _DECLINED, declines_on_attach=True
    ),
    "pm_card_chargeDeclinedInsufficientFunds": CardSpec(
        "visa",
        "9995",
        "insufficient_funds",
        "Your card has insufficient funds.",
        declines_on_attach=True,
    ),
    "pm_card_chargeDeclinedExpiredCard": CardSpec(
        "visa",
        "0069",
        "expired_card",
        "Your card has expired.",
        exp_year=2020,
        declines_on_attach=True,
    ),
    "pm_card_chargeCustomerFail": CardSpec("visa", "0341", "generic_decline", _DECLINED),
    "pm_card_createDispute": CardSpec("visa", "0259", dispute_reason="fraudulent"),
    "pm_card_createDisputeProductNotReceived": CardSpec(
        "visa", "2685", dispute_reason="product_not_received"
    ),
    "pm_card_createDisputeInquiry": CardSpec(
        "visa", "1976", dispute_reason="fraudulent", dispute_inquiry=True
    ),
}


def lookup(pm_id: str) -> CardSpec:
    """The test card behind a payment method id, or Stripe's ``resource_missing`` error."""
    card = CARDS.get(pm_id)
    if card is None:
        raise resource_missing("PaymentMethod", pm_id, param="payment_method", status=400)
    return card


def card_details(card: CardSpec) -> dict[str, Any]:
    """The ``card`` hash of a payment method (and of a charge's ``payment_method_details``)."""
    return {
        "brand": card.brand,
        "last4": card.last4,
        "exp_month": 12,
        "exp_year": card.exp_year,
        "country": "US",
        "funding": "credit",
    }


def payment_method_object(pm_id: str, created: int) -> dict[str, Any]:
    """A test payment method (``pm_card_visa``) as Stripe shows it: never attached."""
    return PaymentMethod(pm_id, created, pm_id, card_details(lookup(pm_id))).to_stripe()


def declined(card: CardSpec, **extra: Any) -> StripeError:
    """The 402 ``card_error`` of a declined card; ``extra`` adds ``charge``, ``payment_intent``,
    ``payment_method`` as the answer carries them."""
    assert card.decline_code is not None
    return StripeError(
        402,
        "card_error",
        card.message,
        code="card_declined",
        extra={"decline_code": card.decline_code, **extra},
    )
