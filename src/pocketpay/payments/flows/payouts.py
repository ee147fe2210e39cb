"""Payouts (wallet -> bank account), as atomic phases with recovery points: the saga of the
event-driven seed. The payout's ``status`` is Stripe's; its ``stage`` is how far our phases got.

0. tokenize (PSP, key ``pp_<payout>_token``): the full account number goes to the PSP, which
   answers a bank account id; we keep that id and the last 4 digits, never the number. It is
   done before the row exists so that every later phase (and the reconciler, which never saw
   the number) can resume from our row alone. A retry replays the same token.
1. reserve (payments): the row (id derived from the owner's Idempotency-Key), ``pending`` at
   stage ``reserved``, a ``payout`` attempt and ``payments.payout.created``; one transaction.
2. hold (ledger, ``payout_hold:<payout>``): the wallet's money is held. Refused (money spent):
   the payout is ``failed`` with ``ledger.insufficient_funds``, nothing held. Then ``held``.
3. send (PSP, key ``pp_<payout>_payout``): claimed first (stage ``sending``) in a transaction
   that checks the payout is still ``pending``, so a cancel that won drops the call; a PSP
   refusal (``balance_insufficient``: the platform's available PSP balance is short) fails the
   payout. The answer records the PSP's id (stage ``sent``).
4. finish (webhooks ``payout.*`` or the poll, always with the PSP's current state): ``paid``
   (``payments.payout.paid``: the ledger posts the hold), ``failed`` or ``canceled`` (the
   ledger voids it: the money is back in the wallet).

Crash windows: reserved or held, the attempt stays open and the reconciler (or the client's
retry with the same key) resumes with the same ids, so the PSP makes one payout; sending, the
PSP is asked again with the same key and replays its payout.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from pocketpay.kit.clock import aware, iso
from pocketpay.kit.db import insert_ignore
from pocketpay.kit.errors import AppError, KeyReused
from pocketpay.kit.failpoints import failpoint
from pocketpay.kit.ids import derive_id
from pocketpay.kit.outbox import add_event, claim_inbox
from pocketpay.payments import attempts, service
from pocketpay.payments.errors import InvalidDestination, PayoutNotCancelable, ProviderUnavailable
from pocketpay.payments.flows.context import Ctx
from pocketpay.payments.models import outbox, payouts, psp_events
from pocketpay.payments.providers.base import (
    BankAccount,
    PayoutResult,
    PspRejected,
    PspUnavailable,
)
from pocketpay.payments.schemas import PayoutCreate, PayoutDestination
from pocketpay.payments.states import PAYOUT_FINAL, payout_sources
from pocketpay.payments.states import PayoutStage as G
from pocketpay.payments.states import PayoutStatus as PO

OPERATION = "payout"
# The PSP's statuses that move ours; ``pending`` moves nothing.
PSP_STATUS = {
    "in_transit": PO.IN_TRANSIT,
    "paid": PO.PAID,
    "failed": PO.FAILED,
    "canceled": PO.CANCELED,
}
# A sent payout is asked about again after half its age, within these bounds (lost webhooks).
POLL_MAX_SECONDS = 300.0
POLL_CONCURRENCY = 8


def psp_key(payout_id: str, what: str) -> str:
    return f"pp_{payout_id}_{what}"


def view(row: Row[Any] | Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "payout",
        "amount_minor": row.amount_minor,
        "currency": row.currency,
        "status": row.status,
        "destination": {
            "country": row.country,
            "routing_number": row.routing_number,
            "last4": row.last4,
        },
        "description": row.description,
        "metadata": row.metadata,
        "failure_code": row.failure_code,
        "failure_message": row.failure_message,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def checked_destination(dest: PayoutDestination) -> PayoutDestination:
    """The bank account's form, refused with a message naming the field."""
    country = dest.country.upper()
    if len(country) != 2 or not country.isascii() or not country.isalpha():
        raise InvalidDestination("destination.country must be 2 letters (ISO 3166), e.g. US.")
    if len(dest.routing_number) != 9 or not _digits(dest.routing_number):
        raise InvalidDestination("destination.routing_number must be 9 digits.")
    if not 4 <= len(dest.account_number) <= 17 or not _digits(dest.account_number):
        raise InvalidDestination("destination.account_number must be 4 to 17 digits.")
    return dest.model_copy(update={"country": country})


def _digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


async def _get(ctx: Ctx, payout_id: str, owner_id: str | None = None) -> Row[Any]:
    async with ctx.engine.connect() as conn:
        return await service.get_payout(conn, payout_id, owner_id)


# -- phases 0-1 ----------------------------------------------------------------------------


