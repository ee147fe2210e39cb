"""Request bodies and typed answers of the ledger's internal API (``LedgerClient`` returns
the answers)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pocketpay.kit.listing import Page
from pocketpay.kit.metadata import Metadata
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
    metadata: Metadata = Field(default_factory=dict)


class TransferListQuery(Page):
    """``GET /transfers``: the page window and the filters."""

    currency: str | None = None


class TransferListInternal(TransferListQuery):
    owner_id: str


class CollectionIn(_Strict):
    """``POST /collections``: take ``amount_minor`` from the owner's wallet into revenue, as
    the posted transfer ``transfer_id`` (chosen by the caller, e.g. billing's
    ``inv_pay:<charge>``, so a retry is a no-op)."""

    owner_id: str = Field(min_length=1, max_length=60)
    transfer_id: str = Field(min_length=1, max_length=120)
    amount_minor: int = Field(gt=0, le=MAX_AMOUNT_MINOR, strict=True)
    currency: str = Field(min_length=3, max_length=3)
    reference: str = Field(min_length=1, max_length=255)


class RefundHoldIn(_Strict):
    refund_id: str
    payment_id: str
    owner_id: str
    amount_minor: int = Field(gt=0, le=MAX_AMOUNT_MINOR)
    currency: str = Field(min_length=3, max_length=3)


# -- answers (what LedgerClient returns) ---------------------------------------------------
# Timestamps are ISO 8601 strings with an explicit offset, as the views write them.


class RefundHeld(BaseModel):
    status: Literal["held"]


class PayoutHoldIn(_Strict):
    payout_id: str = Field(min_length=1, max_length=40)
    owner_id: str = Field(min_length=1, max_length=60)
    amount_minor: int = Field(gt=0, le=MAX_AMOUNT_MINOR)
    currency: str = Field(min_length=3, max_length=3)


class PayoutHeld(BaseModel):
    status: Literal["held"]


class Collection(BaseModel):
    """A collection: money taken from a user's wallet into revenue (``wallet_transfers.collect``;
    also the data of ``ledger.collection.posted``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "inv_pay:ch_01JD5QC7R8S9T0V1W2X3Y4Z5AC",
                    "object": "collection",
                    "status": "posted",
                    "owner_id": "usr_01JD5Q7A1B2C3D4E5F6G7H8J9K",
                    "amount_minor": 1500,
                    "currency": "USD",
                    "reference": "in_01JD5QC7R8S9T0V1W2X3Y4Z5AB",
                    "created_at": "2025-01-31T12:10:00+00:00",
                }
            ]
        }
    )

    id: str = Field(description="The caller's transfer id.")
    object: Literal["collection"]
    status: Literal["posted"]
    owner_id: str
    amount_minor: int
    currency: str
    reference: str = Field(description="The caller's reference (billing: the invoice id).")
    created_at: str


class Wallet(BaseModel):
    """A wallet's figures: posted = credits_posted - debits_posted, pending = credits_pending
    - debits_pending, available = posted - debits_pending. A debt account (``account_type``
    debt, from ``wallet_at``) has the same figures, negative: posted = -debt."""

    account_id: str
    account_type: Literal["wallet", "debt"] = "wallet"
    currency: str
    available_minor: int
    pending_minor: int
    posted_minor: int
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int
    debt_minor: int = Field(
        default=0,
        description="What the owner owes in this currency (a dispute the wallet could not "
        "cover); repaid first by the next credits.",
    )
    debt_account_id: str | None = Field(
        default=None, description="The owner's debt account in this currency; null: never owed."
    )


class WalletOpenIn(_Strict):
    owner_id: str = Field(min_length=1, max_length=60)
    currency: str = Field(min_length=3, max_length=3)


class WalletList(BaseModel):
    data: list[Wallet]


