"""Request bodies of the ledger's internal API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from pocketpay.kit.money import MAX_AMOUNT_MINOR


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WalletTransferIn(_Strict):
    # The sender's Idempotency-Key: the transfer id is derived from (sender, key).
    idempotency_key: str = Field(min_length=1, max_length=255)
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