async def create(ctx: Ctx, owner_id: str, key: str, req: PayoutCreate) -> dict[str, Any]:
    payout_id = derive_id("po", owner_id, key)
    dest = checked_destination(req.destination)
    async with ctx.engine.connect() as conn:
        found = (await conn.execute(select(payouts).where(payouts.c.id == payout_id))).first()
    if found is None:
        account = await _tokenize(ctx, payout_id, dest, req.currency)
        await _reserve(ctx, payout_id, owner_id, req, dest, account)
    elif not _same(found, req, dest):
        raise KeyReused("This Idempotency-Key already made a payout with other details.")
    await failpoint("payments.payout.after_reserve")
    await resume(ctx, payout_id)
    return view(await _get(ctx, payout_id))


def _same(row: Any, req: PayoutCreate, dest: PayoutDestination) -> bool:
    return (
        row.amount_minor == req.amount_minor
        and row.currency == req.currency
        and (row.country, row.routing_number, row.last4)
        == (dest.country, dest.routing_number, dest.account_number[-4:])
        and row.description == req.description
        and row.metadata == req.metadata
    )


async def _tokenize(
    ctx: Ctx, payout_id: str, dest: PayoutDestination, currency: str
) -> BankAccount:
    try:
        return await ctx.provider.tokenize_bank_account(
            country=dest.country,
            currency=currency,
            routing_number=dest.routing_number,
            account_number=dest.account_number,
            idempotency_key=psp_key(payout_id, "token"),
        )
    except PspUnavailable as exc:
        raise ProviderUnavailable(
            "The payment provider could not take the bank account; retry with the same "
            "Idempotency-Key."
        ) from exc
    except PspRejected as exc:
        raise InvalidDestination(f"The payment provider refused the bank account: {exc}") from exc


async def _reserve(
    ctx: Ctx,
    payout_id: str,
    owner_id: str,
    req: PayoutCreate,
    dest: PayoutDestination,
    account: BankAccount,
) -> None:
    now = ctx.clock.now()
    async with ctx.engine.begin() as conn:
        inserted = await conn.execute(
            insert_ignore(conn, payouts, returning=True),
            {
                "id": payout_id,
                "owner_id": owner_id,
                "amount_minor": req.amount_minor,
                "currency": req.currency,
                "status": PO.PENDING.value,
                "stage": G.RESERVED.value,
                "country": dest.country,
                "routing_number": dest.routing_number,
                "last4": dest.account_number[-4:],
                "psp_bank_account_id": account.bank_account_id,
                "psp_payout_id": None,
                "description": req.description,
                "metadata": req.metadata,
                "failure_code": None,
                "failure_message": None,
                "check_at": None,
                "created_at": now,
                "updated_at": now,
            },
        )
        if inserted.first() is None:
            return  # a concurrent request with the same key made it: resume that one
        await attempts.begin(conn, payout_id, OPERATION, psp_key(payout_id, "payout"), now)
        row = await service.get_payout(conn, payout_id, None)
        await _event(conn, row, "created", now)


async def _event(conn: AsyncConnection, row: Any, kind: str, now: Any) -> None:
    """``payments.payout.<kind>``: the payout as the API shows it, plus what the ledger needs
    to place, post or void its hold (the owner)."""
    data = view(row) | {"owner_id": row.owner_id}
    event_id = derive_id("evt", row.id, kind)
    await add_event(conn, outbox, f"payments.payout.{kind}", data, now, event_id=event_id)


# -- phases 2-3 ----------------------------------------------------------------------------


async def resume(ctx: Ctx, payout_id: str) -> None:
    """Phases 2-3 from wherever the payout is (first run, client retry, reconciler)."""
    row = await _get(ctx, payout_id)
    if row.status != PO.PENDING:
        return
    if row.stage == G.RESERVED:
        await _hold(ctx, row)
        await failpoint("payments.payout.after_hold")
        await _advance(ctx, payout_id, G.RESERVED, G.HELD)
    await send(ctx, payout_id)


async def _hold(ctx: Ctx, row: Any) -> None:
    """Phase 2. A definite refusal fails the payout (and is the caller's answer); an unknown
    outcome propagates (the payout stays reserved and is resumed)."""
    try:
        await ctx.ledger.payout_hold(
            payout_id=row.id,
            owner_id=row.owner_id,
            amount_minor=row.amount_minor,
            currency=row.currency,
        )
    except AppError as exc:
        if exc.status >= 500:
            raise
        await finish(ctx, row.id, PO.FAILED, failure=(exc.code, exc.detail))
        raise


async def _advance(ctx: Ctx, payout_id: str, before: G, after: G) -> bool:
    """Move a pending payout's stage; False if it is no longer pending at ``before``."""
    async with ctx.engine.begin() as conn:
        return await _advance_in(conn, payout_id, (before,), after, ctx.clock.now())


