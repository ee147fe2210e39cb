"""Request bodies of the ledger's internal API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pocketpay.kit.money import MAX_AMOUNT_MINOR


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TransferIn(_Strict):
    id: str = Field(min_length=1, max_length=120)
    debit_account_id: str
    credit_account_id: str
    amount_minor: int = Field(gt=0, le=MAX_AMOUNT_MINOR)
    currency: str = Field(min_length=3, max_length=3)
    code: int
    pending: bool = False
    user_data: dict[str, Any] = Field(default_factory=dict)


class ResolveIn(_Strict):
    id: str = Field(min_length=1, max_length=120)
    amount_minor: int | None = Field(default=None, gt=0, le=MAX_AMOUNT_MINOR)
    user_data: dict[str, Any] = Field(default_factory=dict)


class WalletTransferIn(_Strict):
    id: str = Field(min_length=1, max_length=120)
    sender_id: str
    recipient_id: str
    recipient_email: str = ""
    sender_email: str = ""
    amount_minor: int = Field(gt=0, le=MAX_AMOUNT_MINOR)
    currency: str = Field(min_length=3, max_length=3)
    note: str = Field(default="", max_length=500)


class RefundHoldIn(_Strict):
    refund_id: str
    payment_id: str
    owner_id: str
    amount_minor: int = Field(gt=0, le=MAX_AMOUNT_MINOR)
    currency: str = Field(min_length=3, max_length=3)
