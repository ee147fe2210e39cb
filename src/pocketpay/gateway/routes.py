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

from pocketpay.billing.client import BillingClient
from pocketpay.gateway.accounts_routes import accounts_routes
from pocketpay.gateway.auth import AuthService
from pocketpay.gateway.billing_routes import billing_routes
from pocketpay.gateway.conventions import PublicRoute, operation_id, refuse_other_methods
from pocketpay.gateway.disputes_routes import disputes_routes
from pocketpay.gateway.fx_routes import fx_routes
from pocketpay.gateway.idempotency import IdempotencyStore, check_key, fingerprint
from pocketpay.gateway.notifications_routes import notifications_routes
from pocketpay.gateway.payouts_routes import payouts_routes
from pocketpay.gateway.problems import (
    AUTH,
    BEARER,
    BEARER_DESCRIPTION,
    BODY,
    IDEMPOTENT,
    LIST,
    problems,
)
from pocketpay.gateway.route_kit import RouteKit
from pocketpay.gateway.schemas import (
    LoginIn,
    RefreshIn,
    Session,
    SignupIn,
    TransferCreate,
    User,
    WalletBalance,
    WalletBalances,
    WebhookReceived,
    wallet_owner,
)
from pocketpay.kit.errors import AppError, NotFound, Unauthorized
from pocketpay.kit.listing import MAX_LIMIT, InvalidCursor, Page
from pocketpay.kit.metrics import WEBHOOKS
from pocketpay.kit.money import MoneyError, normalize_currency
from pocketpay.kit.tokens import Principal
from pocketpay.ledger.client import LedgerClient
from pocketpay.ledger.schemas import EntryList, Transfer, TransferList, TransferListQuery
from pocketpay.notifications.client import NotificationsClient
from pocketpay.payments.client import PaymentsClient
from pocketpay.payments.schemas import (
    CancelIn,
    CaptureIn,
    Payment,
    PaymentCreate,
    PaymentList,
    PaymentListQuery,
    PaymentMethod,
    PaymentMethodCreate,
    PaymentMethodList,
    Refund,
    RefundCreate,
    RefundList,
    Timeline,
)
from pocketpay.payments.states import PaymentStatus

# once(request, principal, idempotency_key, body_for_fingerprint, operation, status)
Once = Callable[..., Awaitable[JSONResponse]]

_bearer = HTTPBearer(auto_error=False, scheme_name=BEARER, description=BEARER_DESCRIPTION)

# Our ids are ``<prefix>_<ULID>``. A path id or cursor is checked against this before it is
# put into an internal URL: a ``#``, ``?`` or NUL in it would otherwise cut or change the
# internal request (500s, and on PostgreSQL a NUL is a database error).
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID = re.compile(ID_PATTERN)
_SEQ = re.compile(r"^[0-9]{1,18}$")


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
        billing: BillingClient | None,
        webhook_secret: str,
        webhook_tolerance: int,
        notifications: NotificationsClient | None = None,
    ) -> None:
        self.auth = auth
        self.idem = idem
        self.payments = payments
        self.ledger = ledger
        self.billing = billing
        self.webhook_secret = webhook_secret
        self.webhook_tolerance = webhook_tolerance
        self.notifications = notifications

    async def _recipient(self, body: TransferCreate) -> dict[str, Any]:
        """The user named by email or by one of their accounts."""
        found: dict[str, Any] | None = None
        if body.recipient is not None:
            found = await self.auth.find_by_email(str(body.recipient))
        elif body.destination_account_id and (owner := wallet_owner(body.destination_account_id)):
            found = await self.auth.find_by_id(owner[0])
        if found is None:
            what = "email" if body.recipient is not None else "account"
            raise NotFound(
                f"No PocketPay user has this {what}.", code="transfers.recipient_not_found"
            )
        return found

    async def send_money(self, who: Principal, idem_key: str, body: TransferCreate) -> Transfer:
        """A wallet transfer to the user whose email is ``body.recipient`` (the API's and the
        web app's send)."""
        recipient = await self._recipient(body)
        if body.source_account_id and wallet_owner(body.source_account_id) != (
            who.user_id,
            body.currency,
        ):
            raise NotFound(f"No account {body.source_account_id} of yours.")
        return await self.ledger.send(
            {
                "idempotency_key": idem_key,
                "sender_id": who.user_id,
                "recipient_id": recipient["id"],
                "sender_email": who.email,
                "recipient_email": recipient["email"],
                "amount_minor": body.amount_minor,
                "currency": body.currency,
                "note": body.note,
                "metadata": body.metadata,
            }
        )


