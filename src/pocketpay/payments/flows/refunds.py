"""Refunds, as atomic phases with recovery points.

1. reserve (payments): the refund row (id derived from the owner's Idempotency-Key) in state
   ``pending``, the amount reserved on the payment, a ``refund`` attempt; one transaction.
2. hold (ledger, id ``refund_hold:<refund>``): the wallet's money is held. The ledger refuses
   it when the money is spent (the refund fails, nothing reached the PSP).
3. held (payments): ``pending -> held``. Only a held refund is ever sent to the PSP.
4. refund at the PSP (key ``pp_<refund>``).
5. finish (payments): ``succeeded`` or ``failed``, its event (the ledger posts or voids the
   hold), the payment's status; one transaction.

Crash windows: after 1 or 2 the refund is ``pending`` and the reconciler (or the client's retry
with the same key) places the hold again (same id: a no-op if it exists) and goes on; after 3
or 4 it is ``held`` and the PSP is asked again with the same key (one refund at the PSP).

Compensation refunds (a payment we canceled that the PSP charged anyway) start at ``held``:
the wallet never received the money, so there is nothing to hold; the ledger ignores them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pocketpay.kit.errors import AppError, KeyReused
from pocketpay.kit.failpoints import failpoint
from pocketpay.kit.ids import derive_id
from pocketpay.kit.money import Money
from pocketpay.kit.outbox import add_event, claim_inbox
from pocketpay.payments import attempts, service
from pocketpay.payments.errors import InvalidTransition, NotRefundable, RefundExceedsCaptured
from pocketpay.payments.flows.context import Ctx
from pocketpay.payments.models import outbox, payments, psp_events, refunds
from pocketpay.payments.providers.base import PspDeclined, PspRejected, PspUnavailable
from pocketpay.payments.schemas import INVOICE
from pocketpay.payments.states import PaymentStatus as S
from pocketpay.payments.states import RefundStatus as R
from pocketpay.payments.states import can_refund_transition

COMPENSATION = "compensation"


def psp_key(refund_id: str) -> str:
    return f"pp_{refund_id}"


def _sources(target: R) -> list[str]:
    """The states ``REFUND_TRANSITIONS`` allows to move to ``target``: the conditional UPDATE
    that makes the move is written from the table, so the table is the rule."""
    return [s.value for s in R if can_refund_transition(s, target)]


async def refund(
    ctx: Ctx,
    owner_id: str,
    pid: str,
    key: str,
    amount_minor: int | None,
    reason: str | None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    refund_id = derive_id("re", owner_id, key)
    await _reserve(ctx, refund_id, owner_id, pid, amount_minor, reason, metadata or {})
    await failpoint("payments.refund.after_reserve")
    await resume(ctx, refund_id)
    async with ctx.engine.connect() as conn:
        return service.refund_view(await service.get_refund(conn, refund_id, owner_id))


async def resume(ctx: Ctx, refund_id: str) -> None:
    """Phases 2-5 from wherever the refund is (first run, client retry, reconciler)."""
    async with ctx.engine.connect() as conn:
        r = await service.get_refund(conn, refund_id, None)
    if r.status == R.PENDING:
        await _hold(ctx, r)
        await failpoint("payments.refund.after_hold")
        await _mark_held(ctx, refund_id)
        await failpoint("payments.refund.after_held")
    await push(ctx, refund_id)


async def _reserve(
    ctx: Ctx,
    refund_id: str,
    owner_id: str,
    pid: str,
    amount_minor: int | None,
    reason: str | None,
    metadata: dict[str, str],
) -> None:
    now = ctx.clock.now()
    async with ctx.engine.begin() as conn:
        p = await service.get(conn, pid, owner_id)
        if p.purpose == INVOICE:
            raise NotRefundable("This payment paid an invoice: refund the invoice instead.")
        existing = (await conn.execute(select(refunds).where(refunds.c.id == refund_id))).first()
        if existing is not None:
            same = (
                existing.payment_id == pid
                and existing.reason == reason
                and existing.metadata == metadata
            )
            if not same or amount_minor not in (None, existing.amount_minor):
                raise KeyReused("This Idempotency-Key already made a refund with other details.")
            return  # a retry: resume from where the first run got
        if p.status not in (S.CAPTURED, S.SETTLED):
            raise InvalidTransition(f"A {p.status} payment cannot be refunded.")
        left = Money(p.amount_captured_minor, p.currency) - Money(
            p.amount_refunded_minor, p.currency
        )
        asked = left if amount_minor is None else Money(amount_minor, p.currency)
        if not asked.is_positive() or asked.amount_minor > left.amount_minor:
            raise RefundExceedsCaptured(
                f"Only {left.format()} of the captured amount can still be refunded."
            )
        amount = asked.amount_minor
        res = await conn.execute(
            update(payments)
            .where(
                payments.c.id == pid,
                payments.c.amount_captured_minor - payments.c.amount_refunded_minor >= amount,
            )
            .values(amount_refunded_minor=payments.c.amount_refunded_minor + amount, updated_at=now)
        )
        if res.rowcount == 0:
            raise RefundExceedsCaptured("A concurrent refund took the remaining amount.")
        await _insert(conn, refund_id, p, amount, reason, R.PENDING, now, metadata)
        await service.add_timeline_note(
            conn,
            pid,
            p.status,
            "refund_requested",
            {"refund_id": refund_id, "amount_minor": amount},
            now,
        )


async def _insert(
    conn: AsyncConnection,
    refund_id: str,
    p: Any,
    amount: int,
    reason: str | None,
    status: R,
    now: Any,
    metadata: dict[str, str] | None = None,
) -> None:
    await conn.execute(
        insert(refunds).values(
            metadata=metadata or {},
            id=refund_id,
            payment_id=p.id,
            owner_id=p.owner_id,
            amount_minor=amount,
            currency=p.currency,
            status=status.value,
            reason=reason,
            created_at=now,
            updated_at=now,
        )
    )
    await attempts.begin(conn, refund_id, "refund", psp_key(refund_id), now)


async def record_compensation(conn: AsyncConnection, p: Any, amount: int, now: Any) -> str:
    """A refund of the PSP's charge on a payment we canceled or failed (in the caller's
    transaction). Idempotent per payment."""
    refund_id = derive_id("re", p.id, COMPENSATION)
    found = (await conn.execute(select(refunds.c.id).where(refunds.c.id == refund_id))).first()
    if found is None:
        await _insert(conn, refund_id, p, amount, COMPENSATION, R.HELD, now)
    return refund_id


async def _hold(ctx: Ctx, r: Any) -> None:
    """Phase 2. A definite refusal fails the refund; an unknown outcome propagates (the
    refund stays pending and is resumed)."""
    try:
        await ctx.ledger.refund_hold(
            refund_id=r.id,
            payment_id=r.payment_id,
            owner_id=r.owner_id,
            amount_minor=r.amount_minor,
            currency=r.currency,
        )
    except AppError as exc:
        if exc.status >= 500:
            raise
        await finish(ctx, r.id, ok=False, failure=exc.code)
        raise


async def _mark_held(ctx: Ctx, refund_id: str) -> None:
    now = ctx.clock.now()
    async with ctx.engine.begin() as conn:
        await conn.execute(
            update(refunds)
            .where(refunds.c.id == refund_id, refunds.c.status.in_(_sources(R.HELD)))
            .values(status=R.HELD, updated_at=now)
        )


async def push(ctx: Ctx, refund_id: str) -> None:
    """Phase 4-5: ask the PSP to refund a held refund (again, with the same key, on resume)."""
    async with ctx.engine.connect() as conn:
        r = await service.get_refund(conn, refund_id, None)
        p = await service.get(conn, r.payment_id)
    if r.status != R.HELD:
        return
    try:
        res = await ctx.provider.refund(
            p.psp_intent_id,
            r.amount_minor,
            psp_key(refund_id),
            {"payment_id": p.id, "refund_id": refund_id},
        )
    except PspUnavailable as exc:
        async with ctx.engine.begin() as conn:
            await attempts.note_unknown(conn, refund_id, "refund", str(exc))
        return  # stays held; the reconciler asks again with the same key
    except (PspRejected, PspDeclined) as exc:
        await finish(ctx, refund_id, ok=False, failure=getattr(exc, "code", "refused"))
        return
    await failpoint("payments.refund.after_psp")
    if res.status == "succeeded":
        await finish(ctx, refund_id, ok=True, psp_refund_id=res.refund_id)
    elif res.status in ("failed", "canceled"):
        await finish(ctx, refund_id, ok=False, failure=res.failure_code or res.status)


async def finish(
    ctx: Ctx,
    refund_id: str,
    *,
    ok: bool,
    failure: str | None = None,
    psp_refund_id: str | None = None,
    inbox: tuple[str, str] | None = None,
) -> None:
    """Phase 5, once: the refund's final state, its event and the payment's status."""
    now = ctx.clock.now()
    async with ctx.engine.begin() as conn:
        if inbox is not None and not await claim_inbox(conn, psp_events, *inbox, now):
            return
        before = (
            await conn.execute(select(refunds.c.status).where(refunds.c.id == refund_id))
        ).scalar()
        target = R.SUCCEEDED if ok else R.FAILED
        res = await conn.execute(
            update(refunds)
            .where(refunds.c.id == refund_id, refunds.c.status.in_(_sources(target)))
            .values(
                status=target,
                failure_code=failure,
                psp_refund_id=psp_refund_id,
                updated_at=now,
            )
        )
        if res.rowcount == 0:
            return
        await attempts.conclude(conn, refund_id, ("refund",), "succeeded" if ok else "failed", now)
        await _finished(conn, refund_id, before == R.HELD, ok, now)
    ctx.relay.notify()


async def _finished(
    conn: AsyncConnection, refund_id: str, was_held: bool, ok: bool, now: Any
) -> None:
    r = await service.get_refund(conn, refund_id, None)
    data = service.refund_view(r) | {
        "refund_id": r.id,
        "owner_id": r.owner_id,
        # The ledger posts or voids the wallet hold only if there is one.
        "held": was_held and r.reason != COMPENSATION,
    }
    kind = "succeeded" if ok else "failed"
    event_id = derive_id("evt", r.id, kind)
    await add_event(conn, outbox, f"payments.refund.{kind}", data, now, event_id=event_id)
    p = await service.get(conn, r.payment_id)
    await service.add_timeline_note(
        conn,
        p.id,
        p.status,
        f"refund_{kind}",
        {"refund_id": r.id, "amount_minor": r.amount_minor},
        now,
    )
    if r.reason == COMPENSATION:
        return  # the payment is canceled or failed; its amounts were never captured
    if not ok:
        await conn.execute(
            update(payments)
            .where(payments.c.id == r.payment_id)
            .values(amount_refunded_minor=payments.c.amount_refunded_minor - r.amount_minor)
        )
        return
    # Refunded only when *succeeded* refunds cover the capture: a concurrent refund that is
    # still pending, or fails later, must not make the payment terminal.
    succeeded = await conn.scalar(
        select(func.coalesce(func.sum(refunds.c.amount_minor), 0)).where(
            refunds.c.payment_id == p.id, refunds.c.status == R.SUCCEEDED
        )
    )
    if int(succeeded or 0) < p.amount_captured_minor:
        return
    # A settlement may commit between our read of the status and the conditional UPDATE
    # (captured -> settled): read again and retry, so a fully refunded payment never stays
    # settled. Bounded: the status can only move forward a few times.
    for _ in range(3):
        if await service.transition(conn, p.id, S.REFUNDED, cause="refund", now=now, strict=False):
            return
        if (await service.get(conn, p.id)).status not in (S.CAPTURED, S.SETTLED):
            return
