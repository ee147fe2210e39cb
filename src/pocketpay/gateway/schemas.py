"""Public request bodies (unknown fields are rejected) and the public answers that are not
an owning component's model as is."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StrictInt, field_validator

from pocketpay.kit.money import MAX_AMOUNT_MINOR, MoneyError, normalize_currency

# Free text is stored in PostgreSQL text columns, which cannot hold NUL: refuse it at the
# door (a 422) rather than fail in the database (a 500).
NO_NUL = r"^[^\x00]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignupIn(_Strict):
    email: EmailStr
    password: str = Field(min_length=10, max_length=256)
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)


class LoginIn(_Strict):
    email: EmailStr
    password: str = Field(min_length=1, max_length=256)


class RefreshIn(_Strict):
    refresh_token: str = Field(min_length=1, max_length=200)


class TransferCreate(_Strict):
    recipient: EmailStr
    amount_minor: StrictInt = Field(gt=0, le=MAX_AMOUNT_MINOR)
    currency: str = Field(min_length=3, max_length=3)
    note: str = Field(default="", max_length=500, pattern=NO_NUL)

    @field_validator("currency")
    @classmethod
    def _cur(cls, value: str) -> str:
        try:
            return normalize_currency(value)
        except MoneyError as exc:
            raise ValueError(str(exc)) from exc


# -- public answers that are not the owning component's model as is ----------------------


class WalletBalance(BaseModel):
    """A wallet as users see it (the ledger's ``Wallet`` without the account's raw sums)."""

    currency: str
    available_minor: int
    pending_minor: int
    posted_minor: int


class WalletBalances(BaseModel):
    data: list[WalletBalance]


class WebhookReceived(BaseModel):
    received: Literal[True]
    status: Literal["processed", "duplicate"]
