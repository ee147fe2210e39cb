"""Payment methods saved on customers: attach, detach, and the checks an intent makes.

Attaching a test payment method (``pm_card_visa``) makes a new ``pm_...`` object owned by the
customer, as Stripe does, remembering its test card. Stripe checks the card at attach time, so
the decline cards fail there (``cards.CardSpec.declines_on_attach``). A detached payment
method can never be attached or used again.
"""

from __future__ import annotations

from typing import Any

from pocketpay.sandbox import cards
from pocketpay.sandbox.errors import invalid_request, resource_missing
from pocketpay.sandbox.forms import Params, check_known, get_str
from pocketpay.sandbox.models import Customer, PaymentMethod, new_id
from pocketpay.sandbox.state import Store

ATTACH_PARAMS = frozenset({"customer", "expand"})
DETACH_PARAMS = frozenset({"expand"})

_REUSED = (
    "The provided PaymentMethod was previously used with a PaymentIntent without Customer "
    "attachment, shared with a connected account without Customer attachment, or was detached "
    "from a Customer. It may not be used again. To use a PaymentMethod multiple times, you "
    "must attach it to a Customer first."
)


def attach(store: Store, pm_id: str, params: Params) -> dict[str, Any]:
    check_known(params, ATTACH_PARAMS)
    cus_id = get_str(params, "customer", required=True)
    assert cus_id is not None
    customer = store.customer(cus_id, param="customer", status=400)
    attachable(store, pm_id, status=404)
    return attach_new(store, pm_id, customer).to_stripe()


def attachable(store: Store, pm_id: str, *, status: int) -> None:
    """Raise Stripe's error if ``pm_id`` cannot be attached (``status`` for an unknown id)."""
    stored = store.payment_methods.get(pm_id)
    if stored is not None:
        if stored.customer is not None:
            raise invalid_request(
                "The payment method you provided has already been attached to a customer.",
                param="payment_method",
            )
        raise invalid_request(_REUSED, param="payment_method")
    card = cards.CARDS.get(pm_id)
    if card is None:
        raise resource_missing("PaymentMethod", pm_id, param="payment_method", status=status)
    if card.declines_on_attach:
        raise cards.declined(card)


def attach_new(store: Store, test_card: str, customer: Customer) -> PaymentMethod:
    """A new payment method of an ``attachable`` test card, owned by ``customer``."""
    card = cards.lookup(test_card)
    pm = PaymentMethod(
        new_id("pm"), store.timestamp(), test_card, cards.card_details(card), customer.id
    )
    store.put(pm)
    store.emit("payment_method.attached", pm.to_stripe())
    return pm


def detach(store: Store, pm_id: str, params: Params) -> dict[str, Any]:
    check_known(params, DETACH_PARAMS)
    stored = store.payment_methods.get(pm_id)
    if stored is None and pm_id not in cards.CARDS:
        raise resource_missing("PaymentMethod", pm_id)
    if stored is None or stored.customer is None:
        raise invalid_request(
            "The payment method you provided is not attached to a customer so detachment is "
            "impossible."
        )
    pm = store.payment_method(pm_id)
    assert pm.customer is not None
    customer = store.customer(pm.customer)
    if customer.default_payment_method == pm.id:  # Stripe clears a detached default
        customer.default_payment_method = None
    pm.customer = None
    store.emit("payment_method.detached", pm.to_stripe())
    return pm.to_stripe()


def check_for_intent(
    store: Store, pm_id: str, customer: str | None, intent: dict[str, Any] | None
) -> None:
    """Raise Stripe's error if an intent for ``customer`` cannot use ``pm_id``; ``intent``
    (at confirm, not at create) rides on the error as Stripe sends it."""
    stored = store.payment_methods.get(pm_id)
    if stored is None:
        cards.lookup(pm_id)
        return
    if stored.customer is None:
        message = _REUSED
    elif customer is None:
        message = (
            f"The `payment_method` parameter supplied {pm_id} belongs to the Customer "
            f"{stored.customer}. Please include the Customer in the `customer` parameter on "
            "the PaymentIntent."
        )
    elif stored.customer != customer:
        message = (
            f"The PaymentMethod {pm_id} does not belong to the Customer you supplied "
            f"{customer}. Please use this PaymentMethod with the Customer that it belongs to "
            "instead."
        )
    else:
        return
    error = invalid_request(message, param="payment_method")
    if intent is not None:
        error.extra["payment_intent"] = intent
    raise error


def charge_card(store: Store, pm_id: str) -> tuple[cards.CardSpec, dict[str, Any]]:
    """The test card that decides a charge of ``pm_id``, and the card details it shows."""
    stored = store.payment_methods.get(pm_id)
    if stored is not None:
        return cards.lookup(stored.test_card), dict(stored.card)
    card = cards.lookup(pm_id)
    return card, cards.card_details(card)