class Transfer(BaseModel):
    """A user-to-user transfer (``wallet_transfers.view``; also the data of
    ``ledger.transfer.posted``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "tr_01JD5QC7R8S9T0V1W2X3Y4Z5AB",
                    "object": "transfer",
                    "status": "posted",
                    "amount_minor": 1000,
                    "amount": "10.00",
                    "currency": "USD",
                    "sender_id": "usr_01JD5Q7A1B2C3D4E5F6G7H8J9K",
                    "recipient_id": "usr_01JD5Q8M1N2P3Q4R5S6T7V8W9X",
                    "sender_email": "alice@example.com",
                    "recipient_email": "bob@example.com",
                    "note": "Lunch",
                    "metadata": {},
                    "created_at": "2025-01-31T12:10:00+00:00",
                }
            ]
        }
    )

    id: str
    object: Literal["transfer"]
    status: Literal["posted"]
    amount_minor: int
    amount: str = Field(description='amount_minor in major units, exactly ("10.00").')
    currency: str
    sender_id: str | None
    recipient_id: str | None
    sender_email: str | None
    recipient_email: str | None
    note: str
    metadata: dict[str, str]
    created_at: str


class TransferList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Transfer]
    has_more: bool = Field(description="More objects lie beyond data, in the page's direction.")
    next_cursor: str | None = Field(
        description="When has_more: the id to pass as starting_after (or as ending_before, "
        "when this page was asked with ending_before) for the next page."
    )


class Entry(BaseModel):
    """One ledger transfer as seen from a wallet (debit or credit side)."""

    id: str
    seq: int
    code: str = Field(
        description="Why the money moved: card_authorization, card_capture, settlement, "
        "refund, wallet_transfer, invoice_from_wallet, fx_sell, fx_fee, fx_buy, payout, "
        "dispute_hold, dispute_debt, dispute_reinstate, dispute_loss or debt_repayment."
    )
    kind: str = Field(description="posted, pending, post_pending or void_pending.")
    direction: Literal["credit", "debit"]
    amount_minor: int
    amount: str = Field(description='amount_minor in major units, exactly ("12.34").')
    currency: str
    pending_state: str | None
    created_at: str
    payment_id: str | None
    note: str | None


class EntryListInternal(Page):
    """The internal entries route's query: the page (cursors are entries' seq) and whose."""

    owner_id: str


class EntryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Entry]
    has_more: bool
    next_cursor: str | None = Field(description="The last seq of data (a string) when has_more.")


class Backlog(BaseModel):
    consumer: str
    pending: int = Field(description="Events not yet handled by the ledger's consumer.")
    oldest_age_seconds: float


class FxQuoteIn(_Strict):
    """``POST /fx/quotes``: exactly one of the two amounts is fixed; the other is priced."""

    sell_currency: str = Field(min_length=3, max_length=3)
    buy_currency: str = Field(min_length=3, max_length=3)
    sell_amount_minor: int | None = Field(default=None, gt=0, le=MAX_AMOUNT_MINOR, strict=True)
    buy_amount_minor: int | None = Field(default=None, gt=0, le=MAX_AMOUNT_MINOR, strict=True)


class ConversionIn(_Strict):
    owner_id: str = Field(min_length=1, max_length=60)
    quote_id: str = Field(min_length=1, max_length=40)


class ConversionListInternal(Page):
    owner_id: str


class FxQuote(BaseModel):
    id: str
    object: Literal["fx_quote"] = "fx_quote"
    sell_currency: str
    buy_currency: str
    sell_amount_minor: int = Field(description="Leaves the sell wallet: converted plus fee.")
    buy_amount_minor: int = Field(description="Reaches the buy wallet.")
    fee_minor: int = Field(description="In the sell currency; includes rounding remainders.")
    rate: str = Field(description="Units of buy_currency per unit of sell_currency (exact).")
    rate_source: str
    status: Literal["open", "expired", "converted"]
    conversion_id: str | None
    created_at: str
    expires_at: str


class Conversion(BaseModel):
    id: str
    object: Literal["conversion"] = "conversion"
    quote_id: str
    sell_currency: str
    buy_currency: str
    sell_amount_minor: int
    buy_amount_minor: int
    fee_minor: int
    rate: str
    created_at: str


class ConversionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Conversion]
    has_more: bool
    next_cursor: str | None = None


class FxRates(BaseModel):
    base: str
    as_of: str
    source: str
    rates: dict[str, str] = Field(description="Units of each currency per one unit of base.")
