"""Stripe's test payment methods: which succeed, which decline and how."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pocketpay.sandbox.errors import resource_missing


@dataclass(frozen=True)
class CardSpec:
    brand: str
    last4: str
    decline_code: str | None = None
    message: str = ""
    exp_year: int = 2034


_DECLINED = "Your card was declined."

CARDS: dict[str, CardSpec] = {
    "pm_card_visa": CardSpec("visa", "4242"),
    "pm_card_mastercard": CardSpec("mastercard", "4444"),
    "pm_card_amex": CardSpec("amex", "8431"),
    "pm_card_chargeDeclined": CardSpec("visa", "0002", "generic_decline", _DECLINED),
    "pm_card_chargeDeclinedInsufficientFunds": CardSpec(
        "visa", "9995", "insufficient_funds", "Your card has insufficient funds."
    ),
    "pm_card_chargeDeclinedExpiredCard": CardSpec(
        "visa", "0069", "expired_card", "Your card has expired.", exp_year=2020
    ),
}


def lookup(pm_id: str) -> CardSpec:
    """The test card behind a payment method id, or Stripe's ``resource_missing`` error."""
    card = CARDS.get(pm_id)
    if card is None:
        raise resource_missing("PaymentMethod", pm_id, param="payment_method", status=400)
    return card


def payment_method_object(pm_id: str, created: int) -> dict[str, Any]:
    card = lookup(pm_id)
    return {
        "id": pm_id,
        "object": "payment_method",
        "type": "card",
        "created": created,
        "livemode": False,
        "metadata": {},
        "card": {
            "brand": card.brand,
            "last4": card.last4,
            "exp_month": 12,
            "exp_year": card.exp_year,
            "country": "US",
            "funding": "credit",
        },
    }
