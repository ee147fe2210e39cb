"""The web app's forms: the fields a person types (an amount like ``12.50``, a card chosen
from a list) turned into the public API's request models, and every error a person can cause
put in words next to the field it concerns.

A form is validated by the same models the JSON API uses (``PaymentCreate``,
``TransferCreate``, ``SignupIn``...), so the two cannot disagree; only the names of the fields
differ (``amount`` here, ``amount_minor`` there), and ``API_FIELD`` maps them back.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from pocketpay.kit.errors import AppError
from pocketpay.kit.money import (
    CURRENCY_EXPONENTS,
    AmountError,
    Money,
    MoneyError,
    parse_decimal,
)

FORM = "_form"  # errors about the form as a whole, shown above its button

# The sandbox's test cards (Stripe's test payment methods) offered on the top-up form.
TEST_CARDS: dict[str, str] = {
    "pm_card_visa": "Visa ending 4242 (pays)",
    "pm_card_mastercard": "Mastercard ending 4444 (pays)",
    "pm_card_chargeDeclined": "Visa ending 0002 (declined)",
    "pm_card_chargeDeclinedInsufficientFunds": "Visa ending 9995 (declined: no funds)",
    "pm_card_createDispute": "Visa ending 0259 (pays, then disputed by the cardholder)",
}
CURRENCIES = sorted(CURRENCY_EXPONENTS)

# An API body field -> the form field that carries it.
API_FIELD = {
    "amount_minor": "amount",
    "payment_method": "card",
    "recipient": "recipient",
    "currency": "currency",
    "note": "note",
    "email": "email",
    "password": "password",
    "name": "name",
    "url": "url",
    "events": "events",
    "description": "description",
}

# A service error code -> the form field it is about (others are about the whole form).
CODE_FIELD = {
    "validation.unknown_currency": "currency",
    "transfers.recipient_not_found": "recipient",
    "ledger.self_transfer": "recipient",
    "ledger.insufficient_funds": "amount",
    "payments.capture_exceeds_authorized": "amount",
    "payments.refund_exceeds_captured": "amount",
    "payments.invalid_payment_method": "card",
    "auth.email_taken": "email",
    "auth.invalid_credentials": "password",
    "notifications.unknown_event_type": "events",
    "notifications.target_refused": "url",
    "notifications.target_unresolved": "url",
}

# Words for a person where the API's words speak of headers.
CODE_WORDS = {
    "idempotency.in_progress": "This form was already sent and is still being processed; "
    "look at your payments in a moment.",
    "idempotency.key_reused": "This form was already sent with other values; reload the page "
    "to send a new one.",
    "idempotency.key_missing": "This form is incomplete; reload the page and send it again.",
    "idempotency.key_invalid": "This form is incomplete; reload the page and send it again.",
    "ledger.insufficient_funds": "Your wallet's available balance does not cover this amount.",
    "payments.busy": "Too many payments are waiting right now; try again in a minute.",
    "payments.provider_unavailable": "The card network did not answer; send the form again.",
    "rate_limited": "Too many attempts; wait a moment and try again.",
}


class FormError(Exception):
    """The form's errors by field, and the status of the page that shows them again."""

    def __init__(self, errors: dict[str, str], status: int = 422) -> None:
        super().__init__(errors)
        self.errors = errors
        self.status = status

    @classmethod
    def of(cls, exc: AppError) -> FormError:
        field = CODE_FIELD.get(exc.code, FORM)
        for problem in exc.errors or []:  # a validation error names its field
            name = str(problem.get("field", "")).split(".")[-1]
            if name in API_FIELD:
                field = API_FIELD[name]
                break
        return cls({field: CODE_WORDS.get(exc.code, exc.detail)}, exc.status)

    @classmethod
    def invalid(cls, exc: ValidationError) -> FormError:
        errors: dict[str, str] = {}
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else ""
            field = API_FIELD.get(name, FORM)
            errors.setdefault(field, _words(field, err))
        return cls(errors)


def _words(field: str, err: Any) -> str:
    msg = str(err.get("msg", "is not valid")).removeprefix("Value error, ")
    if field == "amount":
        return "Enter an amount greater than zero."
    if field == "email" or field == "recipient":
        return "Enter an email address, like alice@example.com."
    if field == "password" and err.get("type") == "string_too_short":
        return "Use at least 10 characters."
    if field == "card":
        return "Choose one of the test cards."
    return msg[:1].upper() + msg[1:] + ("" if msg.endswith(".") else ".")


def currency_of(text: str) -> str:
    code = text.strip().upper()
    if code not in CURRENCY_EXPONENTS:
        raise FormError({"currency": "Choose a currency from the list."})
    return code


def amount_minor(text: str, currency: str, *, required: bool = True) -> int | None:
    """``"12.50"`` in ``currency`` as minor units (1250); None when empty and not required.
    Read by ``kit.money.parse_decimal`` (the API's reading of ``"amount"``), with its
    refusals said in a form's words."""
    raw = text.strip()
    if "," in raw:
        # "12,50" is 12.50 in much of the world and 1250 in the rest: never guess.
        raise FormError({"amount": "Use a dot for decimals and no separators, like 1250.50."})
    if not raw:
        if required:
            raise FormError({"amount": "Enter an amount."})
        return None
    if raw.startswith("-"):
        raise FormError({"amount": "Enter an amount greater than zero."})
    try:
        return parse_decimal(raw, currency)  # a currency of currency_of()
    except AmountError as exc:
        raise FormError({"amount": _amount_words(exc.reason, currency)}) from None


def _amount_words(reason: str, currency: str) -> str:
    if reason == "places":
        exponent = CURRENCY_EXPONENTS.get(currency, 2)
        places = f"{exponent} decimal places" if exponent else "no decimal places"
        return f"{currency} amounts have {places}."
    if reason == "zero":
        return "Enter an amount greater than zero."
    if reason == "too_large":
        return "This amount is too large."
    return "Enter an amount as a number, like 12.50."


def money(amount: int, currency: str) -> str:
    """``1250, "USD"`` -> ``12.50 USD`` (templates' filter)."""
    try:
        return Money(amount, currency).format()
    except MoneyError:
        return f"{amount} {currency}"
