"""Request bodies of the payments API (shared by the gateway's public API) and the typed
answers of its internal API: payments, refunds, the timeline, PSP events, provider health,
and the operator routes (stuck attempts). ``PaymentsClient`` returns these models; the
gateway's public routes declare the ones it passes through.

Timestamps are ISO 8601 strings with an explicit offset (``2024-01-01T00:00:00+00:00``),
as the views write them: a ``datetime`` field would re-serialize them differently."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from pocketpay.kit.money import MAX_AMOUNT_MINOR, MoneyError, normalize_currency
from pocketpay.payments.states import PaymentStatus, RefundStatus


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _currency(value: str) -> str:
    try:
        return normalize_currency(value)
    except MoneyError as exc:
        raise ValueError(str(exc)) from exc


class PaymentCreate(_Strict):
    amount_minor: StrictInt = Field(
        gt=0, le=MAX_AMOUNT_MINOR, description="Amount in minor units (cents), a positive integer."
    )
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    # A PSP payment-method token (pm_...), never card data.
    payment_method: str = Field(pattern=r"^pm_[A-Za-z0-9_]{1,90}$", examples=["pm_card_visa"])
    capture_method: Literal["automatic", "manual"] = "automatic"
    description: str | None = Field(default=None, max_length=500)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=20)

    _cur = field_validator("currency")(_currency)

    @field_validator("description")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("description may not contain NUL characters")
        return value

    @field_validator("metadata")
    @classmethod
    def _meta(cls, value: dict[str, str]) -> dict[str, str]:
        for k, v in value.items():
            if not 0 < len(k) <= 40 or len(v) > 500:
                raise ValueError("metadata keys are 1-40 characters, values at most 500")
            if "\x00" in k or "\x00" in v:
                raise ValueError("metadata may not contain NUL characters")
        return value


class CaptureIn(_Strict):
    amount_minor: StrictInt | None = Field(default=None, gt=0, le=MAX_AMOUNT_MINOR)


class CancelIn(_Strict):
    pass


class RefundCreate(_Strict):
    amount_minor: StrictInt | None = Field(default=None, gt=0, le=MAX_AMOUNT_MINOR)
    reason: Literal["requested_by_customer", "duplicate", "fraudulent"] | None = None


class PaymentCreateInternal(PaymentCreate):
    owner_id: str = Field(min_length=1, max_length=60)
    # The owner's Idempotency-Key: the payment id is derived from (owner, key).
    idempotency_key: str = Field(min_length=1, max_length=255)


class RefundCreateInternal(RefundCreate):
    idempotency_key: str = Field(min_length=1, max_length=255)


# -- answers (the views of service.payment_view, refund_view, events_of) --------------------


class Payment(BaseModel):
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
    created_at: str
    updated_at: str


class PaymentList(BaseModel):
    data: list[Payment]
    has_more: bool
    next_cursor: str | None = Field(description="The last id of data when has_more.")


class TimelineEntry(BaseModel):
    """A status change (from_status -> to_status), or a note (from == to: a refund, a
    failed attempt, a contradiction flagged)."""

    from_status: PaymentStatus | None
    to_status: PaymentStatus
    cause: str
    detail: dict[str, Any]
    occurred_at: str


class Timeline(BaseModel):
    data: list[TimelineEntry]


class Refund(BaseModel):
    id: str
    object: Literal["refund"]
    payment_id: str
    amount_minor: int
    currency: str
    status: RefundStatus
    reason: str | None = Field(description="The requested reason, or compensation.")
    failure_code: str | None
    created_at: str
    updated_at: str


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

AttemptOperation = Literal["authorize", "capture", "cancel", "void", "refund"]


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
