"""Request bodies and typed answers of the billing API (the gateway's public routes declare
them too). Timestamps are ISO 8601 strings with an explicit offset, as the views write them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

from pocketpay.billing.periods import MAX_COUNT, Interval
from pocketpay.billing.states import InvoiceStatus, SubscriptionStatus
from pocketpay.kit.listing import Page
from pocketpay.kit.metadata import Metadata
from pocketpay.kit.money import MAX_AMOUNT_MINOR, normalize_currency


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanCreate(_Strict):
    name: str = Field(min_length=1, max_length=100, examples=["Pro monthly"])
    amount_minor: StrictInt = Field(
        ge=0, le=MAX_AMOUNT_MINOR, description="Price per period in minor units."
    )
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    interval: Interval = Interval.MONTH
    interval_count: StrictInt = Field(1, ge=1, description="Periods are this many intervals.")
    trial_days: StrictInt = Field(0, ge=0, le=730)
    metadata: Metadata = Field(default_factory=dict)

    # A MoneyError is a ValueError: pydantic reports it as the field's validation error.
    _cur = field_validator("currency")(normalize_currency)

    @model_validator(mode="after")
    def _at_most_a_year(self) -> PlanCreate:
        if self.interval_count > MAX_COUNT[self.interval]:
            raise ValueError(
                f"a period may last at most a year: interval_count <= "
                f"{MAX_COUNT[self.interval]} for interval {self.interval.value}"
            )
        return self


class Plan(BaseModel):
    id: str
    object: Literal["plan"]
    name: str
    amount_minor: int
    currency: str
    interval: Interval
    interval_count: int
    trial_days: int
    active: bool
    metadata: dict[str, str]
    created_at: str
    archived_at: str | None


class PlanList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Plan]
    has_more: bool
    next_cursor: str | None


class SubscriptionCreate(_Strict):
    plan_id: str = Field(min_length=1, max_length=40)
    payment_source: Literal["card", "wallet"] = Field(
        "card",
        description="card: charge the saved `payment_method` off-session each period; "
        "wallet: move the price from your wallet to the platform.",
    )
    payment_method: str | None = Field(
        None,
        pattern=r"^pm_[A-Za-z0-9_]{1,90}$",
        description="A saved payment method (POST /api/v1/payment-methods) for card.",
    )
    metadata: Metadata = Field(default_factory=dict)


ProrationBehavior = Literal["create_prorations", "always_invoice", "none"]


class SubscriptionUpdate(_Strict):
    payment_method: str | None = Field(
        None,
        pattern=r"^pm_[A-Za-z0-9_]{1,90}$",
        description="Charge this saved card from now on (the subscription becomes a card "
        "subscription). Open invoices are retried with it on their schedule.",
    )
    plan_id: str | None = Field(
        None,
        min_length=1,
        max_length=40,
        description="Switch to this active plan (same currency). A different interval or "
        "interval_count starts a new billing cycle now, its first period invoiced at once.",
    )
    proration_behavior: ProrationBehavior = Field(
        "create_prorations",
        description="For a plan of the same interval: create_prorations adds the credit for "
        "the unused time and the charge for the rest of the period to the next invoice; "
        "always_invoice invoices them now; none only switches the plan for the next period.",
    )

    @model_validator(mode="after")
    def _something(self) -> SubscriptionUpdate:
        if self.payment_method is None and self.plan_id is None:
            raise ValueError("send payment_method, plan_id or both")
        return self


class SubscriptionCancel(_Strict):
    at_period_end: bool = Field(
        False, description="Keep it until the current period ends instead of now."
    )


class Subscription(BaseModel):
    id: str
    object: Literal["subscription"]
    plan_id: str
    status: SubscriptionStatus
    payment_source: Literal["card", "wallet"]
    payment_method: str | None
    currency: str
    current_period_start: str
    current_period_end: str
    trial_end: str | None
    cancel_at_period_end: bool
    canceled_at: str | None
    latest_invoice: str | None
    metadata: dict[str, str]
    created_at: str
    updated_at: str


class SubscriptionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Subscription]
    has_more: bool
    next_cursor: str | None


class InvoiceLine(BaseModel):
    kind: Literal["subscription", "proration", "credit", "one_off"]
    description: str
    amount_minor: int
    period_start: str | None
    period_end: str | None


class Invoice(BaseModel):
    id: str
    object: Literal["invoice"]
    number: str | None
    status: InvoiceStatus
    subscription_id: str
    currency: str
    period_start: str
    period_end: str
    lines: list[InvoiceLine]
    total_minor: int = Field(description="Always the sum of the lines.")
    amount_paid_minor: int
    amount_due_minor: int
    attempts: int
    next_attempt_at: str | None
    last_decline_code: str | None
    created_at: str
    finalized_at: str | None
    paid_at: str | None
    voided_at: str | None


class InvoiceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Invoice]
    has_more: bool
    next_cursor: str | None


class InvoiceItemCreate(_Strict):
    description: str = Field(
        min_length=1, max_length=200, pattern=r"^[^\x00]*$", examples=["Setup fee"]
    )
    amount_minor: StrictInt = Field(
        ge=-MAX_AMOUNT_MINOR,
        le=MAX_AMOUNT_MINOR,
        description="In the subscription's currency, minor units; negative for a credit.",
        examples=[2500],
    )

    @model_validator(mode="after")
    def _not_zero(self) -> InvoiceItemCreate:
        if self.amount_minor == 0:
            raise ValueError("amount_minor must not be 0")
        return self


class InvoiceItem(BaseModel):
    id: str
    object: Literal["invoice_item"]
    subscription_id: str
    kind: Literal["one_off"]
    description: str
    amount_minor: int
    currency: str
    invoice_id: str | None = Field(description="The invoice that took it; null until then.")
    created_at: str


class TestClock(BaseModel):
    object: Literal["test_clock"] = "test_clock"
    now: str = Field(description="Billing time: the wall clock plus the offset.")
    offset_seconds: float


class TestClockAdvance(_Strict):
    seconds: StrictInt | None = Field(None, gt=0, le=10 * 366 * 86400)
    to: datetime | None = Field(None, description="An ISO 8601 time with an offset.")

    @model_validator(mode="after")
    def _one(self) -> TestClockAdvance:
        if (self.seconds is None) == (self.to is None):
            raise ValueError("send either seconds or to")
        if self.to is not None and self.to.tzinfo is None:
            raise ValueError("to needs a UTC offset, e.g. 2027-01-01T00:00:00Z")
        return self


class PlanListInternal(Page):
    pass


class OwnerPage(Page):
    owner_id: str
