"""Public request bodies (unknown fields are rejected) and the public answers that are not
an owning component's model as is."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StrictInt,
    field_validator,
    model_validator,
)

from pocketpay.kit.metadata import Metadata
from pocketpay.kit.money import MAX_AMOUNT_MINOR, MoneyError, normalize_currency, parse_decimal

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


# A wallet's ledger account id, as GET /accounts shows it: wal_<user id>_<currency>.
WALLET_ACCOUNT = re.compile(r"^wal_(usr_[0-9A-Za-z]{26})_([A-Z]{3})$")


def wallet_owner(account_id: str) -> tuple[str, str] | None:
    """(owner user id, currency) of a wallet account id, or None."""
    found = WALLET_ACCOUNT.fullmatch(account_id)
    return (found.group(1), found.group(2)) if found else None


class TransferCreate(_Strict):
    """Who gets the money (``recipient`` or ``destination_account_id``) and how much
    (``amount_minor`` or ``amount``). The currency is ``currency`` or that of the accounts
    named; all given must agree."""

    recipient: EmailStr | None = Field(
        default=None,
        description="The email of the PocketPay user who receives the money.",
        examples=["bob@example.com"],
    )
    destination_account_id: str | None = Field(
        default=None,
        max_length=64,
        description="Or the recipient's account id (a wallet: wal_<user>_<CUR>).",
    )
    source_account_id: str | None = Field(
        default=None, max_length=64, description="Your account to send from (optional)."
    )
    amount_minor: StrictInt | None = Field(default=None, gt=0, le=MAX_AMOUNT_MINOR, examples=[1000])
    amount: str | None = Field(
        default=None,
        max_length=32,
        description='Or the amount in major units, exactly: "10.00" (no more decimals than '
        "the currency has).",
        examples=["10.00"],
    )
    currency: str | None = Field(default=None, min_length=3, max_length=3, examples=["USD"])
    note: str = Field(default="", max_length=500, pattern=NO_NUL, examples=["Lunch"])
    metadata: Metadata = Field(default_factory=dict)

    @field_validator("currency")
    @classmethod
    def _cur(cls, value: str | None) -> str | None:
        try:
            return None if value is None else normalize_currency(value)
        except MoneyError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("source_account_id", "destination_account_id")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        if value is not None and wallet_owner(value) is None:
            raise ValueError("not an account id: use the id of a wallet from GET /accounts")
        return value

    @model_validator(mode="after")
    def _resolve(self) -> TransferCreate:
        if (self.recipient is None) == (self.destination_account_id is None):
            raise ValueError("send the recipient (an email) or destination_account_id: one")
        named = [self.source_account_id, self.destination_account_id]
        currencies = {self.currency} | {o[1] for a in named if a and (o := wallet_owner(a))}
        currencies.discard(None)
        if len(currencies) != 1:
            raise ValueError(
                "currency is required unless an account id gives it"
                if not currencies
                else "currency and the accounts named must be in one currency"
            )
        currency = currencies.pop()
        assert currency is not None
        self.currency = currency
        if (self.amount_minor is None) == (self.amount is None):
            raise ValueError("send amount_minor or amount (a decimal string): one of them")
        if self.amount is not None:
            try:
                self.amount_minor = parse_decimal(self.amount, currency)
            except MoneyError as exc:
                raise ValueError(str(exc)) from exc
        return self


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
                    "debt_minor": 0,
                    "debt_account_id": None,
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
    debt_minor: int = Field(
        default=0,
        description="What you owe in this currency (a disputed payment the wallet could no "
        "longer cover); your next credits repay it first.",
    )
    debt_account_id: str | None = Field(
        default=None, description="Your debt account in this currency; null: you never owed."
    )


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
