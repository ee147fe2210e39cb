"""Everything that finishes flows the API started: PSP webhooks, settlement polling and the
reconciler that resumes open attempts from their recovery points."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import or_, select, update

from pocketpay.kit.clock import aware
from pocketpay.kit.failpoints import failpoint
from pocketpay.kit.outbox import claim_inbox
from pocketpay.payments import attempts, service
from pocketpay.payments.errors import ProviderUnavailable
from pocketpay.payments.flows import disputes, intents, payouts, refunds
from pocketpay.payments.flows.context import Ctx
from pocketpay.payments.models import attempts as attempts_table
from pocketpay.payments.models import payments, psp_events
from pocketpay.payments.models import refunds as refunds_table
from pocketpay.payments.providers.base import PspRejected, PspUnavailable
from pocketpay.payments.states import Action, PspState, psp_action
from pocketpay.payments.states import PaymentStatus as S

log = structlog.get_logger(__name__)

# The state a PSP event says the intent has reached.
EVENT_STATE = {
    "payment_intent.amount_capturable_updated": PspState.AUTHORIZED,
    "payment_intent.succeeded": PspState.SUCCEEDED,
    "payment_intent.canceled": PspState.CANCELED,
    "payment_intent.payment_failed": PspState.DECLINED,
}


# -- webhooks --------------------------------------------------------------------------------


async def handle_psp_event(ctx: Ctx, event: dict[str, Any]) -> dict[str, str]:
    """A verified PSP webhook, applied once per event id: its inbox row is written in the
    transaction of its effect. If the PSP cannot be asked for the current state, the webhook
    fails (503) so the PSP sends it again; nothing is recorded."""
    inbox = (event["id"], event["type"])
    async with ctx.engine.connect() as conn:
        seen = await conn.scalar(
            select(psp_events.c.event_id).where(psp_events.c.event_id == event["id"])
        )
    if seen is not None:
        return {"status": "duplicate"}
    obj = event.get("data", {}).get("object", {})
    etype = event["type"]
    if etype.startswith("payment_intent."):
        applied = await _intent_event(ctx, etype, obj, inbox)
    elif etype.startswith("refund.") or etype == "charge.refunded":
        applied = await _refund_event(ctx, obj, inbox)
    elif etype.startswith("payout."):
        applied = await payouts.on_psp_event(ctx, obj, inbox)
    elif etype.startswith("charge.dispute."):
        applied = await disputes.on_psp_event(ctx, obj, inbox)
    else:
        # Settlement is the settle job's, at each payment's ``available_on``; a
        # ``balance.available`` wakes it (a pass inside the webhook request made the PSP wait).
        if etype == "balance.available":
            ctx.wake_settle()
        applied = False
    if not applied:
        await _claim(ctx, inbox)
    return {"status": "processed"}


async def _claim(ctx: Ctx, inbox: tuple[str, str]) -> None:
    async with ctx.engine.begin() as conn:
        await claim_inbox(conn, psp_events, *inbox, ctx.clock.now())


async def _intent_event(ctx: Ctx, etype: str, obj: dict[str, Any], inbox: tuple[str, str]) -> bool:
    pid = (obj.get("metadata") or {}).get("payment_id")
    if not pid:
        return False
    async with ctx.engine.connect() as conn:
        current = await conn.scalar(select(payments.c.status).where(payments.c.id == pid))
    if current is None:
        return False
    reported = EVENT_STATE.get(etype)
    if reported is not None and psp_action(S(current), reported) == Action.NOTHING:
        return False  # we already know this (or more): no PSP round trip
    try:
        result = await ctx.provider.retrieve(obj["id"])  # the PSP's current truth
    except (PspUnavailable, PspRejected) as exc:
        raise ProviderUnavailable(
            "The payment provider could not be asked about this event; send it again."
        ) from exc
    await intents.apply_intent(ctx, pid, result, cause="psp_webhook", inbox=inbox)
    return True


async def _refund_event(ctx: Ctx, obj: dict[str, Any], inbox: tuple[str, str]) -> bool:
    refund_id = (obj.get("metadata") or {}).get("refund_id")
    status = obj.get("status")
    if not refund_id or status not in ("succeeded", "failed", "canceled"):
        return False
    async with ctx.engine.connect() as conn:
        row = (
            await conn.execute(
                select(refunds_table.c.status).where(refunds_table.c.id == refund_id)
            )
        ).first()
    if row is None or row.status != "held":
        return False  # unknown, or already final, or never sent by us (pending): ignore
    ok = status == "succeeded"
    failure = None if ok else obj.get("failure_reason") or status
    psp_refund_id = obj.get("id") if ok else None
    await refunds.finish(
        ctx, refund_id, ok=ok, failure=failure, psp_refund_id=psp_refund_id, inbox=inbox
    )
    return True


# -- settlement ------------------------------------------------------------------------------


# A claimed payment's check time is pushed this far while its pass asks the PSP: other
# processes skip it meanwhile; a pass that dies leaves it to be asked again after the lease.
SETTLE_LEASE_SECONDS = 30.0
# PSP calls one settlement pass has in flight at most.
SETTLE_CONCURRENCY = 8


async def settle_due(ctx: Ctx, limit: int = 100) -> int:
    """Ask the PSP about captured payments whose check is due; returns how many it claimed.

    A payment's first check is at the ``available_on`` the PSP gave with the capture
    (``intents._record_psp_ids``), so it is normally asked once; without it, at once. One not
    yet available (or whose check failed: unknown is not a failure) is asked again after half
    its age (at least ``settle_poll``, at most 5 minutes), so the polling load does not grow
    with the number of payments waiting to settle.

    Due rows are claimed in a short transaction of their own that pushes their check time
    forward by a lease, committed before any PSP call (no transaction is held across one):
    on PostgreSQL ``FOR UPDATE SKIP LOCKED``, so several processes' passes split the due rows
    instead of each asking about all of them. SQLite has one writer process: no clause."""
    now = ctx.clock.now()
    p = payments.c
    q = (
        select(p.id, p.psp_balance_txn_id, p.updated_at)
        .where(
            p.status == S.CAPTURED,
            p.psp_balance_txn_id.is_not(None),
            or_(p.settle_check_at.is_(None), p.settle_check_at <= now),
        )
        .order_by(p.settle_check_at.nulls_first())
        .limit(limit)
    )
    async with ctx.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        rows = (await conn.execute(q)).all()
        if not rows:
            return 0
        lease = now + timedelta(seconds=max(SETTLE_LEASE_SECONDS, ctx.settle_poll_seconds))
        await conn.execute(
            update(payments).where(p.id.in_([r.id for r in rows])).values(settle_check_at=lease)
        )
    await failpoint("payments.settle.after_lease")  # crash window: the lease brings them back
    gate = asyncio.Semaphore(SETTLE_CONCURRENCY)

    async def check(row: Any) -> bool:
        async with gate:
            return await _settle_one(ctx, row, now)

    results = await asyncio.gather(*(check(r) for r in rows), return_exceptions=True)
    settled = 0
    for row, res in zip(rows, results, strict=True):
        if isinstance(res, BaseException) and not isinstance(res, Exception):
            raise res  # a cancellation (or a simulated crash) is not one payment's error
        if isinstance(res, BaseException):  # the lease brings it back; the others go on
            log.warning(
                "payments.settle_check_failed",
                payment_id=row.id,
                error=f"{type(res).__name__}: {res}",
            )
        else:
            settled += res
    if settled:
        ctx.relay.notify()
    return len(rows)


async def _settle_one(ctx: Ctx, row: Any, now: datetime) -> bool:
    """One claimed payment: ask the PSP, then settle it or set its next check."""
    try:
        available = await ctx.provider.balance_available(row.psp_balance_txn_id)
    except (PspUnavailable, PspRejected):
        available = False  # unknown: asked again at the next check
    await failpoint("payments.settle.after_psp")  # crash window: asked again after the lease
    p = payments.c
    async with ctx.engine.begin() as conn:
        if available:
            done = await service.transition(
                conn, row.id, S.SETTLED, cause="settlement", now=ctx.clock.now(), strict=False
            )
            return done is not None
        age = (now - aware(row.updated_at)).total_seconds()
        wait = min(max(age / 2, ctx.settle_poll_seconds), 300.0)
        await conn.execute(
            update(payments)
            .where(p.id == row.id, p.status == S.CAPTURED)
            .values(settle_check_at=now + timedelta(seconds=wait))
        )
    return False


# -- the reconciler --------------------------------------------------------------------------


async def reconcile(ctx: Ctx, limit: int = 100) -> int:
    """Resume every attempt left open longer than ``retry_seconds`` (a crash, a timeout, a
    lost webhook), each from its recovery point with its original key; and start the
    authorization of created payments whose event was never handled. Returns how many."""
    horizon = ctx.clock.now() - timedelta(seconds=ctx.retry_seconds)
    async with ctx.engine.connect() as conn:
        due = await attempts.due(conn, horizon, limit)
        a = attempts_table.c
        orphans = (
            await conn.execute(
                select(payments.c.id)
                .where(
                    payments.c.status == S.CREATED,
                    payments.c.updated_at < horizon,
                    ~select(a.id).where(a.payment_id == payments.c.id).exists(),
                )
                .limit(limit)
            )
        ).all()
    for row in orphans:
        await intents.authorize(ctx, row.id)
    if due and ctx.provider.stats().get("breaker") == "open":
        # Resuming now would only be refused by the breaker without reaching the PSP; such a
        # refusal must not count as a try, or a PSP outage longer than the tries would flag
        # every open attempt stuck. Wait for the breaker's trial call to let traffic through.
        log.info("payments.reconcile_waits_for_psp", open_attempts=len(due))
        return len(orphans)
    for d in due:
        async with ctx.engine.begin() as conn:
            go = await attempts.start_try(conn, d, ctx.max_tries, ctx.clock.now())
        if go:
            await _resume(ctx, d)
    return len(due) + len(orphans)


async def _resume(ctx: Ctx, d: attempts.Due) -> None:
    try:
        if d.operation == "refund":
            await refunds.resume(ctx, d.object_id)
        elif d.operation == "payout":
            await payouts.resume(ctx, d.object_id)
        elif d.operation == "authorize":
            await intents.authorize(ctx, d.object_id, resume=True)
        elif d.operation == "void":
            async with ctx.engine.connect() as conn:
                p = await service.get(conn, d.object_id)
            await intents.void_at_psp(ctx, p.id, p.psp_intent_id)
        else:  # capture, cancel: the PSP's current state tells whether it happened
            await intents.refresh(ctx, d.object_id)
    except Exception as exc:  # one object's trouble must not stop the others' recovery
        log.warning(
            "payments.resume_failed",
            object_id=d.object_id,
            operation=d.operation,
            error=f"{type(exc).__name__}: {exc}",
        )
