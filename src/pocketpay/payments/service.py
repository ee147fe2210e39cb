"""Payment records and their state changes. Functions take the caller's connection; every
state change writes the timeline row and the outbox event in that same transaction."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from pocketpay.kit.clock import iso
from pocketpay.kit.db import insert_ignore
from pocketpay.kit.errors import KeyReused
from pocketpay.kit.ids import derive_id
from pocketpay.kit.listing import Page, fetch_page
from pocketpay.kit.metrics import PAYMENTS
from pocketpay.kit.outbox import add_event
from pocketpay.payments.errors import InvalidTransition, PaymentNotFound
from pocketpay.payments.models import disputes, outbox, payments, payouts, refunds, timeline
from pocketpay.payments.schemas import PaymentListQuery
from pocketpay.payments.states import PaymentStatus, can_transition

# Statements built once; values are bound at execution (see kit.db.insert_ignore).
_INSERT_TIMELINE = insert(timeline)
_SET_FIELDS = update(payments).where(payments.c.id == bindparam("w_id"))
# A status move, conditional on the status read; RETURNING gives the row it made.
_MOVE = (
    update(payments)
    .where(payments.c.id == bindparam("w_id"), payments.c.status == bindparam("w_status"))
    .returning(*payments.c)
)


def payment_view(row: Row[Any] | Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "payment",
        "status": row.status,
        "amount_minor": row.amount_minor,
        "currency": row.currency,
        "amount_captured_minor": row.amount_captured_minor,
        "amount_refunded_minor": row.amount_refunded_minor,
        "capture_method": row.capture_method,
        "payment_method": row.payment_method,
        "description": row.description,
        "metadata": row.metadata,
        "failure_code": row.failure_code,
        "failure_message": row.failure_message,
        "provider": row.provider,
        "purpose": row.purpose,
        "reference": row.reference,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def refund_view(row: Row[Any] | Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "refund",
        "payment_id": row.payment_id,
        "amount_minor": row.amount_minor,
        "currency": row.currency,
        "status": row.status,
        "reason": row.reason,
        "failure_code": row.failure_code,
        "metadata": row.metadata,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


async def _owned(
    conn: AsyncConnection, table: Any, object_id: str, owner_id: str | None, what: str
) -> Row[Any]:
    """The row, if it exists and (with ``owner_id``) belongs to that user; another user's id
    is "not found", never "forbidden", so ids cannot be probed."""
    if owner_id is None:
        row = (await conn.execute(_by_id(table), {"w_id": object_id})).first()
    else:
        row = (
            await conn.execute(_by_id_owner(table), {"w_id": object_id, "w_owner": owner_id})
        ).first()
    if row is None:
        raise PaymentNotFound(f"No {what} {object_id}.")
    return row


@functools.cache
def _by_id(table: Any) -> Any:
    return select(table).where(table.c.id == bindparam("w_id"))


@functools.cache
def _by_id_owner(table: Any) -> Any:
    return _by_id(table).where(table.c.owner_id == bindparam("w_owner"))


async def get(conn: AsyncConnection, payment_id: str, owner_id: str | None = None) -> Row[Any]:
    return await _owned(conn, payments, payment_id, owner_id, "payment")


async def create(
    conn: AsyncConnection,
    *,
    idempotency_key: str,
    owner_id: str,
    amount_minor: int,
    currency: str,
    payment_method: str,
    capture_method: str,
    description: str | None,
    metadata: dict[str, str],
    provider: str,
    now: datetime,
    psp_customer_id: str | None = None,
    psp_payment_method: str | None = None,
    purpose: str = "top_up",
    reference: str | None = None,
    off_session: bool = False,
) -> Row[Any]:
    """The payment named by (owner, Idempotency-Key): created once; a retry of the same request
    gets the payment the first one made, a different request with that key is refused. A
    saved payment method comes with the PSP's customer and payment method ids. ``purpose``
    says whose account the money reaches (the ledger reads it from the events)."""
    payment_id = derive_id("pay", owner_id, idempotency_key)
    result = await conn.execute(
        insert_ignore(conn, payments, returning=True),
        {
            "id": payment_id,
            "owner_id": owner_id,
            "amount_minor": amount_minor,
            "currency": currency,
            "status": PaymentStatus.CREATED.value,
            "capture_method": capture_method,
            "amount_captured_minor": 0,
            "amount_refunded_minor": 0,
            "payment_method": payment_method,
            "description": description,
            "metadata": metadata,
            "provider": provider,
            "psp_customer_id": psp_customer_id,
            "psp_payment_method": psp_payment_method,
            "purpose": purpose,
            "reference": reference,
            "off_session": off_session,
            "created_at": now,
            "updated_at": now,
        },
    )
    row = result.first()  # RETURNING: no second round trip to read it back
    if row is None:
        existing = await get(conn, payment_id)
        asked = (
            amount_minor,
            currency,
            payment_method,
            capture_method,
            description,
            metadata,
            purpose,
            reference,
            off_session,
        )
        if asked != (
            existing.amount_minor,
            existing.currency,
            existing.payment_method,
            existing.capture_method,
            existing.description,
            existing.metadata,
            existing.purpose,
            existing.reference,
            existing.off_session,
        ):
            raise KeyReused("This Idempotency-Key already made a payment with other details.")
        return existing
    await _record(conn, row, None, PaymentStatus.CREATED, "api", {}, now)
    return row


async def _timeline_row(
    conn: AsyncConnection,
    payment_id: str,
    before: str | None,
    after: str,
    cause: str,
    detail: dict[str, Any],
    now: datetime,
) -> None:
    await conn.execute(
        _INSERT_TIMELINE,
        {
            "payment_id": payment_id,
            "from_status": before,
            "to_status": after,
            "cause": cause,
            "detail": detail,
            "occurred_at": now,
        },
    )


async def _record(
    conn: AsyncConnection,
    row: Row[Any] | Any,
    before: PaymentStatus | None,
    after: PaymentStatus,
    cause: str,
    detail: dict[str, Any],
    now: datetime,
) -> None:
    """A status change: its timeline row and its event, in the caller's transaction."""
    prior = before.value if before else None
    await _timeline_row(conn, row.id, prior, after.value, cause, detail, now)
    data = payment_view(row) | {"payment_id": row.id, "owner_id": row.owner_id}
    await add_event(conn, outbox, f"payments.payment.{after.value}", data, now)
    PAYMENTS.labels(after.value, row.provider).inc()


