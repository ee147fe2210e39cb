"""Saved payment methods: cards kept at the PSP for their owner, charged later (a renewal of a
subscription off-session, or a top-up with a saved card).

Saving is a flow of recoverable phases, each converging on retry with the same
Idempotency-Key: (1) the owner's PSP customer, created once with a key derived from the owner
(``pp_cus_<owner>``) and recorded; (2) the attachment at the PSP, with a key derived from the
method's id (itself derived from owner and Idempotency-Key); (3) the row. A crash or timeout
after (1) or (2) leaves something at the PSP that the retry finds again (the PSP replays the
same answer for the same key), never a second customer or a second attachment.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pocketpay.kit.clock import iso
from pocketpay.kit.db import insert_ignore
from pocketpay.kit.errors import KeyReused
from pocketpay.kit.failpoints import failpoint
from pocketpay.kit.ids import derive_id
from pocketpay.kit.listing import Page, fetch_page
from pocketpay.payments.errors import (
    CardDeclined,
    PaymentNotFound,
    ProviderUnavailable,
    UnknownPaymentMethod,
)
from pocketpay.payments.models import customers, payment_methods
from pocketpay.payments.providers.base import (
    Provider,
    PspDeclined,
    PspRejected,
    PspUnavailable,
    SavedCard,
)

# Our saved methods' ids: "pm_" and 26 Crockford base32 characters (derive_id). The PSP's
# test tokens (pm_card_visa) have lower-case letters, so the two never collide.
_SAVED_ID = re.compile(r"^pm_[0-9A-HJKMNP-TV-Z]{26}$")


def is_saved_id(payment_method: str) -> bool:
    return _SAVED_ID.match(payment_method) is not None


def method_view(row: Row[Any] | Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "payment_method",
        "type": "card",
        "card": {
            "brand": row.brand,
            "last4": row.last4,
            "exp_month": row.exp_month,
            "exp_year": row.exp_year,
        },
        "status": row.status,
        "metadata": row.metadata,
        "created_at": iso(row.created_at),
        "detached_at": iso(row.detached_at),
    }


async def _row(conn: AsyncConnection, method_id: str, owner_id: str) -> Row[Any] | None:
    q = select(payment_methods).where(
        payment_methods.c.id == method_id, payment_methods.c.owner_id == owner_id
    )
    return (await conn.execute(q)).first()


async def get(conn: AsyncConnection, method_id: str, owner_id: str) -> Row[Any]:
    row = await _row(conn, method_id, owner_id)
    if row is None:
        raise PaymentNotFound(f"No payment method {method_id} among yours.")
    return row


async def chargeable(conn: AsyncConnection, method_id: str, owner_id: str) -> Row[Any]:
    """The owner's active saved method, to charge; ``payments.invalid_payment_method`` else."""
    row = await _row(conn, method_id, owner_id)
    if row is None or row.status != "active":
        state = "is detached" if row is not None else "is not one of your saved methods"
        raise UnknownPaymentMethod(
            f"The payment method {method_id} {state}: save a card first "
            "(POST /api/v1/payment-methods) or pass a PSP token such as pm_card_visa."
        )
    return row


async def list_for(conn: AsyncConnection, owner_id: str, page: Page) -> tuple[list[Row[Any]], bool]:
    m = payment_methods.c
    scope = select(payment_methods).where(m.owner_id == owner_id)
    return await fetch_page(conn, scope, [], [m.seq], m.id, m.created_at, page, "payment method")


def _psp_failure(exc: Exception) -> Exception:
    if isinstance(exc, PspDeclined):
        return CardDeclined(f"{exc} (decline code {exc.code})", errors=[{"code": exc.code}])
    if isinstance(exc, PspRejected):
        return UnknownPaymentMethod(f"The payment provider refused the card: {exc}")
    return ProviderUnavailable(
        "The payment provider did not answer; retry with the same Idempotency-Key."
    )


async def _customer(engine: AsyncEngine, provider: Provider, owner_id: str, now: datetime) -> str:
    """Phase 1: the owner's PSP customer, made once."""
    async with engine.connect() as conn:
        found = await conn.scalar(
            select(customers.c.psp_customer_id).where(customers.c.owner_id == owner_id)
        )
    if found is not None:
        return str(found)
    try:
        psp_id = await provider.create_customer(
            idempotency_key=f"pp_cus_{owner_id}", metadata={"owner_id": owner_id}
        )
    except (PspUnavailable, PspRejected, PspDeclined) as exc:
        raise _psp_failure(exc) from exc
    async with engine.begin() as conn:
        await conn.execute(
            insert_ignore(conn, customers),
            {
                "owner_id": owner_id,
                "psp_customer_id": psp_id,
                "provider": provider.name,
                "created_at": now,
            },
        )
        # A concurrent first save may have recorded the customer first: the same one, since
        # both asked with the same key.
        recorded = await conn.scalar(
            select(customers.c.psp_customer_id).where(customers.c.owner_id == owner_id)
        )
    return str(recorded)


async def save(
    engine: AsyncEngine,
    provider: Provider,
    *,
    owner_id: str,
    idempotency_key: str,
    source: str,
    metadata: dict[str, str],
    now: datetime,
) -> Row[Any]:
    method_id = derive_id("pm", owner_id, idempotency_key)
    async with engine.connect() as conn:
        existing = await _row(conn, method_id, owner_id)
    if existing is not None:
        if (existing.source, existing.metadata) != (source, metadata):
            raise KeyReused("This Idempotency-Key already saved another payment method.")
        return existing
    customer = await _customer(engine, provider, owner_id, now)
    await failpoint("payments.methods.after_customer")
    try:  # Phase 2: the same key makes the PSP answer with the same attachment on a retry.
        card: SavedCard = await provider.attach_payment_method(
            source, customer, f"pp_{method_id}_attach"
        )
    except (PspUnavailable, PspRejected, PspDeclined) as exc:
        raise _psp_failure(exc) from exc
    await failpoint("payments.methods.after_attach")
    async with engine.begin() as conn:  # Phase 3
        await conn.execute(
            insert_ignore(conn, payment_methods),
            {
                "id": method_id,
                "owner_id": owner_id,
                "source": source,
                "psp_customer_id": customer,
                "psp_payment_method": card.psp_payment_method_id,
                "brand": card.brand,
                "last4": card.last4,
                "exp_month": card.exp_month,
                "exp_year": card.exp_year,
                "status": "active",
                "metadata": metadata,
                "created_at": now,
                "detached_at": None,
            },
        )
        return await get(conn, method_id, owner_id)


async def detach(
    engine: AsyncEngine, provider: Provider, owner_id: str, method_id: str, now: datetime
) -> Row[Any]:
    """Detach at the PSP first (a card we no longer charge should not stay there), then mark
    it detached; a retry after an unknown outcome detaches again, harmlessly."""
    async with engine.connect() as conn:
        row = await get(conn, method_id, owner_id)
    if row.status == "detached":
        return row
    try:
        await provider.detach_payment_method(row.psp_payment_method)
    except PspRejected:
        pass  # already detached at the PSP (a retry of a detach whose answer was lost)
    except (PspUnavailable, PspDeclined) as exc:
        raise _psp_failure(exc) from exc
    async with engine.begin() as conn:
        await conn.execute(
            update(payment_methods)
            .where(payment_methods.c.id == method_id, payment_methods.c.status == "active")
            .values(status="detached", detached_at=now)
        )
        return await get(conn, method_id, owner_id)
