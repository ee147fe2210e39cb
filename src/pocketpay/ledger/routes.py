"""The ledger's internal API over HTTP: each route parses the request and calls ``LedgerApi``
(``ledger.api``), the same object other components call directly when they share this
process. Mounted by ``ledger.app`` behind the internal token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from pocketpay.ledger.api import LedgerApi
from pocketpay.ledger.schemas import (
    Backlog,
    Collection,
    CollectionIn,
    EntryList,
    EntryListInternal,
    RefundHeld,
    RefundHoldIn,
    Transfer,
    TransferList,
    TransferListInternal,
    WalletList,
    WalletTransferIn,
)


def build_router(api: LedgerApi) -> APIRouter:
    r = APIRouter()

    @r.post("/refund-holds", response_model=RefundHeld)
    async def refund_hold(body: RefundHoldIn) -> RefundHeld:
        return await api.refund_hold(**body.model_dump())

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

    @r.get("/health/backlog", response_model=Backlog)
    async def backlog() -> Backlog:
        return await api.backlog()

    return r
