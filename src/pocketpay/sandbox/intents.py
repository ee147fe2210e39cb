"""PaymentIntent operations: create, confirm (test cards decide), capture, cancel.

An intent may be for a ``customer`` and use a payment method saved on that customer; an
off-session charge (``off_session=true``) succeeds or declines as an on-session one does
(there are no authentication-required cards here), a decline being the same 402 with the
intent in ``error.payment_intent``.
"""

from __future__ import annotations

import secrets
from typing import Any

from pocketpay.sandbox import cards, disputes, payment_methods
from pocketpay.sandbox.errors import invalid_request, unexpected_state
from pocketpay.sandbox.forms import (
    Params,
    check_known,
    get_bool,
    get_choice,
    get_metadata,
    get_positive_int,
    get_str,
)
from pocketpay.sandbox.models import Charge, PaymentIntent, new_id
from pocketpay.sandbox.state import Store

CAPTURE_METHODS = ("automatic", "automatic_async", "manual")
CANCEL_REASONS = ("duplicate", "fraudulent", "requested_by_customer", "abandoned")
# Accepted so callers written for Stripe work, but without effect in the sandbox.
_IGNORED = frozenset(
    {
        "automatic_payment_methods",
        "confirmation_method",
        "error_on_requires_action",
        "mandate_data",
        "payment_method_options",
        "payment_method_types",
        "receipt_email",
        "return_url",
        "setup_future_usage",
        "shipping",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "use_stripe_sdk",
        "expand",
    }
)
CREATE_PARAMS = _IGNORED | {
    "amount",
    "currency",
    "payment_method",
    "confirm",
    "capture_method",
    "description",
    "metadata",
    "customer",
    "off_session",
}
CONFIRM_PARAMS = _IGNORED | {"payment_method", "capture_method", "off_session"}
CAPTURE_PARAMS = frozenset({"amount_to_capture", "metadata", "expand", "final_capture"})
CANCEL_PARAMS = frozenset({"cancellation_reason", "expand"})
_CANCELABLE = ("requires_payment_method", "requires_confirmation", "requires_capture")


def create(store: Store, params: Params) -> dict[str, Any]:
    check_known(params, CREATE_PARAMS)
    amount = get_positive_int(params, "amount", required=True)
    currency = get_str(params, "currency", required=True)
    assert amount is not None and currency is not None
    customer = get_str(params, "customer")
    if customer is not None:
        store.customer(customer, param="customer", status=400)
    confirm_now = get_bool(params, "confirm")
    if get_bool(params, "off_session") and not confirm_now:
        raise invalid_request(
            "You can only pass `off_session` when `confirm` is `true`.", param="off_session"
        )
    pi_id = new_id("pi")
    pi = PaymentIntent(
        id=pi_id,
        amount=amount,
        currency=_currency(currency),
        capture_method=get_choice(params, "capture_method", CAPTURE_METHODS, "automatic"),
        created=store.timestamp(),
        status="requires_payment_method",
        description=get_str(params, "description"),
        metadata=get_metadata(params),
        client_secret=f"{pi_id}_secret_{secrets.token_urlsafe(18)}",
        customer=customer,
    )
    # At create a refused payment method leaves no intent behind (nothing is stored yet).
    _attach(store, pi, get_str(params, "payment_method"), at_confirm=False)
    store.put(pi)
    if confirm_now:
        _confirm(store, pi)
    return pi.to_stripe()


def confirm(store: Store, pi_id: str, params: Params) -> dict[str, Any]:
    check_known(params, CONFIRM_PARAMS)
    pi = store.payment_intent(pi_id)
    if pi.status not in ("requires_payment_method", "requires_confirmation"):
        raise unexpected_state(
            f"This PaymentIntent's status is {pi.status}, but it must be requires_payment_method "
            "or requires_confirmation to be confirmed."
        )
    capture_method = get_choice(params, "capture_method", CAPTURE_METHODS, pi.capture_method)
    get_bool(params, "off_session")  # checked only: these cards never ask for authentication
    # The intent's own payment method is checked again: it may have been detached since.
    pm_id = get_str(params, "payment_method") or pi.payment_method
    _attach(store, pi, pm_id, at_confirm=True)
    pi.capture_method = capture_method
    _confirm(store, pi)
    return pi.to_stripe()


