"""The Stripe ``/v1`` API subset, form-encoded in, Stripe JSON out."""

from __future__ import annotations

import copy
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from pocketpay.sandbox import (
    customers,
    disputes,
    intents,
    lists,
    payment_methods,
    payouts,
    refunds,
)
from pocketpay.sandbox.auth import require_key
from pocketpay.sandbox.errors import resource_missing, unrecognized_url
from pocketpay.sandbox.forms import Params, check_known, fingerprint, get_expand, parse_form
from pocketpay.sandbox.sandbox import Outcome, Sandbox
from pocketpay.sandbox.state import Kind, Store
from pocketpay.sandbox.webhooks import API_VERSION

Handler = Callable[[Store, Params], dict[str, Any]]
_RETRIEVE_PARAMS = frozenset({"expand", "client_secret"})


async def read_params(request: Request) -> Params:
    params = parse_form(request.url.query)
    if request.method == "POST":
        params.update(parse_form((await request.body()).decode("utf-8", "replace")))
    return params


def respond(outcome: Outcome, request: Request) -> JSONResponse:
    headers = {"Request-Id": f"req_{secrets.token_hex(7)}", "Stripe-Version": API_VERSION}
    key = request.headers.get("idempotency-key")
    if key:
        headers["Idempotency-Key"] = key
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(outcome.body, status_code=outcome.status, headers=headers)


def v1_router(sandbox: Sandbox) -> APIRouter:
    def authenticate(request: Request) -> str:
        return require_key(sandbox.settings.api_key, request)

    router = APIRouter(prefix="/v1", dependencies=[Depends(authenticate)])

    async def run(request: Request, handler: Handler) -> JSONResponse:
        params = await read_params(request)
        expand = get_expand(params)

        def op(store: Store) -> dict[str, Any]:
            return store.expand(handler(store, params), expand)

        is_post = request.method == "POST"
        outcome = await sandbox.execute(
            op,
            api_key=authenticate(request),
            idempotency_key=request.headers.get("idempotency-key") if is_post else None,
            fingerprint=fingerprint(request.method, request.url.path, params),
        )
        return respond(outcome, request)

    _payment_intent_routes(router, run)
    _customer_routes(router, run)
    _other_routes(router, run, sandbox)
    return router


Run = Callable[[Request, Handler], Awaitable[JSONResponse]]


def _retrieve(kind: Kind, obj_id: str) -> Handler:
    def handler(store: Store, params: Params) -> dict[str, Any]:
        check_known(params, _RETRIEVE_PARAMS)
        return store.retrieve(kind, obj_id)

    return handler


def _payment_intent_routes(router: APIRouter, run: Run) -> None:
    @router.post("/payment_intents")
    async def create_pi(request: Request) -> JSONResponse:
        return await run(request, intents.create)

    @router.get("/payment_intents")
    async def list_pis(request: Request) -> JSONResponse:
        return await run(request, lists.list_payment_intents)

    @router.get("/payment_intents/{pi_id}")
    async def get_pi(request: Request, pi_id: str) -> JSONResponse:
        return await run(request, _retrieve("pi", pi_id))

    @router.post("/payment_intents/{pi_id}/{action}")
    async def act_on_pi(request: Request, pi_id: str, action: str) -> JSONResponse:
        actions = {"confirm": intents.confirm, "capture": intents.capture, "cancel": intents.cancel}
        if action not in actions:
            raise unrecognized_url(request.method, request.url.path)
        fn = actions[action]
        return await run(request, lambda s, p: fn(s, pi_id, p))


