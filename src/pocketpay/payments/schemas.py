"""Request bodies of the payments API (shared by the gateway's public API) and the typed
answers of its internal API: payments, refunds, the timeline, PSP events, provider health,
and the operator routes (stuck attempts). ``PaymentsClient`` returns these models; the
gateway's public routes declare the ones it passes through.

Timestamps are ISO 8601 strings with an explicit offset (``2024-01-01T00:00:00+00:00``),
as the views write them: a ``datetime`` field would re-serialize them differently."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictInt, field_validator

from pocketpay.kit.listing import Page
from pocketpay.kit.metadata import Metadata
from pocketpay.kit.money import MAX_AMOUNT_MINOR, normalize_currency
from pocketpay.payments.states import PaymentStatus, PayoutStatus, RefundStatus


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PaymentCreate(_Strict):
    amount_minor: StrictInt = Field(
        gt=0, le=MAX_AMOUNT_MINOR, description="Amount in minor units (cents), a positive integer."
    )
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    # A PSP payment-method token (pm_...), never card data.
    payment_method: str = Field(pattern=r"^pm_[A-Za-z0-9_]{1,90}$", examples=["pm_card_visa"])
    capture_method: Literal["automatic", "manual"] = "automatic"
    description: str | None = Field(default=None, max_length=500, examples=["Top-up"])
    metadata: Metadata = Field(default_factory=dict)

    # A MoneyError is a ValueError: pydantic reports it as the field's validation error.
    _cur = field_validator("currency")(normalize_currency)

    @field_validator("description")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("description may not contain NUL characters")
        return value


class CaptureIn(_Strict):
    amount_minor: StrictInt | None = Field(default=None, gt=0, le=MAX_AMOUNT_MINOR)


class CancelIn(_Strict):
    pass


class RefundCreate(_Strict):
    amount_minor: StrictInt | None = Field(
        default=None,
        gt=0,
        le=MAX_AMOUNT_MINOR,
        description="Minor units; the whole captured amount not yet refunded when omitted.",
        examples=[500],
    )
    reason: Literal["requested_by_customer", "duplicate", "fraudulent"] | None = None
    metadata: Metadata = Field(default_factory=dict)


class PaymentListQuery(Page):
    """``GET /payments``: the page window and the filters."""

    status: PaymentStatus | None = None
    currency: str | None = None


class PaymentListInternal(PaymentListQuery):
    """The internal route's query: the list query and whose payments."""

    owner_id: str


class RefundListInternal(Page):
    owner_id: str


# What a payment's money is for: ``top_up`` credits the owner's wallet, ``invoice`` (billing)
# credits the platform's revenue account.
PaymentPurpose = Literal["top_up", "invoice"]
INVOICE: PaymentPurpose = "invoice"


class PaymentCreateInternal(PaymentCreate):
    owner_id: str = Field(min_length=1, max_length=60)
    # The owner's Idempotency-Key: the payment id is derived from (owner, key).
    idempotency_key: str = Field(min_length=1, max_length=255)
    # Only components set these (billing charging an invoice); the public body refuses them.
    purpose: PaymentPurpose = "top_up"
    reference: str | None = Field(default=None, min_length=1, max_length=100)
    # The customer is not there (a renewal): a saved payment method only.
    off_session: bool = False


class RefundCreateInternal(RefundCreate):
    idempotency_key: str = Field(min_length=1, max_length=255)


# -- answers (the views of service.payment_view, refund_view, events_of) --------------------


_PAYMENT_EXAMPLE: dict[str, JsonValue] = {
    "id": "pay_01JD5Q9V6W0XKQ4Y7M3N2P8R1T",
    "object": "payment",
    "status": "captured",
    "amount_minor": 2500,
    "currency": "USD",
    "amount_captured_minor": 2500,
    "amount_refunded_minor": 0,
    "capture_method": "automatic",
    "payment_method": "pm_card_visa",
    "description": "Top-up",
    "metadata": {"order_id": "6735"},
    "failure_code": None,
    "failure_message": None,
    "provider": "sandbox",
    "purpose": "top_up",
    "reference": None,
    "created_at": "2025-01-31T12:00:00+00:00",
    "updated_at": "2025-01-31T12:00:01+00:00",
}


class Payment(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_PAYMENT_EXAMPLE]})

    id: str
    object: Literal["payment"]
    status: PaymentStatus
    amount_minor: int
    currency: str
    amount_captured_minor: int
    amount_refunded_minor: int
    capture_method: Literal["automatic", "manual"]
    payment_method: str
    description: str | None
    metadata: dict[str, str]
    failure_code: str | None
    failure_message: str | None
    provider: str
    purpose: PaymentPurpose = Field(
        description="top_up: the money went to your wallet; invoice: it paid an invoice."
    )
    reference: str | None = Field(description="What the payment paid: the invoice's id.")
    created_at: str
    updated_at: str


class PaymentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Payment]
    has_more: bool = Field(description="More objects lie beyond data, in the page's direction.")
    next_cursor: str | None = Field(
        description="When has_more: the id to pass as starting_after (or as ending_before, "
        "when this page was asked with ending_before) for the next page."
    )


class TimelineEntry(BaseModel):
    """A status change (from_status -> to_status), or a note (from == to: a refund, a
    failed attempt, a contradiction flagged)."""

    from_status: PaymentStatus | None
    to_status: PaymentStatus
    cause: str
    detail: dict[str, Any]
    occurred_at: str


class Timeline(BaseModel):
    object: Literal["list"] = "list"
    data: list[TimelineEntry]


class Refund(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "re_01JD5QB2C3D4E5F6G7H8J9K0LM",
                    "object": "refund",
                    "payment_id": "pay_01JD5Q9V6W0XKQ4Y7M3N2P8R1T",
                    "amount_minor": 500,
                    "currency": "USD",
                    "status": "succeeded",
                    "reason": "requested_by_customer",
                    "failure_code": None,
                    "metadata": {},
                    "created_at": "2025-01-31T12:05:00+00:00",
                    "updated_at": "2025-01-31T12:05:01+00:00",
                }
            ]
        }
    )

    id: str
    object: Literal["refund"]
    payment_id: str
    amount_minor: int
    currency: str
    status: RefundStatus
    reason: str | None = Field(description="The requested reason, or compensation.")
    failure_code: str | None
    metadata: dict[str, str]
    created_at: str
    updated_at: str


class RefundList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Refund]
    has_more: bool = Field(description="More objects lie beyond data, in the page's direction.")
    next_cursor: str | None = Field(description="When has_more: the cursor of the next page.")


class PspEventResult(BaseModel):
    """A verified PSP webhook: applied now, or already applied (same event id)."""

    status: Literal["processed", "duplicate"]


class ProviderHealth(BaseModel):
    """A PSP ping around the breaker, plus the provider's own statistics (``stats()``)."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ok", "degraded", "fail"]
    latency_ms: float
    breaker: str


# -- operator views (admin-only data, reached through the gateway's admin API) ---------------

AttemptOperation = Literal["authorize", "capture", "cancel", "void", "refund", "payout"]


class StuckAttempt(BaseModel):
    """A PSP attempt the reconciler gave up on after ``psp.attempt_max_tries`` resumptions."""

    object_id: str = Field(description="The payment (authorize, capture, cancel, void) or refund.")
    operation: AttemptOperation
    tries: int
    error: str | None = Field(description="The last error seen, if any.")
    since: datetime = Field(description="When the attempt was last tried (became stuck).")


class StuckAttempts(BaseModel):
    data: list[StuckAttempt]
    total: int = Field(description="How many attempts are stuck (data may be a prefix).")


class StuckRetried(BaseModel):
    object_id: str
    operation: AttemptOperation
    status: Literal["pending"]
    tries: int


# -- saved payment methods ------------------------------------------------------------------


class PaymentMethodCreate(_Strict):
    """Save a card for later charges (a renewal of a subscription, a top-up)."""

    payment_method: str = Field(
        pattern=r"^pm_[A-Za-z0-9_]{1,90}$",
        description="A PSP payment-method token (pm_...), never card data.",
        examples=["pm_card_visa"],
    )
    metadata: Metadata = Field(default_factory=dict)


class PaymentMethodCreateInternal(PaymentMethodCreate):
    owner_id: str
    idempotency_key: str


class PaymentMethodListInternal(Page):
    owner_id: str


class CardDetails(BaseModel):
    brand: str
    last4: str
    exp_month: int
    exp_year: int


class PaymentMethod(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "pm_5Z0QFJ3M2A9TK1V7X4W8Y6B0CD",
                    "object": "payment_method",
                    "type": "card",
                    "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034},
                    "status": "active",
                    "metadata": {},
                    "created_at": "2025-01-31T12:00:00+00:00",
                    "detached_at": None,
                }
            ]
        }
    )

    id: str = Field(description="Pass it as payment_method to charge this card again.")
    object: Literal["payment_method"]
    type: Literal["card"]
    card: CardDetails
    status: Literal["active", "detached"]
    metadata: dict[str, str]
    created_at: str
    detached_at: str | None


class PaymentMethodList(BaseModel):
    object: Literal["list"] = "list"
    data: list[PaymentMethod]
    has_more: bool = Field(description="More objects lie beyond data, in the page's direction.")
    next_cursor: str | None = Field(description="When has_more: the cursor of the next page.")


# -- payouts -------------------------------------------------------------------------------


def _no_nul(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: refused as the field's error, never a 500."""
    if value is not None and "\x00" in value:
        raise ValueError("description may not contain NUL characters")
    return value


