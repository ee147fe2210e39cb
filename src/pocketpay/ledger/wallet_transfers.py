"""Money out of a wallet as one posted ledger transfer plus an event, in the caller's unit of
work: user-to-user transfers (``send``) and collections into revenue (``collect``: an invoice
paid from the wallet). Both go through ``_from_wallet``, so both are held by the same guard."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from pocketpay.kit.clock import aware
from pocketpay.kit.errors import KeyReused
from pocketpay.kit.ids import derive_id
from pocketpay.kit.listing import fetch_page
from pocketpay.kit.money import decimal_string
from pocketpay.kit.outbox import add_event
from pocketpay.ledger import service
from pocketpay.ledger.chart import (
    TransferCode,
    parse_account_id,
    system_account_id,
    wallet_account_id,
)
from pocketpay.ledger.errors import InvalidTransfer, TransferIdConflict, TransferNotFound
from pocketpay.ledger.models import outbox, transfers
from pocketpay.ledger.schemas import (
    CollectionIn,
    PayoutHoldIn,
    TransferListQuery,
    WalletTransferIn,
)


def view(row: Row[Any]) -> dict[str, Any]:
    data = row.user_data or {}
    return {
        "id": row.id,
        "object": "transfer",
        "status": "posted",
        "amount_minor": row.amount_minor,
        "amount": decimal_string(row.amount_minor, row.currency),
        "currency": row.currency,
        "sender_id": data.get("sender_id"),
        "recipient_id": data.get("recipient_id"),
        "sender_email": data.get("sender_email"),
        "recipient_email": data.get("recipient_email"),
        "note": data.get("note", ""),
        "metadata": data.get("metadata", {}),
        "created_at": aware(row.created_at).isoformat(),
    }


async def send(conn: AsyncConnection, body: WalletTransferIn, now: datetime) -> dict[str, Any]:
    if body.sender_id == body.recipient_id:
        raise InvalidTransfer("You cannot send money to yourself.", code="ledger.self_transfer")
    transfer_id = derive_id("tr", body.sender_id, body.idempotency_key)
    reused = KeyReused("This Idempotency-Key already made a transfer with other details.")
    try:
        # A replay returns the row the first request made (nothing is applied twice).
        row = await _post(conn, transfer_id, body, now)
    except TransferIdConflict as exc:
        raise reused from exc
    data = row.user_data or {}
    if data.get("note", "") != body.note or data.get("metadata", {}) != body.metadata:
        raise reused
    result = view(row)
    await add_event(
        conn, outbox, "ledger.transfer.posted", result, now, event_id=f"evt_{transfer_id}"
    )
    return result


async def _post(
    conn: AsyncConnection, transfer_id: str, body: WalletTransferIn, now: datetime
) -> Row[Any]:
    return await _from_wallet(
        conn,
        service.TransferRequest(
            id=transfer_id,
            debit_account_id=wallet_account_id(body.sender_id, body.currency),
            credit_account_id=wallet_account_id(body.recipient_id, body.currency),
            amount_minor=body.amount_minor,
            currency=body.currency,
            code=TransferCode.WALLET_TRANSFER,
            user_data={
                "sender_id": body.sender_id,
                "recipient_id": body.recipient_id,
                "sender_email": body.sender_email,
                "recipient_email": body.recipient_email,
                "note": body.note,
                "metadata": body.metadata,
            },
        ),
        now,
    )


async def _from_wallet(
    conn: AsyncConnection, req: service.TransferRequest, now: datetime
) -> Row[Any]:
    """Post ``req``, whose debit side is a wallet: the new row, or the row an identical
    earlier request made (a replay; ``TransferIdConflict`` if the id holds other accounts,
    amount, currency or code). The wallet's debit is ``service.create_transfer``'s guarded
    UPDATE (``available >= amount`` in the statement itself), so concurrent transfers and
    collections from one wallet never overdraw it; refused, it raises ``InsufficientFunds``
    and leaves no transfer and no balance change (the entrypoint rolls back anyway)."""
    assert req.debit_account_id.startswith("wal_") and not req.pending, req
    return await service.create_transfer(conn, req, now)


async def collect(conn: AsyncConnection, body: CollectionIn, now: datetime) -> dict[str, Any]:
    """Take ``body.amount_minor`` from the owner's wallet into ``sys_revenue_<CUR>`` as the
    posted transfer ``body.transfer_id`` and write ``ledger.collection.posted`` (event id
    derived from the transfer id: a replay or a racing duplicate writes no second one). The
    same id with the same values returns the original; with any other value (owner, amount,
    currency, reference) it is ``TransferIdConflict``."""
    row = await _from_wallet(
        conn,
        service.TransferRequest(
            id=body.transfer_id,
            debit_account_id=wallet_account_id(body.owner_id, body.currency),
            credit_account_id=system_account_id("revenue", body.currency),
            amount_minor=body.amount_minor,
            currency=body.currency,
            code=TransferCode.INVOICE_FROM_WALLET,
            user_data={"reference": body.reference},
        ),
        now,
    )
    if (row.user_data or {}).get("reference") != body.reference:
        raise TransferIdConflict(f"transfer id {body.transfer_id} exists with other values")
    result = _collection_view(row)
    event_id = derive_id("evt", body.transfer_id)  # the outbox's event ids are 40 characters
    await add_event(conn, outbox, "ledger.collection.posted", result, now, event_id=event_id)
    return result


def _collection_view(row: Row[Any]) -> dict[str, Any]:
    _, owner_id, _ = parse_account_id(row.debit_account_id)
    return {
        "id": row.id,
        "object": "collection",
        "status": "posted",
        "owner_id": owner_id,
        "amount_minor": row.amount_minor,
        "currency": row.currency,
        "reference": (row.user_data or {})["reference"],
        "created_at": aware(row.created_at).isoformat(),
    }


def _mine(owner_id: str) -> Any:
    t = transfers.c
    return and_(
        t.code == int(TransferCode.WALLET_TRANSFER),
        t.kind == "posted",
        or_(
            t.debit_account_id.like(f"wal\\_{owner_id}\\_%", escape="\\"),
            t.credit_account_id.like(f"wal\\_{owner_id}\\_%", escape="\\"),
        ),
    )


async def get(conn: AsyncConnection, owner_id: str, transfer_id: str) -> dict[str, Any]:
    row = (
        await conn.execute(select(transfers).where(transfers.c.id == transfer_id, _mine(owner_id)))
    ).first()
    if row is None:
        raise TransferNotFound(f"No transfer {transfer_id}.", code="not_found")
    return view(row)


async def list_for(
    conn: AsyncConnection, owner_id: str, query: TransferListQuery
) -> tuple[list[dict[str, Any]], bool]:
    t = transfers.c
    filters = [t.currency == query.currency] if query.currency else []
    scope = select(transfers).where(_mine(owner_id))
    rows, more = await fetch_page(
        conn, scope, filters, [t.seq], t.id, t.created_at, query, "transfer"
    )
    return [view(r) for r in rows], more


async def refund_hold(
    conn: AsyncConnection,
    refund_id: str,
    payment_id: str,
    owner_id: str,
    amount_minor: int,
    currency: str,
    now: datetime,
) -> None:
    """Reserve a refund's amount in the wallet before the PSP is asked to refund."""
    from pocketpay.ledger.chart import system_account_id
    from pocketpay.ledger.consumers import refund_hold_id

    await service.create_transfer(
        conn,
        service.TransferRequest(
            id=refund_hold_id(refund_id),
            debit_account_id=wallet_account_id(owner_id, currency),
            credit_account_id=system_account_id("psp_receivable", currency),
            amount_minor=amount_minor,
            currency=currency,
            code=TransferCode.REFUND,
            pending=True,
            user_data={"payment_id": payment_id, "refund_id": refund_id},
        ),
        now,
    )


async def payout_hold(
    conn: AsyncConnection, body: PayoutHoldIn, currency: str, now: datetime
) -> None:
    """Hold a payout's amount in the wallet (guarded: ``InsufficientFunds`` holds nothing)
    before the PSP is asked to pay it out; the same request again is a no-op."""
    from pocketpay.ledger.consumers import payout_hold_request

    await service.create_transfer(
        conn, payout_hold_request(body.payout_id, body.owner_id, body.amount_minor, currency), now
    )


def not_found(transfer_id: str) -> TransferNotFound:
    return TransferNotFound(f"No transfer {transfer_id}.")
