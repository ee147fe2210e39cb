"""Refunds of captured charges, partial or full, never beyond what is left to refund."""

from __future__ import annotations

from typing import Any

from pocketpay.sandbox.errors import invalid_request
from pocketpay.sandbox.forms import (
    Params,
    check_known,
    get_choice,
    get_metadata,
    get_positive_int,
    get_str,
)
from pocketpay.sandbox.models import Charge, Refund, new_id
from pocketpay.sandbox.state import Store

REASONS = ("duplicate", "fraudulent", "requested_by_customer")
CREATE_PARAMS = frozenset(
    {
        "payment_intent",
        "charge",
        "amount",
        "reason",
        "metadata",
        "expand",
        "instructions_email",
    }
)


def create(store: Store, params: Params) -> dict[str, Any]:
    check_known(params, CREATE_PARAMS)
    charge = _target(store, params)
    amount = _amount(charge, get_positive_int(params, "amount"))
    reason = get_choice(params, "reason", REASONS, "") if "reason" in params else None
    metadata = get_metadata(params)
    txn = store.add_balance_transaction("refund", "", -amount, charge.currency)
    refund = Refund(
        id=new_id("re"),
        amount=amount,
        charge=charge.id,
        payment_intent=charge.payment_intent,
        currency=charge.currency,
        created=store.timestamp(),
        balance_transaction=txn.id,
        reason=reason,
        metadata=metadata,
    )
    txn.source = refund.id
    store.put(refund)
    charge.amount_refunded += amount
    store.emit("refund.created", refund.to_stripe())
    store.emit("charge.refunded", charge.to_stripe())
    store.emit("refund.updated", refund.to_stripe())
    return refund.to_stripe()


def _target(store: Store, params: Params) -> Charge:
    pi_id = get_str(params, "payment_intent")
    ch_id = get_str(params, "charge")
    if pi_id is None and ch_id is None:
        raise invalid_request("One of `charge` or `payment_intent` is required.")
    if ch_id is not None:
        charge = store.charge(ch_id, param="charge")
        if pi_id is not None and charge.payment_intent != pi_id:
            raise invalid_request(
                "The charge does not belong to that payment_intent.", param="payment_intent"
            )
        return charge
    assert pi_id is not None
    pi = store.payment_intent(pi_id)
    if pi.latest_charge is None or pi.status != "succeeded":
        raise invalid_request(
            f"This PaymentIntent ({pi_id}) does not have a successful charge to refund.",
            param="payment_intent",
            code="charge_not_refundable",
        )
    return store.charge(pi.latest_charge)


def _amount(charge: Charge, requested: int | None) -> int:
    if not charge.captured:
        raise invalid_request(
            f"Charge {charge.id} has not been captured; cancel it instead.",
            param="charge",
            code="charge_not_refundable",
        )
    remaining = charge.refundable
    if remaining <= 0:
        raise invalid_request(
            f"Charge {charge.id} has already been refunded.", code="charge_already_refunded"
        )
    amount = remaining if requested is None else requested
    if amount > remaining:
        raise invalid_request(
            f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining}).",
            param="amount",
            code="amount_too_large",
        )
    return amount
