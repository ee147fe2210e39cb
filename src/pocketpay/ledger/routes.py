"""The ledger's internal API: thin routes over the service and the wallet transfers. Every
answer is a model of ``ledger.schemas`` (what ``LedgerClient`` returns). Mounted by
``ledger.app`` behind the internal token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.bus import Bus
from pocketpay.kit.clock import Clock
from pocketpay.kit.failpoints import failpoint
from pocketpay.kit.metrics import CONSUMER_LAG, CONSUMER_PENDING
from pocketpay.kit.money import MoneyError, normalize_currency
from pocketpay.kit.outbox import OutboxRelay
from pocketpay.ledger import service, wallet_transfers
from pocketpay.ledger.chart import wallet_account_id
from pocketpay.ledger.errors import InvalidTransfer
from pocketpay.ledger.schemas import (
    Backlog,
    Entry,
    EntryList,
    RefundHeld,
    RefundHoldIn,
    Transfer,
    TransferList,
    Wallet,
    WalletList,
    WalletTransferIn,
)

DURABLE = "ledger"  # the durable name of the ledger's event consumer


def _currency(code: str) -> str:
    try:
        return normalize_currency(code)
    except MoneyError as exc:
        raise InvalidTransfer(str(exc), code="validation.unknown_currency") from exc


def build_router(engine: AsyncEngine, clock: Clock, relay: OutboxRelay, bus: Bus) -> APIRouter:
    r = APIRouter()

    @r.post("/refund-holds", response_model=RefundHeld)
    async def refund_hold(body: RefundHoldIn) -> RefundHeld:
        async with engine.begin() as conn:
            await wallet_transfers.refund_hold(
                conn,
                body.refund_id,
                body.payment_id,
                body.owner_id,
                body.amount_minor,
                _currency(body.currency),
                clock.now(),
            )
        return RefundHeld(status="held")

    @r.post("/wallet-transfers", status_code=201, response_model=Transfer)
    async def send(body: WalletTransferIn) -> Transfer:
        body = body.model_copy(update={"currency": _currency(body.currency)})
        async with engine.begin() as conn:
            result = await wallet_transfers.send(conn, body, clock.now())
        relay.notify()
        await failpoint("ledger.transfer.after_commit")
        return Transfer.model_validate(result)

    @r.get("/wallet-transfers", response_model=TransferList)
    async def list_transfers(
        owner_id: str, limit: int = Query(20, ge=1, le=100), starting_after: str | None = None
    ) -> TransferList:
        async with engine.connect() as conn:
            rows, more = await wallet_transfers.list_for(conn, owner_id, limit, starting_after)
        data = [Transfer.model_validate(t) for t in rows]
        return TransferList(data=data, has_more=more, next_cursor=data[-1].id if more else None)

    @r.get("/wallet-transfers/{transfer_id}", response_model=Transfer)
    async def get_transfer(transfer_id: str, owner_id: str) -> Transfer:
        async with engine.connect() as conn:
            return Transfer.model_validate(await wallet_transfers.get(conn, owner_id, transfer_id))

    @r.get("/wallets", response_model=WalletList)
    async def wallets(owner_id: str) -> WalletList:
        async with engine.connect() as conn:
            rows = await service.wallets(conn, owner_id)
        return WalletList(data=[_wallet(b) for b in rows])

    @r.get("/wallets/{currency}/entries", response_model=EntryList)
    async def entries(
        currency: str,
        owner_id: str,
        limit: int = Query(20, ge=1, le=100),
        starting_after: int | None = Query(None, ge=0),
    ) -> EntryList:
        cur = _currency(currency)
        async with engine.connect() as conn:
            rows = await service.entries(conn, owner_id, cur, limit + 1, starting_after)
        acct = wallet_account_id(owner_id, cur)
        data = [_entry(service.transfer_dict(r), acct) for r in rows[:limit]]
        more = len(rows) > limit
        return EntryList(data=data, has_more=more, next_cursor=str(data[-1].seq) if more else None)

    @r.get("/health/backlog", response_model=Backlog)
    async def backlog() -> Backlog:
        pending, age = await bus.lag(DURABLE)
        CONSUMER_LAG.labels(DURABLE).set(age)
        CONSUMER_PENDING.labels(DURABLE).set(pending)
        return Backlog(consumer=DURABLE, pending=pending, oldest_age_seconds=round(age, 3))

    return r


def _wallet(b: service.Balance) -> Wallet:
    return Wallet(
        account_id=b.account_id,
        currency=b.currency,
        available_minor=b.available_minor,
        pending_minor=b.pending_minor,
        posted_minor=b.posted_minor,
        debits_pending=b.debits_pending,
        debits_posted=b.debits_posted,
        credits_pending=b.credits_pending,
        credits_posted=b.credits_posted,
    )


def _entry(t: dict[str, Any], account_id: str) -> Entry:
    credit = t["credit_account_id"] == account_id
    return Entry(
        id=t["id"],
        seq=t["seq"],
        code=t["code"],
        kind=t["kind"],
        direction="credit" if credit else "debit",
        amount_minor=t["amount_minor"],
        currency=t["currency"],
        pending_state=t["pending_state"],
        created_at=t["created_at"],
        payment_id=t["user_data"].get("payment_id"),
        note=t["user_data"].get("note"),
    )