def _customer_routes(router: APIRouter, run: Run) -> None:
    @router.post("/customers")
    async def create_customer(request: Request) -> JSONResponse:
        return await run(request, customers.create)

    @router.get("/customers/{cus_id}")
    async def get_customer(request: Request, cus_id: str) -> JSONResponse:
        return await run(request, lambda s, p: customers.retrieve(s, cus_id, p))

    @router.post("/customers/{cus_id}")
    async def update_customer(request: Request, cus_id: str) -> JSONResponse:
        return await run(request, lambda s, p: customers.update(s, cus_id, p))

    @router.get("/customers/{cus_id}/payment_methods")
    async def list_customer_pms(request: Request, cus_id: str) -> JSONResponse:
        return await run(request, lambda s, p: lists.list_customer_payment_methods(s, cus_id, p))

    @router.get("/payment_methods/{pm_id}")
    async def get_pm(request: Request, pm_id: str) -> JSONResponse:
        return await run(request, _retrieve("pm", pm_id))

    @router.post("/payment_methods/{pm_id}/{action}")
    async def act_on_pm(request: Request, pm_id: str, action: str) -> JSONResponse:
        actions = {"attach": payment_methods.attach, "detach": payment_methods.detach}
        if action not in actions:
            raise unrecognized_url(request.method, request.url.path)
        fn = actions[action]
        return await run(request, lambda s, p: fn(s, pm_id, p))


def _other_routes(router: APIRouter, run: Run, sandbox: Sandbox) -> None:
    @router.get("/charges/{ch_id}")
    async def get_charge(request: Request, ch_id: str) -> JSONResponse:
        return await run(request, _retrieve("ch", ch_id))

    @router.post("/refunds")
    async def create_refund(request: Request) -> JSONResponse:
        return await run(request, refunds.create)

    @router.get("/refunds")
    async def list_refunds(request: Request) -> JSONResponse:
        return await run(request, lists.list_refunds)

    @router.get("/refunds/{re_id}")
    async def get_refund(request: Request, re_id: str) -> JSONResponse:
        return await run(request, _retrieve("re", re_id))

    @router.get("/disputes")
    async def list_disputes(request: Request) -> JSONResponse:
        return await run(request, lists.list_disputes)

    @router.get("/disputes/{dp_id}")
    async def get_dispute(request: Request, dp_id: str) -> JSONResponse:
        return await run(request, _retrieve("dp", dp_id))

    @router.post("/disputes/{dp_id}")
    async def update_dispute(request: Request, dp_id: str) -> JSONResponse:
        return await run(request, lambda s, p: disputes.update(s, dp_id, p))

    @router.post("/disputes/{dp_id}/close")
    async def close_dispute(request: Request, dp_id: str) -> JSONResponse:
        return await run(request, lambda s, p: disputes.close(s, dp_id, p))

    @router.post("/tokens")
    async def create_token(request: Request) -> JSONResponse:
        return await run(request, payouts.create_token)

    @router.post("/payouts")
    async def create_payout(request: Request) -> JSONResponse:
        cfg = sandbox.settings
        return await run(
            request,
            lambda s, p: payouts.create(
                s, p, cfg.payout_transit_seconds, cfg.payout_arrival_seconds
            ),
        )

    @router.get("/payouts")
    async def list_payouts(request: Request) -> JSONResponse:
        return await run(request, lists.list_payouts)

    @router.get("/payouts/{po_id}")
    async def get_payout(request: Request, po_id: str) -> JSONResponse:
        return await run(request, _retrieve("po", po_id))

    @router.post("/payouts/{po_id}/cancel")
    async def cancel_payout(request: Request, po_id: str) -> JSONResponse:
        return await run(request, lambda s, p: payouts.cancel(s, po_id, p))

    @router.get("/balance_transactions/{txn_id}")
    async def get_txn(request: Request, txn_id: str) -> JSONResponse:
        return await run(request, _retrieve("txn", txn_id))

    @router.get("/balance")
    async def get_balance(request: Request) -> JSONResponse:
        return await run(request, lambda s, _p: s.balance())

    @router.get("/events/{evt_id}")
    async def get_event(request: Request, evt_id: str) -> JSONResponse:
        def handler(_store: Store, _params: Params) -> dict[str, Any]:
            for event in sandbox.events:
                if event["id"] == evt_id:
                    return copy.deepcopy(event)
            raise resource_missing("event", evt_id)

        return await run(request, handler)