def build_router(gw: Gateway) -> APIRouter:
    # operationId = the handler's name (create_payment, list_transfers...): the method names
    # of a generated client.
    r = APIRouter(
        prefix="/api/v1", route_class=PublicRoute, generate_unique_id_function=operation_id
    )

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
    kit = RouteKit(r, gw, principal, once, IdemHeader, _page_of, _object_id)
    billing_routes(kit)
    notifications_routes(kit)
    fx_routes(kit)
    accounts_routes(kit, _ENTRY_LIST)
    payouts_routes(kit)
    disputes_routes(kit)
    refuse_other_methods(r)
    return r


# The latest instant a datetime holds (9999-12-31T23:59:59Z): a created[...] bound past it
# could not be compared.
MAX_UNIX_SECONDS = 253_402_300_799


def _page_of(prefix: str, what: str, pattern: str = "") -> Callable[..., Page]:
    """The list window parameters, with cursors that must be ids of ``prefix`` (or match
    ``pattern``, whose form ``prefix`` then names)."""
    cursor = re.compile(pattern or rf"^{prefix}_[A-Za-z0-9]{{1,60}}$")
    form = prefix if pattern else f"{prefix}_..."

    def page(
        limit: int = Query(20, ge=1, le=MAX_LIMIT, description="How many objects, 1-100."),
        starting_after: str | None = Query(
            None, description=f"A {what} id: the page starts after it (older objects)."
        ),
        ending_before: str | None = Query(
            None, description=f"A {what} id: the page ends before it (newer objects)."
        ),
        created_gte: int | None = Query(
            None, alias="created[gte]", ge=0, le=MAX_UNIX_SECONDS, description="Unix seconds."
        ),
        created_gt: int | None = Query(None, alias="created[gt]", ge=0, le=MAX_UNIX_SECONDS),
        created_lte: int | None = Query(None, alias="created[lte]", ge=0, le=MAX_UNIX_SECONDS),
        created_lt: int | None = Query(None, alias="created[lt]", ge=0, le=MAX_UNIX_SECONDS),
    ) -> Page:
        for name, value in (("starting_after", starting_after), ("ending_before", ending_before)):
            if value is not None and not cursor.fullmatch(value):
                raise InvalidCursor(
                    f"{name} must be a {what} id ({form}), as found in a list's data."
                )
        return Page(
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            created_gte=created_gte,
            created_gt=created_gt,
            created_lte=created_lte,
            created_lt=created_lt,
        )

    return page


def _currency_filter(
    currency: str | None = Query(
        None, min_length=3, max_length=3, description="Only this currency (ISO 4217)."
    ),
) -> str | None:
    return None if currency is None else _currency(currency)


def _auth_routes(r: APIRouter, gw: Gateway, principal: Any) -> None:
    @r.post(
        "/auth/signup",
        status_code=201,
        tags=["auth"],
        responses=problems("auth.email_taken", "rate_limited", *BODY),
    )
    async def signup(body: SignupIn) -> Session:
        """A new account (role `user`), logged in."""
        session = await gw.auth.signup(str(body.email), body.password, body.name)
        return Session.model_validate(session)

    @r.post(
        "/auth/login",
        tags=["auth"],
        responses=problems("auth.invalid_credentials", "rate_limited", *BODY),
    )
    async def login(body: LoginIn) -> Session:
        return Session.model_validate(await gw.auth.login(str(body.email), body.password))

    @r.post(
        "/auth/refresh",
        tags=["auth"],
        responses=problems("auth.invalid_refresh_token", "rate_limited", *BODY),
    )
    async def refresh(body: RefreshIn) -> Session:
        """A new access token and a new refresh token; the one sent no longer works."""
        return Session.model_validate(await gw.auth.refresh(body.refresh_token))

    @r.get("/me", tags=["auth"], responses=problems(*AUTH))
    async def me(who: Principal = Depends(principal)) -> User:
        return User.model_validate(await gw.auth.get_user(who.user_id))


IdemHeader = Header(
    default=None,
    alias="Idempotency-Key",
    description="Required: a unique string per operation (e.g. a UUID). A retry with the same "
    "key and body replays the first answer (`Idempotent-Replayed: true`) instead of acting "
    "twice.",
)

_MOVE_MONEY = (*AUTH, *BODY, *IDEMPOTENT)
_PAYMENT_LIST = _page_of("pay", "payment")
_REFUND_LIST = _page_of("re", "refund")
_METHOD_LIST = _page_of("pm", "payment method")
_ENTRY_LIST = _page_of("an entry's seq: digits", "entry", pattern=_SEQ.pattern)
_TRANSFER_LIST = _page_of("tr", "transfer")