def capture(store: Store, pi_id: str, params: Params) -> dict[str, Any]:
    check_known(params, CAPTURE_PARAMS)
    pi = store.payment_intent(pi_id)
    if pi.status != "requires_capture":
        raise unexpected_state(
            f"This PaymentIntent could not be captured because it has a status of {pi.status}. "
            "Only a PaymentIntent with one of the following statuses may be captured: "
            "requires_capture."
        )
    amount = get_positive_int(params, "amount_to_capture") or pi.amount_capturable
    if amount > pi.amount_capturable:
        raise invalid_request(
            f"The amount to capture ({amount}) must be less than or equal to the amount "
            f"capturable ({pi.amount_capturable}).",
            param="amount_to_capture",
            code="amount_too_large",
        )
    pi.metadata.update(get_metadata(params))
    assert pi.latest_charge is not None
    _settle_capture(store, pi, store.charge(pi.latest_charge), amount)
    return pi.to_stripe()


def cancel(store: Store, pi_id: str, params: Params) -> dict[str, Any]:
    check_known(params, CANCEL_PARAMS)
    pi = store.payment_intent(pi_id)
    if pi.status not in _CANCELABLE:
        raise unexpected_state(
            f"You cannot cancel this PaymentIntent because it has a status of {pi.status}. "
            f"Only a PaymentIntent with one of the following statuses may be canceled: "
            f"{', '.join(_CANCELABLE)}."
        )
    if "cancellation_reason" in params:
        pi.cancellation_reason = get_choice(params, "cancellation_reason", CANCEL_REASONS, "")
    pi.status = "canceled"
    pi.canceled_at = store.timestamp()
    pi.amount_capturable = 0
    store.emit("payment_intent.canceled", pi.to_stripe())
    return pi.to_stripe()


def _currency(raw: str) -> str:
    if len(raw) != 3 or not raw.isalpha():
        raise invalid_request(f"Invalid currency: {raw}", param="currency")
    return raw.lower()


def _attach(store: Store, pi: PaymentIntent, pm_id: str | None, *, at_confirm: bool) -> None:
    if pm_id is None:
        return
    intent = pi.to_stripe() if at_confirm else None
    payment_methods.check_for_intent(store, pm_id, pi.customer, intent)
    pi.payment_method = pm_id
    pi.status = "requires_confirmation"


def _confirm(store: Store, pi: PaymentIntent) -> None:
    if pi.payment_method is None:
        raise unexpected_state(
            "You cannot confirm this PaymentIntent because it's missing a payment method. "
            "To confirm the PaymentIntent with a test card, pass payment_method=pm_card_visa."
        )
    card, details = payment_methods.charge_card(store, pi.payment_method)
    charge = Charge(
        id=new_id("ch"),
        payment_intent=pi.id,
        payment_method=pi.payment_method,
        amount=pi.amount,
        currency=pi.currency,
        created=store.timestamp(),
        status="failed" if card.decline_code else "succeeded",
        card=details,
        description=pi.description,
        metadata=dict(pi.metadata),
        customer=pi.customer,
        dispute_on_capture=card.dispute_reason is not None,
    )
    store.put(charge)
    pi.latest_charge = charge.id
    if card.decline_code:
        _decline(store, pi, charge, card)
    pi.last_payment_error = None
    if pi.capture_method == "manual":
        pi.status = "requires_capture"
        pi.amount_capturable = pi.amount
        store.emit("payment_intent.amount_capturable_updated", pi.to_stripe())
    else:
        _settle_capture(store, pi, charge, pi.amount)


def _decline(store: Store, pi: PaymentIntent, charge: Charge, card: cards.CardSpec) -> None:
    charge.failure_code = "card_declined"
    charge.failure_message = card.message
    charge.decline_code = card.decline_code
    assert pi.payment_method is not None
    error = cards.declined(card, charge=charge.id, payment_method=store.render(pi.payment_method))
    pi.last_payment_error = error.body()["error"]
    pi.payment_method = None
    pi.status = "requires_payment_method"
    store.emit("payment_intent.payment_failed", pi.to_stripe())
    error.extra["payment_intent"] = pi.to_stripe()
    raise error


def _settle_capture(store: Store, pi: PaymentIntent, charge: Charge, amount: int) -> None:
    txn = store.add_balance_transaction("charge", charge.id, amount, charge.currency)
    charge.captured = True
    charge.amount_captured = amount
    charge.balance_transaction = txn.id
    pi.status = "succeeded"
    pi.amount_received = amount
    pi.amount_capturable = 0
    store.emit("payment_intent.succeeded", pi.to_stripe())
    if charge.dispute_on_capture:
        card, _details = payment_methods.charge_card(store, charge.payment_method)
        assert card.dispute_reason is not None
        disputes.open_for_charge(
            store, charge, reason=card.dispute_reason, inquiry=card.dispute_inquiry
        )
