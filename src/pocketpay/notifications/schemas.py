"""Request bodies and typed answers of the notifications API (the gateway's public routes
declare them too). Timestamps are ISO 8601 strings with an explicit offset."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pocketpay.kit.listing import Page

URL_MAX = 2048


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PreferencesIn(_Strict):
    email: bool = Field(True, description="Email me when something happens to my money.")
    slack_webhook_url: str | None = Field(
        None,
        max_length=URL_MAX,
        description="A Slack incoming webhook (https://hooks.slack.com/services/...); null: none.",
    )


class Preferences(BaseModel):
    object: Literal["notification_preferences"] = "notification_preferences"
    email: bool
    slack_webhook_url: str | None


class EndpointCreate(_Strict):
    url: str = Field(min_length=1, max_length=URL_MAX, examples=["https://example.com/hooks"])
    events: list[str] = Field(
        min_length=1,
        max_length=50,
        description='Event types to receive, e.g. ["payments.payment.settled"]; ["*"] for all.',
    )
    description: str = Field("", max_length=200)


class EndpointUpdate(_Strict):
    url: str | None = Field(None, min_length=1, max_length=URL_MAX)
    events: list[str] | None = Field(None, min_length=1, max_length=50)
    description: str | None = Field(None, max_length=200)
    enabled: bool | None = Field(
        None, description="false disables the endpoint; true enables it again (retries resume)."
    )


class SecretRotate(_Strict):
    overlap_hours: float | None = Field(
        None,
        ge=0,
        le=168,
        description="How long the old secret keeps signing too (default: the server's, 24 h).",
    )


class Endpoint(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    description: str
    events: list[str]
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None
    failing_since: datetime | None
    previous_secret_expires_at: datetime | None
    created_at: datetime


class EndpointWithSecret(Endpoint):
    secret: str = Field(description="The signing secret (whsec_...): shown this once only.")


class EndpointList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Endpoint]
    has_more: bool
    next_cursor: str | None


class EndpointDeleted(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    deleted: Literal[True] = True


class Attempt(BaseModel):
    attempted_at: datetime
    ok: bool
    status_code: int | None
    latency_ms: int
    response_excerpt: str = Field(description="The start of the answer's body (500 chars).")
    error: str | None = Field(description="Why no answer came (timeout, refused target).")


class Delivery(BaseModel):
    id: str = Field(description="Also the webhook-id header: the same on every retry.")
    object: Literal["webhook_delivery"] = "webhook_delivery"
    endpoint_id: str
    event_id: str
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempt_count: int
    next_attempt_at: datetime | None
    created_at: datetime
    attempts: list[Attempt] = Field(description="Every attempt, oldest first.")


class DeliveryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Delivery]
    has_more: bool
    next_cursor: str | None


class OwnerPage(Page):
    owner_id: str