async def _advance_in(
    conn: AsyncConnection, payout_id: str, before: tuple[G, ...], after: G, now: Any
) -> bool:
    res = await conn.execute(
        update(payouts)
        .where(
            payouts.c.id == payout_id,
            payouts.c.status == PO.PENDING,
            payouts.c.stage.in_([s.value for s in before]),
        )
        .values(stage=after.value, updated_at=now)
    )
    return bool(res.rowcount)


async def send(ctx: Ctx, payout_id: str) -> None:
    """Phase 3: ask the PSP for the payout (again, with the same key, on resume). The claim
    (held or sending -> sending, only while pending) is what a cancel races against."""
    if not await _advance(ctx, payout_id, G.HELD, G.SENDING):
        row = await _get(ctx, payout_id)
        if row.status != PO.PENDING or row.stage != G.SENDING:
            return  # canceled or finished meanwhile, or already sent
    row = await _get(ctx, payout_id)
    try:
        res = await ctx.provider.create_payout(
            amount_minor=row.amount_minor,
            currency=row.currency,
            destination=row.psp_bank_account_id,
            idempotency_key=psp_key(payout_id, "payout"),
            metadata={"payout_id": payout_id},
            description=row.description,
        )
    except PspUnavailable as exc:
        async with ctx.engine.begin() as conn:
            await attempts.note_unknown(conn, payout_id, OPERATION, str(exc))
        return  # stays sending: the reconciler asks again with the same key
    except PspRejected as exc:
        code = "payouts.psp_balance_insufficient" if exc.code == "balance_insufficient" else None
        await finish(ctx, payout_id, PO.FAILED, failure=(code or f"psp.{exc.code}", str(exc)))
        return
    await failpoint("payments.payout.after_psp")
    await apply(ctx, payout_id, res)


# -- phase 4 -------------------------------------------------------------------------------


async def apply(
    ctx: Ctx, payout_id: str, res: PayoutResult, inbox: tuple[str, str] | None = None
) -> None:
    """The PSP's state of the payout, applied once: its id recorded (sending -> sent, the
    attempt concluded), then the status it reports, with its event."""
    now = ctx.clock.now()
    async with ctx.engine.begin() as conn:
        if inbox is not None and not await claim_inbox(conn, psp_events, *inbox, now):
            return
        if await _record_sent(conn, payout_id, res.payout_id, now, ctx.settle_poll_seconds):
            await attempts.conclude(conn, payout_id, (OPERATION,), "succeeded", now)
        target = PSP_STATUS.get(res.status)
        if target is not None:
            failure = (res.failure_code, res.failure_message) if target == PO.FAILED else None
            await _finish_in(conn, payout_id, target, failure, now)
    ctx.relay.notify()


async def _record_sent(
    conn: AsyncConnection, payout_id: str, psp_id: str, now: Any, poll: float
) -> bool:
    res = await conn.execute(
        update(payouts)
        .where(payouts.c.id == payout_id, payouts.c.stage == G.SENDING)
        .values(
            stage=G.SENT.value,
            psp_payout_id=psp_id,
            check_at=now + timedelta(seconds=poll),
            updated_at=now,
        )
    )
    return bool(res.rowcount)


async def finish(
    ctx: Ctx, payout_id: str, target: PO, *, failure: tuple[str | None, str | None] | None = None
) -> bool:
    now = ctx.clock.now()
    async with ctx.engine.begin() as conn:
        done = await _finish_in(conn, payout_id, target, failure, now)
    ctx.relay.notify()
    return done


async def _finish_in(
    conn: AsyncConnection,
    payout_id: str,
    target: PO,
    failure: tuple[str | None, str | None] | None,
    now: Any,
) -> bool:
    """Move the status to ``target`` if the transition table allows it, with its event
    (once: the UPDATE is conditional on a status that may move there)."""
    code, message = failure or (None, None)
    message = message[:500] if message else None
    final = target in PAYOUT_FINAL
    values: dict[str, Any] = {"status": target.value, "updated_at": now}
    if target == PO.FAILED:
        values |= {"failure_code": code or "failed", "failure_message": message}
    if final:
        values["check_at"] = None
    res = await conn.execute(
        update(payouts)
        .where(payouts.c.id == payout_id, payouts.c.status.in_(payout_sources(target)))
        .values(**values)
    )
    if not res.rowcount:
        return False
    if final:
        outcome = "succeeded" if target == PO.PAID else "failed"
        await attempts.conclude(conn, payout_id, (OPERATION,), outcome, now)
    row = await service.get_payout(conn, payout_id, None)
    await _event(conn, row, target.value, now)
    return True


# -- cancel --------------------------------------------------------------------------------


