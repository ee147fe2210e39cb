"""Customers: create, update, and the default payment method their invoices are charged to.

``invoice_settings[default_payment_method]`` must name a payment method attached to the
customer. On create, ``payment_method`` attaches a test payment method first, and a default
naming that same test id means the new payment method, as in Stripe's subscription guides
(``payment_method=pm_card_visa&invoice_settings[default_payment_method]=pm_card_visa``).
"""

from __future__ import annotations

from typing import Any

from pocketpay.sandbox import payment_methods
from pocketpay.sandbox.errors import StripeError, invalid_request
from pocketpay.sandbox.forms import (
    Params,
    check_known,
    get_metadata,
    get_str,
    update_metadata,
)
from pocketpay.sandbox.models import Customer, new_id
from pocketpay.sandbox.state import Store

_FIELDS = ("email", "name", "description", "phone")
UPDATE_PARAMS = frozenset({*_FIELDS, "metadata", "invoice_settings", "expand"})
CREATE_PARAMS = UPDATE_PARAMS | {"payment_method"}
_DEFAULT_PARAM = "invoice_settings[default_payment_method]"


def create(store: Store, params: Params) -> dict[str, Any]:
    check_known(params, CREATE_PARAMS)
    pm_id = get_str(params, "payment_method")
    sent, default = _invoice_default(params)
    # Everything is checked before the customer exists: a failed create leaves nothing.
    if pm_id is not None:
        payment_methods.attachable(store, pm_id, status=400)
    if sent and default is not None and default != pm_id:
        raise _not_attached(default)
    customer = Customer(
        id=new_id("cus", 14),
        created=store.timestamp(),
        email=get_str(params, "email"),
        name=get_str(params, "name"),
        description=get_str(params, "description"),
        phone=get_str(params, "phone"),
        metadata=get_metadata(params),
    )
    store.put(customer)
    store.emit("customer.created", customer.to_stripe())
    if pm_id is not None:
        pm = payment_methods.attach_new(store, pm_id, customer)
        if default == pm_id:
            customer.default_payment_method = pm.id
    return customer.to_stripe()


def retrieve(store: Store, cus_id: str, params: Params) -> dict[str, Any]:
    check_known(params, frozenset({"expand"}))
    return store.retrieve("cus", cus_id)


def update(store: Store, cus_id: str, params: Params) -> dict[str, Any]:
    check_known(params, UPDATE_PARAMS)
    customer = store.customer(cus_id)
    sent, default = _invoice_default(params)
    if sent and default is not None:
        pm = store.payment_methods.get(default)
        if pm is None or pm.customer != customer.id:
            raise _not_attached(default)
    for name in _FIELDS:
        if name in params:
            setattr(customer, name, get_str(params, name))
    if "metadata" in params:
        customer.metadata = update_metadata(customer.metadata, params)
    if sent:
        customer.default_payment_method = default
    store.emit("customer.updated", customer.to_stripe())
    return customer.to_stripe()


def _invoice_default(params: Params) -> tuple[bool, str | None]:
    """Whether ``invoice_settings[default_payment_method]`` was sent, and its value (an
    empty value unsets it)."""
    raw = params.get("invoice_settings")
    if raw is None:
        return False, None
    if not isinstance(raw, dict):
        raise invalid_request("Invalid object", param="invoice_settings")
    for key in raw:
        if key != "default_payment_method":
            raise invalid_request(
                f"Received unknown parameter: invoice_settings[{key}]",
                param=f"invoice_settings[{key}]",
            )
    if "default_payment_method" not in raw:
        return False, None
    value = raw["default_payment_method"]
    if not isinstance(value, str):
        raise invalid_request(f"Invalid string: {_DEFAULT_PARAM}", param=_DEFAULT_PARAM)
    return True, value or None


def _not_attached(pm_id: str) -> StripeError:
    return invalid_request(
        f"The customer does not have a payment method with the ID {pm_id}. The payment method "
        "must be attached to the customer.",
        param=_DEFAULT_PARAM,
    )
