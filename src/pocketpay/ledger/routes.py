"""The ledger's internal API over HTTP: each route parses the request and calls ``LedgerApi``
(``ledger.api``), the same object other components call directly when they share this
process. Mounted by ``ledger.app`` behind the internal token."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from pocketpay.ledger.api import LedgerApi
from pocketpay.ledger.schemas import (
    Backlog,
    Collection,
    CollectionIn,
    Conversion,
    ConversionIn,
    ConversionList,
    ConversionListInternal,
    EntryList,
    EntryListInternal,
    FxQuote,
    FxRates,
    PayoutHeld,
    PayoutHoldIn,
    RefundHeld,
    RefundHoldIn,
    Transfer,
    TransferList,
    TransferListInternal,
    Wallet,
    WalletList,
    WalletOpenIn,
    WalletTransferIn,
)


def build_router(api: LedgerApi) -> APIRouter:
    r = APIRouter()

    @r.post("/refund-holds", response_model=RefundHeld)
    async def refund_hold(body: RefundHoldIn) -> RefundHeld:
        return await api.refund_hold(**body.model_dump())

    @r.post("/payout-holds", response_model=PayoutHeld)
    async def payout_hold(body: PayoutHoldIn) -> PayoutHeld:
        return await api.payout_hold(**body.model_dump())

    @r.post("/wallet-transfers", status_code=201, response_model=Transfer)
    async def send(body: WalletTransferIn) -> Transfer:
        return await api.send(body.model_dump())

    @r.post("/collections", status_code=201, response_model=Collection)
    async def collect(body: CollectionIn) -> Collection:
        return await api.collect(**body.model_dump())

    @r.get("/wallet-transfers", response_model=TransferList)
    async def list_transfers(query: Annotated[TransferListInternal, Query()]) -> TransferList:
        return await api.list_transfers(query.owner_id, query)

    @r.get("/wallet-transfers/{transfer_id}", response_model=Transfer)
    async def get_transfer(transfer_id: str, owner_id: str) -> Transfer:
        return await api.get_transfer(owner_id, transfer_id)

    @r.get("/wallets", response_model=WalletList)
    async def wallets(owner_id: str) -> WalletList:
        return await api.wallets(owner_id)

    @r.get("/wallets/{currency}/entries", response_model=EntryList)
    async def entries(currency: str, query: Annotated[EntryListInternal, Query()]) -> EntryList:
        return await api.entries(query.owner_id, currency, query)

    @r.get("/accounts/{account_id}/entries", response_model=EntryList)
    async def account_entries(
        account_id: str, query: Annotated[EntryListInternal, Query()]
    ) -> EntryList:
        return await api.account_entries(query.owner_id, account_id, query)

    @r.get("/health/backlog", response_model=Backlog)
    async def backlog() -> Backlog:
        return await api.backlog()

    @r.get("/fx/rates", response_model=FxRates)
    async def fx_rates() -> FxRates:
        return await api.fx_rates()

    @r.post("/fx/quotes", status_code=201, response_model=FxQuote)
    async def create_fx_quote(owner_id: str, body: dict[str, Any]) -> FxQuote:
        return await api.create_fx_quote(owner_id, body)

    @r.get("/fx/quotes/{quote_id}", response_model=FxQuote)
    async def get_fx_quote(quote_id: str, owner_id: str) -> FxQuote:
        return await api.get_fx_quote(owner_id, quote_id)

    @r.post("/conversions", status_code=201, response_model=Conversion)
    async def convert(body: ConversionIn) -> Conversion:
        return await api.convert(body.owner_id, body.quote_id)

    @r.get("/conversions", response_model=ConversionList)
    async def list_conversions(query: Annotated[ConversionListInternal, Query()]) -> ConversionList:
        return await api.list_conversions(query.owner_id, query)

    @r.get("/accounts/{account_id}/balance", response_model=Wallet)
    async def wallet_at(account_id: str, owner_id: str, at: datetime | None = None) -> Wallet:
        return await api.wallet_at(owner_id, account_id, at)

    @r.post("/accounts", response_model=Wallet)
    async def open_wallet(body: WalletOpenIn) -> Wallet:
        return await api.open_wallet(body.owner_id, body.currency)

    @r.get("/conversions/{conversion_id}", response_model=Conversion)
    async def get_conversion(conversion_id: str, owner_id: str) -> Conversion:
        return await api.get_conversion(owner_id, conversion_id)

    return r
