"""Public request bodies (unknown fields are rejected) and the public answers that are not
an owning component's model as is."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StrictInt, field_validator

from pocketpay.kit.metadata import Metadata
from pocketpay.kit.money import MAX_AMOUNT_MINOR, MoneyError, normalize_currency

# Free text is stored in PostgreSQL text columns, which cannot hold NUL: refuse it at the
# door (a 422) rather than fail in the database (a 500).
NO_NUL = r"^[^\x00]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignupIn(_Strict):
    email: EmailStr = Field(examples=["alice@example.com"])
    password: str = Field(min_length=10, max_length=256, examples=["correct-horse-battery"])
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL, examples=["Alice"])


class LoginIn(_Strict):
    email: EmailStr = Field(examples=["alice@example.com"])
    password: str = Field(min_length=1, max_length=256, examples=["correct-horse-battery"])


class RefreshIn(_Strict):
    refresh_token: str = Field(min_length=1, max_length=200)


class TransferCreate(_Strict):
    recipient: EmailStr = Field(
        description="The email of the PocketPay user who receives the money.",
        examples=["bob@example.com"],
    )
    amount_minor: StrictInt = Field(gt=0, le=MAX_AMOUNT_MINOR, examples=[1000])
    currency: str = Field(min_length=3, max_length=3, examples=["USD"])
    note: str = Field(default="", max_length=500, pattern=NO_NUL, examples=["Lunch"])
    metadata: Metadata = Field(default_factory=dict)

    @field_validator("currency")
    @classmethod
    def _cur(cls, value: str) -> str:
        try:
            return normalize_currency(value)
        except MoneyError as exc:
            raise ValueError(str(exc)) from exc


# -- public answers that are not the owning component's model as is ----------------------


class User(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "usr_01JD5Q7A1B2C3D4E5F6G7H8J9K",
                    "object": "user",
                    "email": "alice@example.com",
                    "name": "Alice",
                    "role": "user",
                    "created_at": "2025-01-31T11:59:00+00:00",
                }
            ]
        }
    )

    id: str
    object: Literal["user"] = "user"
    email: str
    name: str
    role: Literal["user", "admin"]
    created_at: str


class Session(BaseModel):
    """A login: the user, a short-lived access token and a single-use refresh token."""

    user: User
    access_token: str = Field(description="Send as 'Authorization: Bearer <access_token>'.")
    refresh_token: str = Field(description="Single use: POST /api/v1/auth/refresh.")
    token_type: Literal["Bearer"]
    expires_in: int = Field(description="Seconds the access token is valid.", examples=[900])


class WalletBalance(BaseModel):
    """A wallet as users see it (the ledger's ``Wallet`` without the account's raw sums)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "wal_usr_01JD5Q7A1B2C3D4E5F6G7H8J9K_USD",
                    "object": "wallet",
                    "currency": "USD",
                    "available_minor": 2000,
                    "pending_minor": 0,
                    "posted_minor": 2000,
                }
            ]
        }
    )

    id: str = Field(description="The wallet's ledger account.")
    object: Literal["wallet"] = "wallet"
    currency: str
    available_minor: int = Field(description="What can be sent or refunded now.")
    pending_minor: int = Field(description="Authorized card payments not yet captured.")
    posted_minor: int


class WalletBalances(BaseModel):
    object: Literal["list"] = "list"
    data: list[WalletBalance]
    has_more: Literal[False] = False


class WebhookReceived(BaseModel):
    received: Literal[True]
    status: Literal["processed", "duplicate"]


class FieldProblem(BaseModel):
    field: str = Field(description="Where: a body field (dotted), a query or header name.")
    message: str
    type: str


class ProblemDetail(BaseModel):
    """An error (RFC 9457, ``application/problem+json``). ``code`` is stable: branch on it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "https://pocketpay.dev/errors/ledger.insufficient_funds",
                    "title": "Insufficient funds",
                    "status": 422,
                    "detail": "The wallet holds less than the amount.",
                    "code": "ledger.insufficient_funds",
                    "request_id": "5f0c2d3e9a8b4c7d8e9f0a1b2c3d4e5f",
                }
            ]
        }
    )

    type: str = Field(description="https://pocketpay.dev/errors/<code>")
    title: str
    status: int
    detail: str = Field(description="What went wrong and what to change.")
    code: str = Field(description="Stable machine-readable code, `area.reason`.")
    request_id: str | None = Field(description="Quote it when asking for help.")
    errors: list[FieldProblem] | None = Field(
        default=None, description="Validation errors, one per field."
    )


class DeadLetter(BaseModel):
    """An event a consumer gave up on (operators: ``/api/v1/admin/dead-letters``)."""

    id: str
    object: Literal["dead_letter"] = "dead_letter"
    consumer: str
    event_id: str
    type: str = Field(description="The event type (bus subject).")
    error: str | None
    deliveries: int
    created_at: str
    replayed_at: str | None


class DeadLetters(BaseModel):
    object: Literal["list"] = "list"
    data: list[DeadLetter]


class DeadLetterReplayed(BaseModel):
    id: str
    replayed: Literal[True]
