"""The public API, v1. Thin: authenticate, validate, apply idempotency, call the owning
component through its typed client, shape the answer."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import stripe
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from pocketpay.gateway.auth import AuthService
from pocketpay.gateway.idempotency import IdempotencyStore, check_key, fingerprint
from pocketpay.gateway.schemas import (
    LoginIn,
    RefreshIn,
    SignupIn,
    TransferCreate,
    WalletBalance,
    WalletBalances,
    WebhookReceived,
)
from pocketpay.kit.errors import AppError, NotFound, Unauthorized
from pocketpay.kit.metrics import WEBHOOKS
from pocketpay.kit.money import MoneyError, normalize_currency
from pocketpay.kit.tokens import Principal
from pocketpay.ledger.client import LedgerClient
from pocketpay.ledger.schemas import EntryList, Transfer, TransferList
from pocketpay.payments.client import PaymentsClient
from pocketpay.payments.schemas import (
    CancelIn,
    CaptureIn,
    Payment,
    PaymentCreate,
    PaymentList,
    Refund,
    RefundCreate,
    Timeline,
)

# once(request, principal, idempotency_key, body_for_fingerprint, operation, status)
Once = Callable[..., Awaitable[JSONResponse]]

_bearer = HTTPBearer(auto_error=False, description="The access token from /auth/login")

# Our ids are ``<prefix>_<ULID>``. A path id or cursor is checked against this before it is
# put into an internal URL: a ``#``, ``?`` or NUL in it would otherwise cut or change the
# internal request (500s, and on PostgreSQL a NUL is a database error).
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID = re.compile(ID_PATTERN)


def _object_id(value: str, kind: str) -> str:
    """A path id that cannot be one of ours names nothing: 404, like an unknown id."""
    if not _ID.fullmatch(value):
        raise NotFound(f"No {kind} {value[:64]!r}.")
    return value


class Gateway:
    def __init__(
        self,
        auth: AuthService,
        idem: IdempotencyStore,
        payments: PaymentsClient,
        ledger: LedgerClient,
        webhook_secret: str,
        webhook_tolerance: int,
    ) -> None:
        self.auth = auth
        self.idem = idem
        self.payments = payments
        self.ledger = ledger
        self.webhook_secret = webhook_secret
        self.webhook_tolerance = webhook_tolerance


def build_router(gw: Gateway) -> APIRouter:
    r = APIRouter(prefix="/api/v1")

    async def principal(
        request: Request,
        creds: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> Principal:
        if creds is None or creds.scheme.lower() != "bearer":
            raise Unauthorized(
                "Send 'Authorization: Bearer <access_token>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await gw.auth.authenticate(creds.credentials, request)

    async def once(
        request: Request,
        who: Principal,
        key: str | None,
        body: Any,
        op: Callable[[str], Awaitable[BaseModel]],
        status: int,
    ) -> JSONResponse:
        checked = check_key(key)
        fp = fingerprint(request.method, request.url.path, body)

        async def run() -> tuple[int, dict[str, Any]]:
            # The key goes down to the owning component, which records it with its effect.
            # The answer is stored (and replayed) as the JSON it is sent as.
            return status, (await op(checked)).model_dump(mode="json")

        code, result, replayed = await gw.idem.run(who.user_id, checked, fp, run)
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        media = "application/json"
        if code >= 400:  # a replayed error: the stored problem, with this request's id
            media = "application/problem+json"
            result = result | {"request_id": getattr(request.state, "request_id", None)}
        return JSONResponse(result, status_code=code, headers=headers, media_type=media)

    _auth_routes(r, gw, principal)
    _payment_routes(r, gw, principal, once)
    _wallet_routes(r, gw, principal, once)
    _webhook_routes(r, gw)
    return r


def _auth_routes(r: APIRouter, gw: Gateway, principal: Any) -> None:
    @r.post("/auth/signup", status_code=201, tags=["auth"])
    async def signup(body: SignupIn) -> dict[str, Any]:
        return await gw.auth.signup(str(body.email), body.password, body.name)

    @r.post("/auth/login", tags=["auth"])
    async def login(body: LoginIn) -> dict[str, Any]:
        return await gw.auth.login(str(body.email), body.password)

    @r.post("/auth/refresh", tags=["auth"])
    async def refresh(body: RefreshIn) -> dict[str, Any]:
        return await gw.auth.refresh(body.refresh_token)

    @r.get("/me", tags=["auth"])
    async def me(who: Principal = Depends(principal)) -> dict[str, Any]:
        return await gw.auth.get_user(who.user_id)


IdemHeader = Header(
    default=None, alias="Idempotency-Key", description="Required on every POST that moves money."
)


def _payment_routes(r: APIRouter, gw: Gateway, principal: Any, once: Once) -> None:
    p = gw.payments

    @r.post("/payments", status_code=202, response_model=Payment, tags=["payments"])
    async def create_payment(
        request: Request,
        body: PaymentCreate,
        who: Principal = Depends(principal),
        key: str | None = IdemHeader,
    ) -> JSONResponse:
        data = body.model_dump()
        return await once(request, who, key, data, lambda k: p.create(who.user_id, k, data), 202)

    @r.get("/payments", response_model=PaymentList, tags=["payments"])
    async def list_payments(
        who: Principal = Depends(principal),
        status: str | None = Query(
            None, pattern="^(created|authorized|captured|settled|refunded|failed|canceled)$"
        ),
        limit: int = Query(20, ge=1, le=100),
        starting_after: str | None = Query(None, pattern=ID_PATTERN),
    ) -> PaymentList:
        return await p.list(who.user_id, status, limit, starting_after)

    @r.get("/payments/{payment_id}", response_model=Payment, tags=["payments"])
    async def get_payment(payment_id: str, who: Principal = Depends(principal)) -> Payment:
        return await p.get(who.user_id, _object_id(payment_id, "payment"))

    @r.get("/payments/{payment_id}/events", response_model=Timeline, tags=["payments"])
    async def payment_events(payment_id: str, who: Principal = Depends(principal)) -> Timeline:
        return await p.events(who.user_id, _object_id(payment_id, "payment"))

    @r.post("/payments/{payment_id}/capture", response_model=Payment, tags=["payments"])
    async def capture(
        request: Request,
        payment_id: str,
        body: CaptureIn | None = None,
        who: Principal = Depends(principal),
        key: str | None = IdemHeader,
    ) -> JSONResponse:
        payment_id = _object_id(payment_id, "payment")
        amount = body.amount_minor if body else None
        return await once(
            request,
            who,
            key,
            {"amount_minor": amount},
            lambda _k: p.capture(who.user_id, payment_id, amount),
            200,
        )

    @r.post("/payments/{payment_id}/cancel", response_model=Payment, tags=["payments"])
    async def cancel(
        request: Request,
        payment_id: str,
        body: CancelIn | None = None,
        who: Principal = Depends(principal),
        key: str | None = IdemHeader,
    ) -> JSONResponse:
        payment_id = _object_id(payment_id, "payment")
        return await once(
            request,
            who,
            key,
            {},
            lambda _k: p.cancel(who.user_id, payment_id),
            200,
        )

    @r.post(
        "/payments/{payment_id}/refunds",
        status_code=202,
        response_model=Refund,
        tags=["payments"],
    )
    async def refund(
        request: Request,
        payment_id: str,
        body: RefundCreate | None = None,
        who: Principal = Depends(principal),
        key: str | None = IdemHeader,
    ) -> JSONResponse:
        payment_id = _object_id(payment_id, "payment")
        data = (body or RefundCreate()).model_dump()
        return await once(
            request,
            who,
            key,
            data,
            lambda k: p.refund(who.user_id, payment_id, k, data),
            202,
        )

    @r.get("/refunds/{refund_id}", response_model=Refund, tags=["payments"])
    async def get_refund(refund_id: str, who: Principal = Depends(principal)) -> Refund:
        return await p.get_refund(who.user_id, _object_id(refund_id, "refund"))


def _currency(code: str) -> str:
    try:
        return normalize_currency(code)
    except MoneyError as exc:
        raise AppError(str(exc), code="validation.unknown_currency", status=422) from exc


def _wallet_routes(r: APIRouter, gw: Gateway, principal: Any, once: Once) -> None:
    @r.get("/wallets", response_model=WalletBalances, tags=["wallets"])
    async def wallets(who: Principal = Depends(principal)) -> WalletBalances:
        body = await gw.ledger.wallets(who.user_id)
        return WalletBalances(
            data=[
                WalletBalance(
                    currency=w.currency,
                    available_minor=w.available_minor,
                    pending_minor=w.pending_minor,
                    posted_minor=w.posted_minor,
                )
                for w in body.data
            ]
        )

    @r.get("/wallets/{currency}/entries", response_model=EntryList, tags=["wallets"])
    async def entries(
        currency: str,
        who: Principal = Depends(principal),
        limit: int = Query(20, ge=1, le=100),
        starting_after: str | None = Query(None, pattern="^[0-9]{1,18}$"),
    ) -> EntryList:
        return await gw.ledger.entries(who.user_id, _currency(currency), limit, starting_after)

    @r.post("/transfers", status_code=201, response_model=Transfer, tags=["transfers"])
    async def send(
        request: Request,
        body: TransferCreate,
        who: Principal = Depends(principal),
        key: str | None = IdemHeader,
    ) -> JSONResponse:
        data = body.model_dump(mode="json")

        async def op(idem_key: str) -> Transfer:
            recipient = await gw.auth.find_by_email(str(body.recipient))
            if recipient is None:
                raise NotFound(
                    "No PocketPay user has this email.", code="transfers.recipient_not_found"
                )
            return await gw.ledger.send(
                {
                    "idempotency_key": idem_key,
                    "sender_id": who.user_id,
                    "recipient_id": recipient["id"],
                    "sender_email": who.email,
                    "recipient_email": recipient["email"],
                    "amount_minor": body.amount_minor,
                    "currency": body.currency,
                    "note": body.note,
                }
            )

        return await once(request, who, key, data, op, 201)

    @r.get("/transfers", response_model=TransferList, tags=["transfers"])
    async def list_transfers(
        who: Principal = Depends(principal),
        limit: int = Query(20, ge=1, le=100),
        starting_after: str | None = Query(None, pattern=ID_PATTERN),
    ) -> TransferList:
        return await gw.ledger.list_transfers(who.user_id, limit, starting_after)

    @r.get("/transfers/{transfer_id}", response_model=Transfer, tags=["transfers"])
    async def get_transfer(transfer_id: str, who: Principal = Depends(principal)) -> Transfer:
        return await gw.ledger.get_transfer(who.user_id, _object_id(transfer_id, "transfer"))


def _webhook_routes(r: APIRouter, gw: Gateway) -> None:
    @r.post("/webhooks/stripe", response_model=WebhookReceived, tags=["webhooks"])
    async def stripe_webhook(
        request: Request,
        stripe_signature: str | None = Header(None, alias="Stripe-Signature"),
    ) -> WebhookReceived:
        payload = await request.body()
        if not stripe_signature:
            WEBHOOKS.labels("bad_signature").inc()
            raise AppError(
                "Missing Stripe-Signature header.", code="webhooks.invalid_signature", status=400
            )
        try:
            event = stripe.Webhook.construct_event(
                payload, stripe_signature, gw.webhook_secret, tolerance=gw.webhook_tolerance
            )
        except stripe.SignatureVerificationError as exc:
            WEBHOOKS.labels("bad_signature").inc()
            raise AppError(
                "The Stripe-Signature does not match this payload, or it is too old.",
                code="webhooks.invalid_signature",
                status=400,
            ) from exc
        except (ValueError, AttributeError, TypeError) as exc:
            # Signed but not a JSON object: the SDK fails on it with one of these.
            WEBHOOKS.labels("malformed").inc()
            raise AppError(
                "The webhook body is not a valid event.", code="webhooks.malformed", status=400
            ) from exc
        data = event.to_dict()
        body = data.get("data")
        if not (
            isinstance(data.get("id"), str)
            and _ID.fullmatch(data["id"])
            and isinstance(data.get("type"), str)
            and isinstance(body, dict)
            and isinstance(body.get("object"), dict)
        ):
            WEBHOOKS.labels("malformed").inc()
            raise AppError(
                "The webhook body is not an event (id, type, data.object).",
                code="webhooks.malformed",
                status=400,
            )
        result = await gw.payments.psp_event(data)
        WEBHOOKS.labels(result.status).inc()
        return WebhookReceived(received=True, status=result.status)