def _payment_routes(r: APIRouter, gw: Gateway, principal: Any, once: Once) -> None:
    p = gw.payments
    flow_errors = ("not_found", "payments.invalid_transition", "payments.provider_unavailable")

    @r.post(
        "/payments",
        status_code=202,
        response_model=Payment,
        tags=["payments"],
        responses=problems(
            *_MOVE_MONEY,
            "validation.unknown_currency",
            "payments.invalid_payment_method",
            "payments.provider_unavailable",
            "payments.busy",
        ),
    )
    async def create_payment(
        request: Request,
        body: PaymentCreate,
        who: Principal = Depends(principal),
        key: str | None = IdemHeader,
    ) -> JSONResponse:
        """Charge a payment method. Answers at once with status `created`; the authorization
        (and the capture, with `capture_method` automatic) follows asynchronously: poll the
        payment or watch its events."""
        p.admit()  # shed before the key is claimed: a refused create writes nothing
        data = body.model_dump()
        return await once(request, who, key, data, lambda k: p.create(who.user_id, k, data), 202)

    @r.get("/payments", tags=["payments"], responses=problems(*AUTH, *LIST))
    async def list_payments(
        who: Principal = Depends(principal),
        page: Page = Depends(_PAYMENT_LIST),
        status: PaymentStatus | None = Query(None, description="Only payments in this status."),
        currency: str | None = Depends(_currency_filter),
    ) -> PaymentList:
        """Your payments, newest first."""
        query = PaymentListQuery(**page.model_dump(), status=status, currency=currency)
        return await p.list(who.user_id, query)

    @r.get("/payments/{payment_id}", tags=["payments"], responses=problems(*AUTH, "not_found"))
    async def get_payment(payment_id: str, who: Principal = Depends(principal)) -> Payment:
        return await p.get(who.user_id, _object_id(payment_id, "payment"))

    @r.get(
        "/payments/{payment_id}/events", tags=["payments"], responses=problems(*AUTH, "not_found")
    )
    async def payment_events(payment_id: str, who: Principal = Depends(principal)) -> Timeline:
        """The payment's timeline: every status change and note, oldest first."""
        return await p.events(who.user_id, _object_id(payment_id, "payment"))

    @r.post(
        "/payments/{payment_id}/capture",
        response_model=Payment,
        tags=["payments"],
        responses=problems(*_MOVE_MONEY, *flow_errors, "payments.capture_exceeds_authorized"),
    )
    async def capture(
        request: Request,
        payment_id: str,
        body: CaptureIn | None = None,
        who: Principal = Depends(principal),
        key: str | None = IdemHeader,
    ) -> JSONResponse:
        """Capture an authorized payment (`capture_method` manual), in full or in part."""
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

    @r.post(
        "/payments/{payment_id}/cancel",
        response_model=Payment,
        tags=["payments"],
        responses=problems(*_MOVE_MONEY, *flow_errors),
    )
    async def cancel(
        request: Request,
        payment_id: str,
        body: CancelIn | None = None,
        who: Principal = Depends(principal),
        key: str | None = IdemHeader,
    ) -> JSONResponse:
        """Cancel a payment not yet captured (the authorization is released)."""
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
        responses=problems(
            *_MOVE_MONEY,
            *flow_errors,
            "payments.refund_exceeds_captured",
            "payments.not_refundable",
            "ledger.insufficient_funds",
        ),
    )
    async def refund(
        request: Request,
        payment_id: str,
        body: RefundCreate | None = None,
        who: Principal = Depends(principal),
        key: str | None = IdemHeader,
    ) -> JSONResponse:
        """Refund a captured payment, in full (no amount) or in part. The amount is held in
        your wallet first; the refund is `succeeded` once the PSP confirms."""
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

    @r.get(
        "/payments/{payment_id}/refunds",
        tags=["payments"],
        responses=problems(*AUTH, *LIST, "not_found"),
    )
    async def list_refunds(
        payment_id: str, who: Principal = Depends(principal), page: Page = Depends(_REFUND_LIST)
    ) -> RefundList:
        """The payment's refunds, newest first."""
        return await p.refunds(who.user_id, _object_id(payment_id, "payment"), page)

    @r.get("/refunds/{refund_id}", tags=["payments"], responses=problems(*AUTH, "not_found"))
    async def get_refund(refund_id: str, who: Principal = Depends(principal)) -> Refund:
        return await p.get_refund(who.user_id, _object_id(refund_id, "refund"))

    @r.post(
        "/payment-methods",
        response_model=PaymentMethod,
        tags=["payment methods"],
        responses=problems(
            *_MOVE_MONEY,
            "payments.card_declined",
            "payments.invalid_payment_method",
            "payments.provider_unavailable",
        ),
    )
    async def save_payment_method(
        request: Request,
        body: PaymentMethodCreate,
        who: Principal = Depends(principal),
        key: str | None = IdemHeader,
    ) -> JSONResponse:
        """Save a card at the PSP, to charge it later without the customer (subscription
        renewals) or to top up with it: pass its `id` as a payment's `payment_method`. A
        card the PSP refuses is a 402 `payments.card_declined`."""
        data = body.model_dump()
        return await once(
            request, who, key, data, lambda k: p.save_payment_method(who.user_id, k, data), 200
        )

    @r.get("/payment-methods", tags=["payment methods"], responses=problems(*AUTH, *LIST))
    async def list_payment_methods(
        who: Principal = Depends(principal), page: Page = Depends(_METHOD_LIST)
    ) -> PaymentMethodList:
        """Your saved payment methods (detached ones too), newest first."""
        return await p.payment_methods(who.user_id, page)

    @r.get(
        "/payment-methods/{method_id}",
        tags=["payment methods"],
        responses=problems(*AUTH, "not_found"),
    )
    async def get_payment_method(
        method_id: str, who: Principal = Depends(principal)
    ) -> PaymentMethod:
        return await p.get_payment_method(who.user_id, _object_id(method_id, "payment method"))

    @r.post(
        "/payment-methods/{method_id}/detach",
        tags=["payment methods"],
        responses=problems(*AUTH, "not_found", "payments.provider_unavailable"),
    )
    async def detach_payment_method(
        method_id: str, who: Principal = Depends(principal)
    ) -> PaymentMethod:
        """Stop keeping the card: the PSP forgets it and it can no longer be charged.
        Detaching again answers the detached method."""
        method_id = _object_id(method_id, "payment method")
        return await p.detach_payment_method(who.user_id, method_id)


