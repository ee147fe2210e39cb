"""Billing's money flows: charging an invoice, applying the answer, the scheduler's pass.

Charging an invoice is a sequence of recoverable phases:

1. **start** (one transaction, the invoice row locked): a charge ``<invoice>:<n>`` is recorded
   ``pending`` (or the pending one is resumed) and the invoice's retry time is cleared;
2. **ask**: from the wallet, the ledger's ``collect`` with transfer id ``inv_pay:<charge>``
   (answered at once); by card, a payment through payments (``purpose=invoice``, Idempotency-Key
   ``billing_<charge>``, off-session with the saved card) whose outcome arrives as an event;
3. **apply** (one transaction, with the event's inbox row for card answers): the charge ends
   ``succeeded`` or ``failed``; the invoice is paid, or scheduled for its dunning retry, or
   given up on; the subscription moves through the state table.

A timeout or crash between the phases leaves the charge ``pending``; the scheduler resumes it
with the same ids, so the ledger or the PSP answers with what the first ask did (one charge,
never two). Failpoints: ``billing.charge.before_ask``, ``billing.charge.after_ask``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pocketpay.billing import service
from pocketpay.billing.clock import BillingClock
from pocketpay.billing.dunning import next_attempt
from pocketpay.billing.models import charges, invoices, outbox, subscriptions
from pocketpay.billing.states import RENEWING, InvoiceStatus, SubscriptionEvent, next_status
from pocketpay.billing.states import SubscriptionStatus as St
from pocketpay.kit.errors import AppError
from pocketpay.kit.failpoints import failpoint
from pocketpay.kit.outbox import OutboxRelay, add_event
from pocketpay.ledger.client import LedgerClient
from pocketpay.payments.client import PaymentsClient

log = structlog.get_logger(__name__)

Inv, Ev = InvoiceStatus, SubscriptionEvent
PASS_LIMIT = 100


@dataclass
class BillingCtx:
    engine: AsyncEngine
    clock: BillingClock
    payments: PaymentsClient
    ledger: LedgerClient
    relay: OutboxRelay
    schedule_days: tuple[int, ...]
    final_state: str  # canceled | unpaid
    incomplete_expire_hours: float
    resume_after_seconds: float  # a charge pending this long (wall time) is asked again
    max_concurrent_charges: int = 8  # renewals and charges one scheduler pass runs at once


class BillingFlows:
    def __init__(self, ctx: BillingCtx) -> None:
        self.ctx = ctx

    # -- charging --------------------------------------------------------------------------

    async def charge(self, invoice_id: str) -> None:
        """Phase 1, then ask: start (or resume) a charge of an open invoice."""
        async with self.ctx.engine.begin() as conn:
            inv = await service.get_invoice(conn, invoice_id, lock=True)
            if inv.status != Inv.OPEN.value:
                return
            sub = await service.get_subscription(conn, inv.subscription_id)
            pending = await service.pending_charge(conn, invoice_id)
            if pending is None:
                n = inv.attempts + 1
                charge_id = f"{invoice_id}:{n}"
                await conn.execute(
                    charges.insert(),
                    {
                        "id": charge_id,
                        "invoice_id": invoice_id,
                        "n": n,
                        "source": sub.payment_source,
                        "status": "pending",
                        "payment_id": None,
                        "decline_code": None,
                        "created_at": self.ctx.clock.wall.now(),
                        "updated_at": self.ctx.clock.wall.now(),
                    },
                )
                await service.set_invoice(conn, inv, None, attempts=n, next_attempt_at=None)
            else:
                charge_id = pending.id
        self.ctx.relay.notify()
        await failpoint("billing.charge.before_ask")
        await self._ask(charge_id)

    async def _ask(self, charge_id: str) -> None:
        async with self.ctx.engine.connect() as conn:
            charge = await service.get_charge(conn, charge_id)
            inv = await service.get_invoice(conn, charge.invoice_id)
            sub = await service.get_subscription(conn, inv.subscription_id)
        due = inv.total_minor - inv.amount_paid_minor
        try:
            if charge.source == "wallet":
                await self.ctx.ledger.collect(
                    owner_id=sub.owner_id,
                    transfer_id=f"inv_pay:{charge_id}",
                    amount_minor=due,
                    currency=inv.currency,
                    reference=inv.id,
                )
            else:
                payment = await self.ctx.payments.create(
                    sub.owner_id,
                    f"billing_{charge_id}",
                    {
                        "amount_minor": due,
                        "currency": inv.currency,
                        "payment_method": sub.payment_method,
                        "capture_method": "automatic",
                        "description": f"Invoice {inv.number}",
                        "metadata": {"invoice_id": inv.id, "charge_id": charge_id},
                        "purpose": "invoice",
                        "reference": inv.id,
                        "off_session": True,
                    },
                )
                async with self.ctx.engine.begin() as conn:
                    await conn.execute(
                        update(charges)
                        .where(charges.c.id == charge_id, charges.c.payment_id.is_(None))
                        .values(payment_id=payment.id, updated_at=self.ctx.clock.wall.now())
                    )
                return  # the payment's outcome arrives as an event (``on_payment``)
        except AppError as exc:
            if exc.status >= 500:
                # Unknown outcome: the charge stays pending and is asked again (same ids).
                log.warning("billing.charge.unknown", charge=charge_id, code=exc.code)
                return
            code = "insufficient_funds" if exc.code == "ledger.insufficient_funds" else exc.code
            await self.apply(charge_id, succeeded=False, decline_code=code)
            return
        await failpoint("billing.charge.after_ask")
        await self.apply(charge_id, succeeded=True, decline_code=None)

    async def apply(self, charge_id: str, *, succeeded: bool, decline_code: str | None) -> None:
        async with self.ctx.engine.begin() as conn:
            await self.apply_in(conn, charge_id, succeeded, decline_code)
        self.ctx.relay.notify()

    async def apply_in(
        self, conn: AsyncConnection, charge_id: str, succeeded: bool, decline_code: str | None
    ) -> None:
        """Phase 3 in the caller's transaction; a charge already answered is left alone."""
        now = self.ctx.clock.now()
        charge = await service.get_charge(conn, charge_id, lock=True)
        if charge.status != "pending":
            return
        inv = await service.get_invoice(conn, charge.invoice_id, lock=True)
        sub = await service.get_subscription(conn, inv.subscription_id, lock=True)
        await conn.execute(
            update(charges)
            .where(charges.c.id == charge_id)
            .values(
                status="succeeded" if succeeded else "failed",
                decline_code=decline_code,
                updated_at=self.ctx.clock.wall.now(),
            )
        )
        if inv.status != Inv.OPEN.value:
            # Paid meanwhile by another charge, or voided: a second success would be money
            # taken twice for one invoice; it is not swallowed but flagged loudly.
            if succeeded:
                log.error("billing.charge.after_close", charge=charge_id, invoice=inv.status)
            return
        if succeeded:
            inv = await service.set_invoice(
                conn,
                inv,
                Inv.PAID,
                amount_paid_minor=inv.total_minor,
                paid_at=now,
                next_attempt_at=None,
                last_decline_code=None,
            )
            await add_event(conn, outbox, "billing.invoice.paid", service.invoice_event(inv), now)
            # An active or paused subscription stays so; one that ended (canceled, expired:
            # the customer paid what was owed) moves nothing; the others are active again.
            moves = next_status(St(sub.status), Ev.PAYMENT_SUCCEEDED) is not None
            if sub.status not in (St.ACTIVE.value, St.PAUSED.value) and moves:
                await service.move_subscription(conn, sub, Ev.PAYMENT_SUCCEEDED, now)
            return
        first = sub.status == St.INCOMPLETE.value
        retry_at = (
            None if first else next_attempt(now, inv.attempts, decline_code, self.ctx.schedule_days)
        )
        inv = await service.set_invoice(
            conn, inv, None, last_decline_code=decline_code, next_attempt_at=retry_at
        )
        data = service.invoice_event(inv)
        await add_event(conn, outbox, "billing.invoice.payment_failed", data, now)
        if sub.status in (St.ACTIVE.value, St.TRIALING.value):
            sub = await service.move_subscription(conn, sub, Ev.PAYMENT_FAILED, now)
        if retry_at is None and sub.status == St.PAST_DUE.value:
            await self._give_up(conn, sub, inv, now)

    async def _give_up(
        self, conn: AsyncConnection, sub: Row[Any], inv: Row[Any], now: datetime
    ) -> None:
        """Dunning is over: the configured final state; a canceled subscription's invoice is
        written off (uncollectible), an unpaid one's stays open for the customer to pay."""
        if self.ctx.final_state == "unpaid":
            await service.move_subscription(conn, sub, Ev.DUNNING_EXHAUSTED_UNPAID, now)
            return
        await service.move_subscription(
            conn, sub, Ev.DUNNING_EXHAUSTED_CANCEL, now, canceled_at=now, next_action_at=None
        )
        await service.set_invoice(conn, inv, Inv.UNCOLLECTIBLE, next_attempt_at=None)

    async def on_payment(self, conn: AsyncConnection, data: dict[str, Any], captured: bool) -> None:
        """A payments event about a charge of ours (``purpose == "invoice"``)."""
        charge_id = (data.get("metadata") or {}).get("charge_id")
        if data.get("purpose") != "invoice" or not charge_id:
            return
        code = None if captured else str(data.get("failure_code") or "card_declined")
        await self.apply_in(conn, charge_id, captured, code)

    # -- the scheduler ---------------------------------------------------------------------

    async def run_due(self) -> int:
        """One pass: renewals and period-end cancellations, due charges (first tries and
        dunning retries), expired first invoices, charges left pending. Returns the work done."""
        now = await self.ctx.clock.refresh()
        sub_ids = await self._due_subscriptions(now)
        await self._bounded(sub_ids, lambda sub_id: self._renew_and_charge(sub_id, now))
        invoice_ids = await self._due_invoices(now)
        await self._bounded(invoice_ids, self.charge)
        done = len(sub_ids) + len(invoice_ids)
        done += await self._expire_incomplete(now)
        done += await self._resume_pending()
        self.ctx.relay.notify()
        return done

    async def _bounded(self, ids: list[str], work: Callable[[str], Awaitable[None]]) -> None:
        """``work`` for each id, at most ``max_concurrent_charges`` at once: a pass over
        thousands of due invoices never has thousands of PSP or ledger calls in flight. Every
        id is worked on even when one fails; then the first failure is raised."""
        gate = asyncio.Semaphore(self.ctx.max_concurrent_charges)

        async def one(item: str) -> None:
            async with gate:
                await work(item)

        results = await asyncio.gather(*(one(i) for i in ids), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _renew_and_charge(self, sub_id: str, now: datetime) -> None:
        invoice_id = await self._renew(sub_id, now)
        if invoice_id is not None:
            await self.charge(invoice_id)

    async def _due_subscriptions(self, now: datetime) -> list[str]:
        """Subscriptions whose period ended (renewal, or cancellation at period end)."""
        s = subscriptions.c
        q = (
            select(s.id)
            .where(s.next_action_at <= now, s.status.in_([st.value for st in RENEWING]))
            .order_by(s.next_action_at)
        )
        return await self._ids(q)

    async def _due_invoices(self, now: datetime) -> list[str]:
        """Open invoices whose charge is due (first tries and dunning retries). A paused
        subscription's open invoices wait: their retries run after the resume."""
        i = invoices.c
        paused = select(subscriptions.c.id).where(subscriptions.c.status == St.PAUSED.value)
        q = (
            select(i.id)
            .where(
                i.next_attempt_at <= now,
                i.status == Inv.OPEN.value,
                i.subscription_id.not_in(paused),
            )
            .order_by(i.next_attempt_at)
        )
        return await self._ids(q)

    async def _ids(self, q: Any) -> list[str]:
        async with self.ctx.engine.connect() as conn:
            return list((await conn.scalars(q.limit(PASS_LIMIT))).all())

    async def _renew(self, sub_id: str, now: datetime) -> str | None:
        """One period forward (its invoice made, numbered, open) or the cancellation at the
        period's end. Claimed with ``FOR UPDATE SKIP LOCKED``: of two schedulers, one renews."""
        async with self.ctx.engine.begin() as conn:
            q = (
                select(subscriptions)
                .where(subscriptions.c.id == sub_id, subscriptions.c.next_action_at <= now)
                .with_for_update(skip_locked=True)
            )
            sub = (await conn.execute(q)).first()
            if sub is None or sub.status not in {s.value for s in RENEWING}:
                return None
            if sub.cancel_at_period_end:
                await service.move_subscription(
                    conn,
                    sub,
                    Ev.CANCEL,
                    now,
                    canceled_at=sub.current_period_end,
                    next_action_at=None,
                )
                return None
            plan = await service.get_plan(conn, sub.plan_id)
            period = sub.period + 1
            start, end = service.period_bounds(sub.anchor, plan, period)
            await conn.execute(
                update(subscriptions)
                .where(subscriptions.c.id == sub.id)
                .values(
                    period=period,
                    current_period_start=start,
                    current_period_end=end,
                    next_action_at=end,
                    updated_at=now,
                )
            )
            inv = await service.open_invoice(conn, sub, plan, start, end, now)
        self.ctx.relay.notify()
        return str(inv.id) if inv.status == Inv.OPEN.value else None

    async def _expire_incomplete(self, now: datetime) -> int:
        horizon = now - timedelta(hours=self.ctx.incomplete_expire_hours)
        s = subscriptions.c
        q = select(s.id).where(s.status == St.INCOMPLETE.value, s.created_at <= horizon)
        async with self.ctx.engine.connect() as conn:
            ids = list((await conn.scalars(q.limit(PASS_LIMIT))).all())
        for sub_id in ids:
            async with self.ctx.engine.begin() as conn:
                sub = await service.get_subscription(conn, sub_id, lock=True)
                if sub.status != St.INCOMPLETE.value:
                    continue
                await service.move_subscription(
                    conn, sub, Ev.FIRST_INVOICE_EXPIRED, now, next_action_at=None
                )
                open_ = select(invoices).where(
                    invoices.c.subscription_id == sub_id, invoices.c.status == Inv.OPEN.value
                )
                for inv in (await conn.execute(open_)).all():
                    await service.set_invoice(
                        conn, inv, Inv.VOID, voided_at=now, next_attempt_at=None
                    )
        return len(ids)

    async def _resume_pending(self) -> int:
        stale = self.ctx.clock.wall.now() - timedelta(seconds=self.ctx.resume_after_seconds)
        q = select(charges.c.id).where(charges.c.status == "pending", charges.c.updated_at <= stale)
        ids = await self._ids(q)
        await self._bounded(ids, self._ask_again)
        return len(ids)

    async def _ask_again(self, charge_id: str) -> None:
        async with self.ctx.engine.begin() as conn:
            await conn.execute(
                update(charges)
                .where(charges.c.id == charge_id)
                .values(updated_at=self.ctx.clock.wall.now())
            )
        await self._ask(charge_id)