async def transition(
    conn: AsyncConnection,
    payment_id: str,
    target: PaymentStatus,
    *,
    cause: str,
    now: datetime,
    detail: dict[str, Any] | None = None,
    strict: bool = True,
    **changes: Any,
) -> Row[Any] | None:
    """Move a payment to ``target`` if the table allows it from its current status.

    The UPDATE is conditional on the status read, so two racing writers cannot both move it.
    ``strict``: raise InvalidTransition on a move the table forbids; otherwise return None
    (PSP events that arrive late or twice are simply not applied).
    """
    row = await get(conn, payment_id)
    current = PaymentStatus(row.status)
    if not can_transition(current, target):
        if strict:
            raise InvalidTransition(
                f"A {current.value} payment cannot become {target.value}.",
            )
        return None
    after = (
        await conn.execute(
            _MOVE,
            {
                "w_id": payment_id,
                "w_status": current.value,
                "status": target.value,
                "updated_at": now,
                **changes,
            },
        )
    ).first()
    if after is None:
        if strict:
            raise InvalidTransition("The payment changed state concurrently; retry.")
        return None
    await _record(conn, after, current, target, cause, detail or {}, now)
    return after


async def set_fields(conn: AsyncConnection, payment_id: str, now: datetime, **values: Any) -> None:
    await conn.execute(_SET_FIELDS, {"w_id": payment_id, "updated_at": now, **values})


async def list_for(
    conn: AsyncConnection, owner_id: str, query: PaymentListQuery
) -> tuple[list[Row[Any]], bool]:
    p = payments.c
    scope = select(payments).where(p.owner_id == owner_id)
    filters = []
    if query.status:
        filters.append(p.status == query.status.value)
    if query.currency:
        filters.append(p.currency == query.currency)
    return await fetch_page(conn, scope, filters, [p.seq], p.id, p.created_at, query, "payment")


async def refunds_of(
    conn: AsyncConnection, owner_id: str, payment_id: str, page: Page
) -> tuple[list[Row[Any]], bool]:
    """A payment's refunds, newest first (the payment must be the owner's)."""
    await get(conn, payment_id, owner_id)
    r = refunds.c
    scope = select(refunds).where(r.payment_id == payment_id, r.owner_id == owner_id)
    order = [r.created_at, r.id]
    return await fetch_page(conn, scope, [], order, r.id, r.created_at, page, "refund")


async def payouts_of(
    conn: AsyncConnection, owner_id: str, page: Page
) -> tuple[list[Row[Any]], bool]:
    """The owner's payouts, newest first."""
    p = payouts.c
    scope = select(payouts).where(p.owner_id == owner_id)
    return await fetch_page(conn, scope, [], [p.seq], p.id, p.created_at, page, "payout")


async def disputes_of(
    conn: AsyncConnection, owner_id: str, payment_id: str | None, page: Page
) -> tuple[list[Row[Any]], bool]:
    """The owner's disputes (of one payment, if given: it must be the owner's), newest
    first."""
    if payment_id is not None:
        await get(conn, payment_id, owner_id)
    d = disputes.c
    scope = select(disputes).where(d.owner_id == owner_id)
    filters = [] if payment_id is None else [d.payment_id == payment_id]
    return await fetch_page(conn, scope, filters, [d.seq], d.id, d.created_at, page, "dispute")


async def get_dispute(conn: AsyncConnection, dispute_id: str, owner_id: str | None) -> Row[Any]:
    return await _owned(conn, disputes, dispute_id, owner_id, "dispute")


async def events_of(conn: AsyncConnection, payment_id: str) -> list[dict[str, Any]]:
    rows = (
        await conn.execute(
            select(timeline).where(timeline.c.payment_id == payment_id).order_by(timeline.c.seq)
        )
    ).all()
    return [
        {
            "from_status": r.from_status,
            "to_status": r.to_status,
            "cause": r.cause,
            "detail": r.detail,
            "occurred_at": iso(r.occurred_at),
        }
        for r in rows
    ]


async def add_timeline_note(
    conn: AsyncConnection,
    payment_id: str,
    status: str,
    cause: str,
    detail: dict[str, Any],
    now: datetime,
) -> None:
    """A timeline row that is not a status change (a refund, a failed attempt)."""
    await _timeline_row(conn, payment_id, status, status, cause, detail, now)


async def get_refund(conn: AsyncConnection, refund_id: str, owner_id: str | None) -> Row[Any]:
    return await _owned(conn, refunds, refund_id, owner_id, "refund")


async def get_payout(conn: AsyncConnection, payout_id: str, owner_id: str | None) -> Row[Any]:
    return await _owned(conn, payouts, payout_id, owner_id, "payout")