def _currency(code: str) -> str:
    try:
        return normalize_currency(code)
    except MoneyError as exc:
        raise AppError(str(exc), code="validation.unknown_currency", status=422) from exc


def _wallet_routes(r: APIRouter, gw: Gateway, principal: Any, once: Once) -> None:
    @r.get("/wallets", tags=["wallets"], responses=problems(*AUTH))
    async def wallets(who: Principal = Depends(principal)) -> WalletBalances:
        """Your wallets, one per currency you hold."""
        body = await gw.ledger.wallets(who.user_id)
        return WalletBalances(
            data=[
                WalletBalance(
                    id=w.account_id,
                    currency=w.currency,
                    available_minor=w.available_minor,
                    pending_minor=w.pending_minor,
                    posted_minor=w.posted_minor,
                    debt_minor=w.debt_minor,
                    debt_account_id=w.debt_account_id,
                )
                for w in body.data
            ]
        )

    @r.get(
        "/wallets/{currency}/entries",
        tags=["wallets"],
        responses=problems(*AUTH, *LIST, "validation.unknown_currency"),
    )
    async def entries(
        currency: str,
        who: Principal = Depends(principal),
        page: Page = Depends(_ENTRY_LIST),
    ) -> EntryList:
        """The wallet's ledger entries (its statement), newest first. Cursors are entries'
        `seq`."""
        return await gw.ledger.entries(who.user_id, _currency(currency), page)

    @r.post(
        "/transfers",
        status_code=201,
        response_model=Transfer,
        tags=["transfers"],
        responses=problems(
            *_MOVE_MONEY,
            "transfers.recipient_not_found",
            "validation.unknown_currency",
            "ledger.insufficient_funds",
            "ledger.self_transfer",
        ),
    )
    async def send(
        request: Request,
        body: TransferCreate,
        who: Principal = Depends(principal),
        key: str | None = IdemHeader,
    ) -> JSONResponse:
        """Send money from your wallet to another PocketPay user, by email."""
        data = body.model_dump(mode="json")
        return await once(request, who, key, data, lambda k: gw.send_money(who, k, body), 201)

    @r.get("/transfers", tags=["transfers"], responses=problems(*AUTH, *LIST))
    async def list_transfers(
        who: Principal = Depends(principal),
        page: Page = Depends(_TRANSFER_LIST),
        currency: str | None = Depends(_currency_filter),
    ) -> TransferList:
        """Transfers you sent or received, newest first."""
        query = TransferListQuery(**page.model_dump(), currency=currency)
        return await gw.ledger.list_transfers(who.user_id, query)

    @r.get("/transfers/{transfer_id}", tags=["transfers"], responses=problems(*AUTH, "not_found"))
    async def get_transfer(transfer_id: str, who: Principal = Depends(principal)) -> Transfer:
        return await gw.ledger.get_transfer(who.user_id, _object_id(transfer_id, "transfer"))


def _webhook_routes(r: APIRouter, gw: Gateway) -> None:
    @r.post(
        "/webhooks/stripe",
        tags=["webhooks"],
        responses=problems(
            "webhooks.invalid_signature",
            "webhooks.malformed",
            "request.too_large",
            "payments.provider_unavailable",
        ),
    )
    async def stripe_webhook(
        request: Request,
        stripe_signature: str | None = Header(None, alias="Stripe-Signature"),
    ) -> WebhookReceived:
        """Stripe's (or the sandbox's) signed events. Not for API clients."""
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
