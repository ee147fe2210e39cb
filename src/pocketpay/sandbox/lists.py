"""Stripe's list endpoints: ``GET /v1/payment_intents``, ``GET /v1/refunds``,
``GET /v1/disputes``, ``GET /v1/payouts`` and ``GET /v1/customers/{id}/payment_methods``.

Newest first, ``limit`` (1..100, default 10), cursor ``starting_after`` (the id of the last
object of the previous page), ``created[gte|gt|lte|lt]`` (unix seconds, or ``created=<t>``),
``customer`` for intents and ``payment_intent`` for refunds and disputes. The answer is
Stripe's list object, which the SDK's ``auto_paging_iter`` walks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from pocketpay.sandbox.errors import invalid_request, resource_missing
from pocketpay.sandbox.forms import Params, check_known, get_int, get_str
from pocketpay.sandbox.models import Dispute, PaymentIntent, PaymentMethod, Payout, Refund
from pocketpay.sandbox.state import Store

_PAGING = frozenset({"limit", "starting_after", "ending_before", "created", "expand"})
INTENT_PARAMS = _PAGING | {"customer"}
REFUND_PARAMS = _PAGING | {"payment_intent", "charge"}
PAYMENT_METHOD_PARAMS = _PAGING | {"type"}
DISPUTE_PARAMS = _PAGING | {"payment_intent", "charge"}
PAYOUT_PARAMS = _PAGING | {"status", "destination"}
_CREATED_OPS = ("gt", "gte", "lt", "lte")

Listed = TypeVar("Listed", PaymentIntent, Refund, PaymentMethod, Dispute, Payout)


def list_payment_intents(store: Store, params: Params) -> dict[str, Any]:
    check_known(params, INTENT_PARAMS)
    customer = get_str(params, "customer")
    found = [
        pi
        for pi in _filtered(store.payment_intents.values(), params)
        if customer is None or pi.customer == customer
    ]
    return _page(found, params, "/v1/payment_intents")


def list_customer_payment_methods(store: Store, cus_id: str, params: Params) -> dict[str, Any]:
    check_known(params, PAYMENT_METHOD_PARAMS)
    if cus_id not in store.customers:
        raise resource_missing("customer", cus_id)
    kind = get_str(params, "type")
    found = [
        pm
        for pm in _filtered(store.payment_methods.values(), params)
        if pm.customer == cus_id and kind in (None, "card")
    ]
    return _page(found, params, f"/v1/customers/{cus_id}/payment_methods")


def list_refunds(store: Store, params: Params) -> dict[str, Any]:
    check_known(params, REFUND_PARAMS)
    pi_id = get_str(params, "payment_intent")
    ch_id = get_str(params, "charge")
    found = [
        r
        for r in _filtered(store.refunds.values(), params)
        if (pi_id is None or r.payment_intent == pi_id) and (ch_id is None or r.charge == ch_id)
    ]
    return _page(found, params, "/v1/refunds")


def list_disputes(store: Store, params: Params) -> dict[str, Any]:
    check_known(params, DISPUTE_PARAMS)
    pi_id = get_str(params, "payment_intent")
    ch_id = get_str(params, "charge")
    found = [
        d
        for d in _filtered(store.disputes.values(), params)
        if (pi_id is None or d.payment_intent == pi_id) and (ch_id is None or d.charge == ch_id)
    ]
    return _page(found, params, "/v1/disputes")


def list_payouts(store: Store, params: Params) -> dict[str, Any]:
    check_known(params, PAYOUT_PARAMS)
    status = get_str(params, "status")
    destination = get_str(params, "destination")
    found = [
        p
        for p in _filtered(store.payouts.values(), params)
        if status in (None, p.status) and destination in (None, p.destination)
    ]
    return _page(found, params, "/v1/payouts")


def _filtered(objs: Iterable[Listed], params: Params) -> list[Listed]:
    bounds = _created_bounds(params)
    out = [o for o in objs if all(_holds(o.created, op, value) for op, value in bounds)]
    out.reverse()  # the store keeps insertion order: newest first, as Stripe lists
    return out


def _created_bounds(params: Params) -> list[tuple[str, int]]:
    raw = params.get("created")
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        value = get_int(params, "created")
        assert value is not None
        return [("eq", value)]
    if not isinstance(raw, dict) or not set(raw) <= set(_CREATED_OPS):
        raise invalid_request("Invalid created: use created[gte] and friends", param="created")
    return [(op, _int(str(v), f"created[{op}]")) for op, v in raw.items()]


def _int(raw: str, name: str) -> int:
    if not raw.lstrip("-").isdigit():
        raise invalid_request(f"Invalid integer: {raw}", param=name)
    return int(raw)


def _holds(created: int, op: str, value: int) -> bool:
    return {
        "eq": created == value,
        "gt": created > value,
        "gte": created >= value,
        "lt": created < value,
        "lte": created <= value,
    }[op]


def _page(objs: list[Listed], params: Params, url: str) -> dict[str, Any]:
    limit = get_int(params, "limit")
    limit = 10 if limit is None else limit
    if not 1 <= limit <= 100:
        raise invalid_request("Invalid limit: must be between 1 and 100", param="limit")
    after = get_str(params, "starting_after")
    before = get_str(params, "ending_before")
    ids = [o.id for o in objs]
    if after is not None:
        objs = objs[_position(ids, after, "starting_after") + 1 :]
        page, has_more = objs[:limit], len(objs) > limit
    elif before is not None:
        objs = objs[: _position(ids, before, "ending_before")]
        page, has_more = objs[-limit:], len(objs) > limit
    else:
        page, has_more = objs[:limit], len(objs) > limit
    return {
        "object": "list",
        "data": [o.to_stripe() for o in page],
        "has_more": has_more,
        "url": url,
    }


def _position(ids: list[str], cursor: str, param: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise invalid_request(
            f"No such object: '{cursor}'", param=param, code="resource_missing"
        ) from None
