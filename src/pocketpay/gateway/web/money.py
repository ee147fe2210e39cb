"""The web app's pages that move money: top up by test card, send money, and a payment's
refund, capture and cancel; with the payments list and a payment's page.

Every such form carries a hidden ``idempotency_key`` made when the form was rendered. It is
this form's Idempotency-Key, through the same store the JSON API uses, so sending the form
twice (a double click, a reload after a timeout) acts once and shows the first answer. A
form shown again after an error gets a new key: the person may change the values."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel

from pocketpay.gateway.idempotency import check_key, fingerprint
from pocketpay.gateway.routes import ID_PATTERN, Gateway
from pocketpay.gateway.schemas import TransferCreate
from pocketpay.gateway.web.forms import (
    CURRENCIES,
    TEST_CARDS,
    FormError,
    amount_minor,
    currency_of,
)
from pocketpay.gateway.web.pages import Pages
from pocketpay.gateway.web.session import CSRF_FIELD
from pocketpay.kit.errors import AppError, NotFound
from pocketpay.kit.listing import Page
from pocketpay.kit.tokens import Principal
from pocketpay.payments.schemas import (
    DisputeEvidence,
    Payment,
    PaymentCreate,
    PaymentListQuery,
    RefundCreate,
)

KEY_FIELD = "idempotency_key"
PAGE_SIZE = 20
_ID = re.compile(ID_PATTERN)

Form = dict[str, str]
FormOf = Callable[[Request], Awaitable[Form]]
Guarded = Callable[
    [Callable[[], Awaitable[Response]], Callable[[FormError], Awaitable[Response]]],
    Awaitable[Response],
]

# An action on a payment: (who, the payment, the form's key, the amount typed or None).
PaymentOp = Callable[[Principal, Payment, str, int | None], Awaitable[BaseModel]]
Act = Callable[[Request, Form, str, str, PaymentOp], Awaitable[Response]]


def new_key() -> str:
    return uuid.uuid4().hex


def _payment_id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise NotFound("There is no such payment among yours.")
    return value


def _dispute_id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise NotFound("There is no such dispute among yours.")
    return value


# A dispute takes evidence while the bank waits for it (then it is under review, or decided).
OPEN_FOR_EVIDENCE = ("needs_response", "warning_needs_response")


def can_capture(p: Payment) -> bool:
    return p.status == "authorized" and p.capture_method == "manual"


def can_refund(p: Payment) -> bool:
    return (
        p.status in ("captured", "settled")
        and p.purpose == "top_up"
        and p.amount_refunded_minor < p.amount_captured_minor
    )


async def once(
    gw: Gateway,
    request: Request,
    who: Principal,
    form: Form,
    body: dict[str, Any],
    op: Callable[[str], Awaitable[BaseModel]],
) -> dict[str, Any]:
    """``op`` once per form: the form's key through the gateway's idempotency store (a
    replayed error comes back as the error it was)."""
    key = check_key(form.get(KEY_FIELD))

    async def run() -> tuple[int, dict[str, Any]]:
        return 200, (await op(key)).model_dump(mode="json")

    fp = fingerprint("POST", request.url.path, body)
    status, result, _replayed = await gw.idem.run(who.user_id, key, fp, run)
    if status >= 400:
        raise AppError.from_dict(result)
    return result


def money_routes(
    r: APIRouter, gw: Gateway, pages: Pages, form_of: FormOf, guarded: Guarded
) -> None:
    _payment_pages(r, gw, pages)
    _top_up(r, gw, pages, form_of, guarded)
    _send(r, gw, pages, form_of, guarded)
    _payment_actions(r, gw, pages, form_of, guarded)


def _payment_pages(r: APIRouter, gw: Gateway, pages: Pages) -> None:
    sessions = pages.sessions

    async def listed(who: Principal, after: str | None) -> Any:
        if after is not None:
            after = _payment_id(after)
        query = PaymentListQuery(limit=PAGE_SIZE, starting_after=after)
        return await gw.payments.list(who.user_id, query)

    @r.get("/app/payments")
    async def payments(request: Request, after: str | None = Query(None)) -> Response:
        who = await sessions.require(request)
        return pages.render(
            request, "payments.html", who, payments=await listed(who, after), after=after
        )

    @r.get("/app/live/payments")
    async def payments_live(request: Request) -> Response:
        who = await sessions.require(request)
        return pages.fragment("_payments.html", payments=await listed(who, None))

    @r.get("/app/payments/{payment_id}")
    async def payment(request: Request, payment_id: str) -> Response:
        who = await sessions.require(request)
        return await payment_page(gw, pages, request, who, _payment_id(payment_id), {})

    @r.get("/app/live/payments/{payment_id}")
    async def payment_live(request: Request, payment_id: str) -> Response:
        who = await sessions.require(request)
        context = await payment_context(gw, who, _payment_id(payment_id), {})
        context["csrf"] = sessions.csrf_token(request, who.user_id)
        return pages.fragment("_payment.html", **context)


async def payment_context(
    gw: Gateway, who: Principal, payment_id: str, errors: dict[str, dict[str, str]]
) -> dict[str, Any]:
    p = await gw.payments.get(who.user_id, payment_id)
    timeline = await gw.payments.events(who.user_id, payment_id)
    disputes = await gw.payments.list_disputes(who.user_id, payment_id, Page(limit=10))
    return {
        "p": p,
        "timeline": timeline.data,
        "disputes": disputes.data,
        "open_for_evidence": OPEN_FOR_EVIDENCE,
        "can_capture": can_capture(p),
        "can_refund": can_refund(p),
        "key": new_key(),
        "errors": errors,
    }


async def payment_page(
    gw: Gateway,
    pages: Pages,
    request: Request,
    who: Principal,
    payment_id: str,
    errors: dict[str, dict[str, str]],
    status: int = 200,
) -> Response:
    context = await payment_context(gw, who, payment_id, errors)
    return pages.render(request, "payment.html", who, status, **context)


def _top_up(r: APIRouter, gw: Gateway, pages: Pages, form_of: FormOf, guarded: Guarded) -> None:
    sessions = pages.sessions

    def page(
        request: Request, who: Principal, values: Form, errors: Form, status: int = 200
    ) -> Response:
        return pages.render(
            request,
            "top_up.html",
            who,
            status,
            values=values,
            errors=errors,
            key=new_key(),
            cards=TEST_CARDS,
            currencies=CURRENCIES,
        )

    @r.get("/app/top-up")
    async def top_up_page(request: Request) -> Response:
        who = await sessions.require(request)
        return page(request, who, {"currency": "USD", "card": "pm_card_visa"}, {})

    @r.post("/app/top-up")
    async def top_up(request: Request, form: Form = Depends(form_of)) -> Response:
        who = await sessions.require(request)
        sessions.check_post(request, form.get(CSRF_FIELD, ""), who.user_id)
        values = {k: form.get(k, "") for k in ("amount", "currency", "card", "hold")}

        async def work() -> Response:
            currency = currency_of(values["currency"])
            body = PaymentCreate.model_validate(
                {
                    "amount_minor": amount_minor(values["amount"], currency),
                    "currency": currency,
                    "payment_method": values["card"],
                    "capture_method": "manual" if values["hold"] else "automatic",
                    "description": "Top-up",
                }
            ).model_dump()
            gw.payments.admit()
            made = await once(
                gw, request, who, form, body, lambda k: gw.payments.create(who.user_id, k, body)
            )
            return RedirectResponse(f"/app/payments/{made['id']}", 303)

        async def again(exc: FormError) -> Response:
            return page(request, who, values, exc.errors, exc.status)

        return await guarded(work, again)


def _send(r: APIRouter, gw: Gateway, pages: Pages, form_of: FormOf, guarded: Guarded) -> None:
    sessions = pages.sessions

    def page(
        request: Request, who: Principal, values: Form, errors: Form, status: int = 200
    ) -> Response:
        return pages.render(
            request,
            "send.html",
            who,
            status,
            values=values,
            errors=errors,
            key=new_key(),
            currencies=CURRENCIES,
        )

    @r.get("/app/send")
    async def send_page(request: Request) -> Response:
        who = await sessions.require(request)
        return page(request, who, {"currency": "USD"}, {})

    @r.post("/app/send")
    async def send(request: Request, form: Form = Depends(form_of)) -> Response:
        who = await sessions.require(request)
        sessions.check_post(request, form.get(CSRF_FIELD, ""), who.user_id)
        values = {k: form.get(k, "") for k in ("recipient", "amount", "currency", "note")}

        async def work() -> Response:
            currency = currency_of(values["currency"])
            body = TransferCreate.model_validate(
                {
                    "recipient": values["recipient"].strip(),
                    "amount_minor": amount_minor(values["amount"], currency),
                    "currency": currency,
                    "note": values["note"],
                }
            )
            data = body.model_dump(mode="json")
            made = await once(gw, request, who, form, data, lambda k: gw.send_money(who, k, body))
            return RedirectResponse(f"/app?sent={made['id']}", 303)

        async def again(exc: FormError) -> Response:
            return page(request, who, values, exc.errors, exc.status)

        return await guarded(work, again)


def _payment_actions(
    r: APIRouter, gw: Gateway, pages: Pages, form_of: FormOf, guarded: Guarded
) -> None:
    """Refund, capture, cancel: each a form on the payment's page, shown there again with
    its error when it fails."""
    sessions = pages.sessions

    async def act(
        request: Request,
        form: Form,
        payment_id: str,
        action: str,
        op: PaymentOp,
    ) -> Response:
        who = await sessions.require(request)
        sessions.check_post(request, form.get(CSRF_FIELD, ""), who.user_id)
        pid = _payment_id(payment_id)
        payment = await gw.payments.get(who.user_id, pid)

        async def work() -> Response:
            amount = amount_minor(form.get("amount", ""), payment.currency, required=False)
            body = {"amount_minor": amount}
            await once(gw, request, who, form, body, lambda k: op(who, payment, k, amount))
            return RedirectResponse(f"/app/payments/{pid}", 303)

        async def again(exc: FormError) -> Response:
            errors = {action: exc.errors}
            return await payment_page(gw, pages, request, who, pid, errors, exc.status)

        return await guarded(work, again)

    async def refund(who: Principal, p: Payment, key: str, amount: int | None) -> BaseModel:
        data = RefundCreate(amount_minor=amount, reason="requested_by_customer").model_dump()
        return await gw.payments.refund(who.user_id, p.id, key, data)

    async def capture(who: Principal, p: Payment, _key: str, amount: int | None) -> BaseModel:
        return await gw.payments.capture(who.user_id, p.id, amount)

    async def cancel(who: Principal, p: Payment, _key: str, _amount: int | None) -> BaseModel:
        return await gw.payments.cancel(who.user_id, p.id)

    for action, op in (("refund", refund), ("capture", capture), ("cancel", cancel)):
        _action_route(r, form_of, action, op, act)

    @r.post("/app/disputes/{dispute_id}/evidence", name="web_dispute_evidence")
    async def dispute_evidence(
        request: Request, dispute_id: str, form: Form = Depends(form_of)
    ) -> Response:
        """The evidence form of a dispute on its payment's page."""
        who = await sessions.require(request)
        sessions.check_post(request, form.get(CSRF_FIELD, ""), who.user_id)
        did = _dispute_id(dispute_id)
        dispute = await gw.payments.get_dispute(who.user_id, did)
        text = form.get("text", "").strip()

        async def work() -> Response:
            if not text:
                raise FormError({"text": "Write what happened and what proves it."})
            body = DisputeEvidence(text=text).model_dump()
            await once(
                gw,
                request,
                who,
                form,
                body,
                lambda k: gw.payments.submit_dispute_evidence(who.user_id, did, k, body),
            )
            return RedirectResponse(f"/app/payments/{dispute.payment_id}", 303)

        async def again(exc: FormError) -> Response:
            errors = {f"dispute-{did}": exc.errors}
            return await payment_page(
                gw, pages, request, who, dispute.payment_id, errors, exc.status
            )

        return await guarded(work, again)


def _action_route(r: APIRouter, form_of: FormOf, action: str, op: PaymentOp, act: Act) -> None:
    async def handler(request: Request, payment_id: str, form: Form = Depends(form_of)) -> Response:
        return await act(request, form, payment_id, action, op)

    r.add_api_route(
        f"/app/payments/{{payment_id}}/{action}", handler, methods=["POST"], name=f"web_{action}"
    )
