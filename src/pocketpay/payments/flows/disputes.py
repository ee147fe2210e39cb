"""Disputes (chargebacks): the PSP opens them, we record them, the user answers with evidence.

Phases and recovery points:

1. learn (webhooks ``charge.dispute.*``): the PSP is asked for the dispute's current state
   (never taken from the event body), and the row (id derived from the PSP's dispute id, so
   two webhooks of one dispute make one row) is written with ``payments.dispute.created``, and
   ``payments.dispute.closed`` when it is already decided, in one transaction with the
   webhook's inbox row. The ledger holds the disputed amount on ``created`` (a debt for what
   the user already spent) and releases it on ``closed`` won, or posts it on lost. A crash
   before the commit: the PSP sends the webhook again (we answered no 2xx).
2. evidence (``POST /disputes/{id}/evidence``): the text is stored first, then sent to the PSP
   with a key derived from the dispute and the caller's Idempotency-Key, then the PSP's answer
   (``under_review``) is applied with ``payments.dispute.updated``. A crash or a timeout after
   the PSP call: the caller's retry with the same key replays the PSP's answer, and the
   PSP's ``charge.dispute.updated`` webhook applies it anyway.
3. decision (webhook ``charge.dispute.closed``): won or lost, with ``payments.dispute.closed``.
   ``POST /disputes/{id}/close`` accepts the loss (the PSP closes it, key ``pp_<dispute>_close``)
   and applies the PSP's answer the same way.

A webhook the PSP never managed to deliver: ``sweep`` lists the PSP's recent disputes every
``psp.dispute_sweep_seconds`` and applies what we miss.

A dispute's status only moves forward: a decided dispute (won, lost, warning_closed) is never
changed again, whatever arrives late.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from pocketpay.kit.clock import iso
from pocketpay.kit.db import insert_ignore
from pocketpay.kit.failpoints import failpoint
from pocketpay.kit.ids import derive_id
from pocketpay.kit.outbox import add_event, claim_inbox
from pocketpay.payments import service
from pocketpay.payments.errors import DisputeNotOpen, ProviderUnavailable
from pocketpay.payments.flows.context import Ctx
from pocketpay.payments.models import disputes, outbox, payments, psp_events
from pocketpay.payments.providers.base import DisputeResult, PspRejected, PspUnavailable

log = structlog.get_logger(__name__)

CLOSED = frozenset({"won", "lost", "warning_closed"})
OPEN_FOR_EVIDENCE = frozenset({"needs_response", "warning_needs_response"})
# How far along each status is: a status never moves back (late or reordered answers).
RANK = {
    "warning_needs_response": 0,
    "needs_response": 0,
    "warning_under_review": 1,
    "under_review": 1,
    "warning_closed": 2,
    "won": 2,
    "lost": 2,
}


def dispute_id(psp_dispute_id: str) -> str:
    return derive_id("dp", psp_dispute_id)


def view(row: Row[Any] | Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "dispute",
        "payment_id": row.payment_id,
        "amount_minor": row.amount_minor,
        "currency": row.currency,
        "status": row.status,
        "reason": row.reason,
        "evidence_due_by": iso(row.evidence_due_by),
        "evidence": row.evidence_text,
        "evidence_submitted_at": iso(row.evidence_submitted_at),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "closed_at": iso(row.closed_at),
    }


async def _event(conn: AsyncConnection, row: Any, kind: str, now: datetime) -> None:
    """``payments.dispute.<kind>``: the dispute as the API shows it, plus what the ledger needs
    (the owner, and the payment's purpose: whose money was credited)."""
    data = view(row) | {"owner_id": row.owner_id, "purpose": row.purpose}
    event_id = derive_id("evt", row.id, kind, row.status)
    await add_event(conn, outbox, f"payments.dispute.{kind}", data, now, event_id=event_id)


# -- phase 1 and 3: webhooks -----------------------------------------------------------------


async def on_psp_event(ctx: Ctx, obj: dict[str, Any], inbox: tuple[str, str]) -> bool:
    """A ``charge.dispute.*`` webhook. False when the dispute is not on one of our payments or
    ours is already decided (the inbox row is then written by the caller)."""
    psp_id = obj.get("id")
    if not isinstance(psp_id, str) or not psp_id:
        return False
    async with ctx.engine.connect() as conn:
        status = await conn.scalar(
            select(disputes.c.status).where(disputes.c.psp_dispute_id == psp_id)
        )
    if status in CLOSED:
        return False
    try:
        res = await ctx.provider.retrieve_dispute(psp_id)  # the PSP's current truth
    except (PspUnavailable, PspRejected) as exc:
        raise ProviderUnavailable(
            "The payment provider could not be asked about this dispute; send it again."
        ) from exc
    return await apply(ctx, res, inbox=inbox)


async def apply(ctx: Ctx, res: DisputeResult, *, inbox: tuple[str, str] | None = None) -> bool:
    """Record the PSP's dispute: insert it (created, and closed if decided already) or move its
    status forward (updated, or closed). One transaction, with the webhook's inbox row. False
    when it is not on one of our payments."""
    if res.intent_id is None:
        return False
    now = ctx.clock.now()
    async with ctx.engine.begin() as conn:
        pay = (
            await conn.execute(
                select(payments.c.id, payments.c.owner_id, payments.c.purpose).where(
                    payments.c.psp_intent_id == res.intent_id
                )
            )
        ).first()
        if pay is None:
            return False  # a dispute on a charge we did not make (another app on the account)
        if inbox is not None and not await claim_inbox(conn, psp_events, *inbox, now):
            return True  # a concurrent delivery of the same event applied it
        row = await _locked(conn, res.dispute_id)
        if row is None:
            inserted = await _insert(conn, res, pay, now)
            row = await _locked(conn, res.dispute_id)
            assert row is not None
            if inserted:
                await _event(conn, row, "created", now)
                if res.status in CLOSED:
                    await _event(conn, row, "closed", now)
                return True
            # else a concurrent webhook of the same dispute inserted it: move it forward
        if RANK[res.status] < RANK[row.status] or res.status == row.status:
            return True  # nothing new (or stale)
        closed = res.status in CLOSED
        await conn.execute(
            update(disputes)
            .where(disputes.c.id == row.id)
            .values(status=res.status, updated_at=now, closed_at=now if closed else None)
        )
        row = await _locked(conn, res.dispute_id)
        await _event(conn, row, "closed" if closed else "updated", now)
    return True


async def _locked(conn: AsyncConnection, psp_dispute_id: str) -> Row[Any] | None:
    q = select(disputes).where(disputes.c.psp_dispute_id == psp_dispute_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    return (await conn.execute(q)).first()


async def _insert(conn: AsyncConnection, res: DisputeResult, pay: Any, now: datetime) -> bool:
    """False if a concurrent webhook of the same dispute inserted it first."""
    due = datetime.fromtimestamp(res.due_by, UTC) if res.due_by else None
    closed = res.status in CLOSED
    result = await conn.execute(
        insert_ignore(conn, disputes, returning=True),
        {
            "id": dispute_id(res.dispute_id),
            "psp_dispute_id": res.dispute_id,
            "payment_id": pay.id,
            "owner_id": pay.owner_id,
            "purpose": pay.purpose,
            "amount_minor": res.amount_minor,
            "currency": res.currency,
            "status": res.status,
            "reason": res.reason[:40],
            "evidence_due_by": due,
            "evidence_text": None,
            "evidence_submitted_at": None,
            "created_at": now,
            "updated_at": now,
            "closed_at": now if closed else None,
        },
    )
    return result.first() is not None


async def sweep(ctx: Ctx, window_seconds: float) -> int:
    """Lost webhooks: list the PSP's disputes opened within ``window_seconds`` and apply each
    one we do not have, or have at another, undecided status (``apply`` is idempotent: it
    moves a status forward only). The number applied."""
    since = int(ctx.clock.now().timestamp() - window_seconds)
    try:
        listed = [res async for res in ctx.provider.list_disputes(created_gte=since)]
    except (PspUnavailable, PspRejected) as exc:
        log.warning("disputes.sweep_failed", error=str(exc)[:200])
        return 0
    if not listed:
        return 0
    d = disputes.c
    ids = [res.dispute_id for res in listed]
    async with ctx.engine.connect() as conn:
        rows = await conn.execute(
            select(d.psp_dispute_id, d.status).where(d.psp_dispute_id.in_(ids))
        )
        known = {r.psp_dispute_id: r.status for r in rows}
    applied = 0
    for res in listed:
        status = known.get(res.dispute_id)
        if status in CLOSED or status == res.status:
            continue
        if await apply(ctx, res):
            applied += 1
    return applied


# -- phase 2: evidence -----------------------------------------------------------------------


async def submit_evidence(
    ctx: Ctx, owner_id: str, dispute_id_: str, key: str, text: str
) -> dict[str, Any]:
    """Send the evidence and submit it. ``disputes.not_open`` (409) once the dispute no longer
    takes evidence; ``payments.provider_unavailable`` (503) when the PSP's answer is unknown
    (retry with the same key: the PSP replays it)."""
    now = ctx.clock.now()
    async with ctx.engine.begin() as conn:
        row = await service.get_dispute(conn, dispute_id_, owner_id)
        if row.status not in OPEN_FOR_EVIDENCE:
            if row.evidence_text == text and row.evidence_submitted_at is not None:
                return view(row)  # this evidence was sent: a retry
            raise DisputeNotOpen(
                f"The dispute is {row.status}: evidence can only be sent while it needs a response."
            )
        await conn.execute(
            update(disputes)
            .where(disputes.c.id == row.id)
            .values(evidence_text=text, evidence_submitted_at=now, updated_at=now)
        )
    await failpoint("payments.dispute.before_psp")
    try:
        res = await ctx.provider.submit_dispute_evidence(
            row.psp_dispute_id, text, derive_id("pp", row.id, "evidence", key)
        )
    except PspRejected as exc:
        await _refresh(ctx, row.psp_dispute_id)
        raise DisputeNotOpen(f"The payment provider refused the evidence: {exc}") from exc
    except PspUnavailable as exc:
        raise ProviderUnavailable(
            "The payment provider did not answer; send the same request again (same "
            "Idempotency-Key)."
        ) from exc
    await failpoint("payments.dispute.after_psp")
    await apply(ctx, res)
    async with ctx.engine.connect() as conn:
        return view(await service.get_dispute(conn, dispute_id_, owner_id))


async def accept(ctx: Ctx, owner_id: str, dispute_id_: str) -> dict[str, Any]:
    """Give up: the cardholder keeps the money (the dispute is ``lost``). ``disputes.not_open``
    (409) once decided. The PSP's key derives from the dispute alone: accepting twice is one
    close."""
    async with ctx.engine.connect() as conn:
        row = await service.get_dispute(conn, dispute_id_, owner_id)
    if row.status in CLOSED:
        raise DisputeNotOpen(f"The dispute is already {row.status}.")
    try:
        res = await ctx.provider.close_dispute(row.psp_dispute_id, f"pp_{row.id}_close")
    except PspRejected as exc:
        await _refresh(ctx, row.psp_dispute_id)
        raise DisputeNotOpen(f"The payment provider refused to close the dispute: {exc}") from exc
    except PspUnavailable as exc:
        raise ProviderUnavailable(
            "The payment provider did not answer; send the same request again."
        ) from exc
    await apply(ctx, res)
    async with ctx.engine.connect() as conn:
        return view(await service.get_dispute(conn, dispute_id_, owner_id))


async def _refresh(ctx: Ctx, psp_dispute_id: str) -> None:
    try:
        res = await ctx.provider.retrieve_dispute(psp_dispute_id)
    except (PspUnavailable, PspRejected):
        return  # unknown: the next webhook brings it
    await apply(ctx, res)
