"""Request bodies of the payments API (shared by the gateway's public API), and the typed
answers of its operator routes (stuck attempts)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from pocketpay.kit.money import MAX_AMOUNT_MINOR, MoneyError, normalize_currency


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