class PayoutDestination(_Strict):
    """A bank account. Its form is checked by payouts (``payouts.invalid_destination``); the
    full account number goes to the PSP only, we keep its last 4 digits."""

    country: str = Field(max_length=8, examples=["US"])
    routing_number: str = Field(max_length=32, examples=["110000000"])
    account_number: str = Field(max_length=32, examples=["000123456789"])


class PayoutCreate(_Strict):
    amount_minor: StrictInt = Field(
        gt=0, le=MAX_AMOUNT_MINOR, description="Minor units taken from your wallet."
    )
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    destination: PayoutDestination
    description: str | None = Field(default=None, max_length=500, examples=["Savings"])
    metadata: Metadata = Field(default_factory=dict)

    _cur = field_validator("currency")(normalize_currency)
    _text = field_validator("description")(_no_nul)


class PayoutCreateInternal(PayoutCreate):
    owner_id: str
    idempotency_key: str = Field(min_length=1, max_length=255)


class PayoutListInternal(Page):
    owner_id: str


class PayoutBankAccount(BaseModel):
    country: str
    routing_number: str
    last4: str


class Payout(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "po_01JD5QD2C3D4E5F6G7H8J9K0LM",
                    "object": "payout",
                    "amount_minor": 2500,
                    "currency": "USD",
                    "status": "paid",
                    "destination": {
                        "country": "US",
                        "routing_number": "110000000",
                        "last4": "6789",
                    },
                    "description": "Savings",
                    "metadata": {},
                    "failure_code": None,
                    "failure_message": None,
                    "created_at": "2025-01-31T12:05:00+00:00",
                    "updated_at": "2025-01-31T12:05:03+00:00",
                }
            ]
        }
    )

    id: str
    object: Literal["payout"]
    amount_minor: int
    currency: str
    status: PayoutStatus
    destination: PayoutBankAccount
    description: str | None
    metadata: dict[str, str]
    failure_code: str | None = Field(
        description="Why it failed: ledger.insufficient_funds, payouts.psp_balance_insufficient, "
        "or the bank's code (no_account, account_closed...)."
    )
    failure_message: str | None
    created_at: str
    updated_at: str


class PayoutList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Payout]
    has_more: bool = Field(description="More objects lie beyond data, in the page's direction.")
    next_cursor: str | None = Field(description="When has_more: the cursor of the next page.")


# -- disputes ----------------------------------------------------------------------------

DisputeStatus = Literal[
    "warning_needs_response",
    "warning_under_review",
    "warning_closed",
    "needs_response",
    "under_review",
    "won",
    "lost",
]


class Dispute(BaseModel):
    """A chargeback the cardholder's bank opened on one of your payments (or, with a
    ``warning_`` status, an inquiry, which holds no money)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "dp_01JD5QD2C3D4E5F6G7H8J9K0LM",
                    "object": "dispute",
                    "payment_id": "pay_01JD5QC9Z8Y7X6W5V4T3S2R1QP",
                    "amount_minor": 2500,
                    "currency": "USD",
                    "status": "needs_response",
                    "reason": "fraudulent",
                    "evidence_due_by": "2025-02-07T12:05:00+00:00",
                    "evidence": None,
                    "evidence_submitted_at": None,
                    "created_at": "2025-01-31T12:05:00+00:00",
                    "updated_at": "2025-01-31T12:05:00+00:00",
                    "closed_at": None,
                }
            ]
        }
    )

    id: str
    object: Literal["dispute"]
    payment_id: str
    amount_minor: int = Field(description="The disputed amount, held from your wallet.")
    currency: str
    status: DisputeStatus = Field(
        description="needs_response → under_review (evidence sent) → won | lost; an inquiry: "
        "warning_needs_response → warning_under_review → warning_closed."
    )
    reason: str = Field(examples=["fraudulent", "product_not_received", "duplicate"])
    evidence_due_by: str | None = Field(description="Submit evidence before this time.")
    evidence: str | None = Field(description="The evidence text you submitted.")
    evidence_submitted_at: str | None
    created_at: str
    updated_at: str
    closed_at: str | None


class DisputeList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Dispute]
    has_more: bool = Field(description="More objects lie beyond data, in the page's direction.")
    next_cursor: str | None = Field(description="When has_more: the cursor of the next page.")


class DisputeListInternal(Page):
    owner_id: str
    payment_id: str | None = None


class DisputeEvidence(BaseModel):
    """Your answer to the dispute, sent to the bank through the PSP and submitted at once."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(
        min_length=1,
        max_length=20_000,
        description="What happened, with whatever proves it (receipts, tracking numbers, "
        "messages with the customer).",
        examples=["Delivered on 2025-01-20, tracking 1Z999AA10123456784, signed by the customer."],
    )


class DisputeEvidenceInternal(DisputeEvidence):
    owner_id: str
    idempotency_key: str = Field(min_length=1, max_length=255)