async def cancel(ctx: Ctx, owner_id: str, payout_id: str) -> dict[str, Any]:
    """While pending. Before the PSP call is claimed, the payout is canceled here, in the
    transaction that makes the claim impossible; after, the PSP cancels its payout."""
    row = await _get(ctx, payout_id, owner_id)
    if row.status != PO.PENDING:
        raise PayoutNotCancelable(f"A {row.status} payout cannot be canceled.")
    if not await _drop(ctx, payout_id):
        await _cancel_at_psp(ctx, payout_id)
    return view(await _get(ctx, payout_id))


async def _drop(ctx: Ctx, payout_id: str) -> bool:
    now = ctx.clock.now()
    async with ctx.engine.begin() as conn:
        res = await conn.execute(
            update(payouts)
            .where(
                payouts.c.id == payout_id,
                payouts.c.status == PO.PENDING,
                payouts.c.stage.in_([G.RESERVED.value, G.HELD.value]),
            )
            .values(status=PO.CANCELED.value, updated_at=now)
        )
        if not res.rowcount:
            return False
        await attempts.conclude(conn, payout_id, (OPERATION,), "failed", now)
        await _event(conn, await service.get_payout(conn, payout_id, None), "canceled", now)
    ctx.relay.notify()
    return True


async def _cancel_at_psp(ctx: Ctx, payout_id: str) -> None:
    row = await _get(ctx, payout_id)
    if row.stage == G.SENDING:
        await send(ctx, payout_id)  # the PSP replays the payout it made (same key): its id
        row = await _get(ctx, payout_id)
    if row.status != PO.PENDING:
        raise PayoutNotCancelable(f"A {row.status} payout cannot be canceled.")
    if row.psp_payout_id is None:
        raise ProviderUnavailable("The payment provider could not be asked; retry the cancel.")
    try:
        res = await ctx.provider.cancel_payout(row.psp_payout_id, psp_key(payout_id, "cancel"))
    except PspUnavailable as exc:
        raise ProviderUnavailable("The payment provider could not cancel the payout.") from exc
    except PspRejected as exc:  # it left pending at the PSP: take its state and refuse
        await refresh(ctx, payout_id)
        raise PayoutNotCancelable(f"The payout can no longer be canceled: {exc}") from exc
    await apply(ctx, payout_id, res)


# -- webhooks and polling ------------------------------------------------------------------


async def on_psp_event(ctx: Ctx, obj: dict[str, Any], inbox: tuple[str, str]) -> bool:
    """A ``payout.*`` webhook: the PSP's current payout (asked, not taken from the event)
    applied once. False when it is not one of ours, or ours is already final."""
    payout_id = (obj.get("metadata") or {}).get("payout_id")
    if not payout_id or not obj.get("id"):
        return False
    async with ctx.engine.connect() as conn:
        status = await conn.scalar(select(payouts.c.status).where(payouts.c.id == payout_id))
    if status is None or status in PAYOUT_FINAL:
        return False
    try:
        res = await ctx.provider.retrieve_payout(obj["id"])
    except (PspUnavailable, PspRejected) as exc:
        raise ProviderUnavailable(
            "The payment provider could not be asked about this payout; send it again."
        ) from exc
    await apply(ctx, payout_id, res, inbox=inbox)
    return True


async def refresh(ctx: Ctx, payout_id: str) -> None:
    row = await _get(ctx, payout_id)
    if row.psp_payout_id is None or row.status in PAYOUT_FINAL:
        return
    try:
        res = await ctx.provider.retrieve_payout(row.psp_payout_id)
    except (PspUnavailable, PspRejected):
        return  # unknown: asked again at the next check
    await apply(ctx, payout_id, res)


async def poll_due(ctx: Ctx, limit: int = 100) -> int:
    """Ask the PSP about sent, unfinished payouts whose check is due (a lost webhook must not
    leave a payout pending or its money held forever). Each is leased by pushing its check
    time forward before the PSP call (after half its age, within ``settle_poll`` and 5 min):
    several processes split the due rows, and the load does not grow with waiting payouts."""
    now = ctx.clock.now()
    p = payouts.c
    q = (
        select(p.id, p.created_at)
        .where(p.stage == G.SENT, p.status.in_(["pending", "in_transit"]), p.check_at <= now)
        .order_by(p.check_at)
        .limit(limit)
    )
    async with ctx.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        rows = (await conn.execute(q)).all()
        for row in rows:
            age = (now - aware(row.created_at)).total_seconds()
            wait = min(max(age / 2, ctx.settle_poll_seconds), POLL_MAX_SECONDS)
            await conn.execute(
                update(payouts).where(p.id == row.id).values(check_at=now + timedelta(seconds=wait))
            )
    gate = asyncio.Semaphore(POLL_CONCURRENCY)

    async def check(payout_id: str) -> None:
        async with gate:
            await refresh(ctx, payout_id)

    await asyncio.gather(*(check(r.id) for r in rows))
    return len(rows)
