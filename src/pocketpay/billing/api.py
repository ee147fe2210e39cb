"""The billing API as one typed object (``BillingClient`` in this process; the internal routes
serve it over HTTP at scale)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.billing import changes, service
from pocketpay.billing.documents import InvoiceDocument, InvoiceLine
from pocketpay.billing.errors import InvalidTransition, PaymentMethodRequired, TestClockDisabled
from pocketpay.billing.flows import BillingFlows
from pocketpay.billing.models import invoices
from pocketpay.billing.pdf import render_invoice
from pocketpay.billing.schemas import (
    Invoice,
    InvoiceItem,
    InvoiceItemCreate,
    InvoiceList,
    Plan,
    PlanCreate,
    PlanList,
    Subscription,
    SubscriptionCancel,
    SubscriptionCreate,
    SubscriptionList,
    SubscriptionUpdate,
    TestClock,
    TestClockAdvance,
)
from pocketpay.billing.states import RENEWING, TERMINAL, InvoiceStatus, SubscriptionEvent
from pocketpay.billing.states import SubscriptionStatus as St
from pocketpay.kit.clock import aware
from pocketpay.kit.db import single_statements
from pocketpay.kit.errors import AppError
from pocketpay.kit.failpoints import failpoint
from pocketpay.kit.ids import derive_id
from pocketpay.kit.listing import Page, next_cursor
from pocketpay.payments.client import PaymentsClient


class BillingApi:
    def __init__(
        self,
        engine: AsyncEngine,
        flows: BillingFlows,
        payments: PaymentsClient,
        *,
        test_clock: bool,
        issuer: str,
    ) -> None:
        self._engine = engine
        self._reads = single_statements(engine)
        self._flows = flows
        self._clock = flows.ctx.clock
        self._payments = payments
        self._test_clock = test_clock
        self._issuer = issuer

    async def ping(self) -> float:
        return 0.0

    # -- plans -----------------------------------------------------------------------------

    async def create_plan(self, body: dict[str, Any]) -> Plan:
        req = PlanCreate.model_validate(body)
        now = await self._clock.refresh()
        async with self._engine.begin() as conn:
            row = await service.create_plan(conn, req.model_dump(mode="json"), now)
        return Plan.model_validate(service.plan_view(row))

    async def list_plans(self, page: Page, active_only: bool) -> PlanList:
        async with self._reads.connect() as conn:
            rows, more = await service.list_plans(conn, page, active_only=active_only)
        data = [Plan.model_validate(service.plan_view(r)) for r in rows]
        return PlanList(
            data=data, has_more=more, next_cursor=next_cursor(page, [p.id for p in data], more)
        )

    async def get_plan(self, plan_id: str) -> Plan:
        async with self._reads.connect() as conn:
            return Plan.model_validate(service.plan_view(await service.get_plan(conn, plan_id)))

    async def archive_plan(self, plan_id: str) -> Plan:
        now = await self._clock.refresh()
        async with self._engine.begin() as conn:
            row = await service.archive_plan(conn, plan_id, now)
        return Plan.model_validate(service.plan_view(row))

    # -- subscriptions ---------------------------------------------------------------------

    async def subscribe(
        self, owner_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> Subscription:
        req = SubscriptionCreate.model_validate(body)
        if req.payment_source == "card":
            if req.payment_method is None:
                raise PaymentMethodRequired(
                    "Give payment_method: a saved card (POST /api/v1/payment-methods), or "
                    'use "payment_source": "wallet".'
                )
            await self._active_method(owner_id, req.payment_method)
        now = await self._clock.refresh()
        async with self._engine.begin() as conn:
            plan = await service.get_plan(conn, req.plan_id)
            sub, _made = await service.create_subscription(
                conn,
                owner_id=owner_id,
                idempotency_key=idempotency_key,
                plan=plan,
                payment_source=req.payment_source,
                payment_method=req.payment_method if req.payment_source == "card" else None,
                metadata=req.metadata,
                now=now,
            )
            first = await service.latest_invoice(conn, sub.id)
        if first is not None:
            await self._flows.charge(first)  # a retry of the request resumes the same charge
        return await self.get_subscription(owner_id, sub.id)

    async def _active_method(self, owner_id: str, method_id: str) -> None:
        """A saved card of the user's that is not detached (404 when not theirs)."""
        method = await self._payments.get_payment_method(owner_id, method_id)
        if method.status != "active":
            raise AppError(
                f"The payment method {method_id} is detached: save a card again.",
                code="payments.invalid_payment_method",
                status=422,
            )

    async def get_subscription(self, owner_id: str, sub_id: str) -> Subscription:
        async with self._reads.connect() as conn:
            sub = await service.get_subscription(conn, sub_id, owner_id)
            latest = await service.latest_invoice(conn, sub_id)
        return Subscription.model_validate(service.subscription_view(sub, latest))

    async def list_subscriptions(self, owner_id: str, page: Page) -> SubscriptionList:
        async with self._reads.connect() as conn:
            rows, more = await service.list_subscriptions(conn, owner_id, page)
            latest = await service.latest_invoices(conn, [r.id for r in rows])
        data = [
            Subscription.model_validate(service.subscription_view(r, latest.get(r.id)))
            for r in rows
        ]
        cursor = next_cursor(page, [s.id for s in data], more)
        return SubscriptionList(data=data, has_more=more, next_cursor=cursor)

    async def update(self, owner_id: str, sub_id: str, body: dict[str, Any]) -> Subscription:
        """Change the card a subscription is charged with, its plan, or both (``changes``)."""
        req = SubscriptionUpdate.model_validate(body)
        if req.payment_method is not None:
            await self._active_method(owner_id, req.payment_method)
        now = await self._clock.refresh()
        invoice = None
        async with self._engine.begin() as conn:
            sub = await service.get_subscription(conn, sub_id, owner_id, lock=True)
            if St(sub.status) in TERMINAL:
                raise InvalidTransition(f"A {sub.status} subscription cannot be changed.")
            if req.payment_method is not None:
                sub = await service.set_payment_method(conn, sub, req.payment_method, now)
            if req.plan_id is not None:
                invoice = await changes.change_plan(
                    conn, sub, req.plan_id, req.proration_behavior, now
                )
        await self._charge_after(invoice, "billing.change.after_commit")
        return await self.get_subscription(owner_id, sub_id)

    async def pause(self, owner_id: str, sub_id: str) -> Subscription:
        """No renewals and no charges until resumed (trialing or active only)."""
        now = await self._clock.refresh()
        async with self._engine.begin() as conn:
            sub = await service.get_subscription(conn, sub_id, owner_id, lock=True)
            await changes.pause(conn, sub, now)
        return await self.get_subscription(owner_id, sub_id)

    async def resume(self, owner_id: str, sub_id: str) -> Subscription:
        """A paused subscription starts a new billing cycle now, its invoice charged at once."""
        now = await self._clock.refresh()
        async with self._engine.begin() as conn:
            sub = await service.get_subscription(conn, sub_id, owner_id, lock=True)
            invoice = await changes.resume(conn, sub, now)
        await self._charge_after(invoice, "billing.resume.after_commit")
        return await self.get_subscription(owner_id, sub_id)

    async def _charge_after(self, invoice: Row[Any] | None, point: str) -> None:
        """Charge an invoice a committed change opened. A crash at ``point`` leaves it open
        and due now: the scheduler's next pass charges it (one charge, its usual phases)."""
        if invoice is None or invoice.status != InvoiceStatus.OPEN.value:
            return
        await failpoint(point)
        await self._flows.charge(invoice.id)

    async def cancel(self, owner_id: str, sub_id: str, body: dict[str, Any]) -> Subscription:
        req = SubscriptionCancel.model_validate(body)
        now = await self._clock.refresh()
        async with self._engine.begin() as conn:
            sub = await service.get_subscription(conn, sub_id, owner_id, lock=True)
            if req.at_period_end:
                if St(sub.status) not in RENEWING:
                    raise InvalidTransition(
                        f"A {sub.status} subscription has no period end to cancel at."
                    )
                await service.cancel_at_period_end(conn, sub, now)
            else:
                await service.move_subscription(
                    conn, sub, SubscriptionEvent.CANCEL, now, canceled_at=now, next_action_at=None
                )
                # No more charges of its open invoices (they stay open: the customer may pay).
                await conn.execute(
                    invoices.update()
                    .where(
                        invoices.c.subscription_id == sub_id,
                        invoices.c.status == InvoiceStatus.OPEN.value,
                    )
                    .values(next_attempt_at=None)
                )
        return await self.get_subscription(owner_id, sub_id)

    # -- invoices --------------------------------------------------------------------------

    async def _invoice(self, conn: Any, invoice_id: str, owner_id: str) -> Invoice:
        row = await service.get_invoice(conn, invoice_id, owner_id)
        lines = await service.lines_of(conn, invoice_id)
        return Invoice.model_validate(service.invoice_view(row, lines))

    async def get_invoice(self, owner_id: str, invoice_id: str) -> Invoice:
        async with self._reads.connect() as conn:
            return await self._invoice(conn, invoice_id, owner_id)

    async def list_invoices(
        self, owner_id: str, page: Page, subscription_id: str | None
    ) -> InvoiceList:
        async with self._reads.connect() as conn:
            rows, more = await service.list_invoices(conn, owner_id, page, subscription_id)
            lines = await service.lines_by_invoice(conn, [r.id for r in rows])
        data = [Invoice.model_validate(service.invoice_view(r, lines[r.id])) for r in rows]
        cursor = next_cursor(page, [i.id for i in data], more)
        return InvoiceList(data=data, has_more=more, next_cursor=cursor)

    async def pay_invoice(self, owner_id: str, invoice_id: str) -> Invoice:
        """Charge an open invoice now (a card's outcome follows asynchronously)."""
        async with self._reads.connect() as conn:
            inv = await service.get_invoice(conn, invoice_id, owner_id)
        if inv.status != InvoiceStatus.OPEN.value:
            raise InvalidTransition(f"A {inv.status} invoice cannot be paid.")
        await self._flows.charge(invoice_id)
        return await self.get_invoice(owner_id, invoice_id)

    async def invoice_pdf(self, owner_id: str, invoice_id: str, email: str, name: str) -> bytes:
        async with self._reads.connect() as conn:
            inv = await service.get_invoice(conn, invoice_id, owner_id)
            lines = await service.lines_of(conn, invoice_id)
        if inv.number is None:
            raise InvalidTransition("A draft invoice has no PDF yet.")
        return render_invoice(_document(inv, lines, email, name, self._issuer))

    # -- admin: one-off lines, voids -------------------------------------------------------

    async def add_invoice_item(
        self, admin_id: str, idempotency_key: str, sub_id: str, body: dict[str, Any]
    ) -> InvoiceItem:
        """A one-off line (any user's subscription) for its next invoice."""
        req = InvoiceItemCreate.model_validate(body)
        now = await self._clock.refresh()
        async with self._engine.begin() as conn:
            sub = await service.get_subscription(conn, sub_id, lock=True)
            line = await service.add_one_off(
                conn,
                sub,
                line_id=derive_id("ii", admin_id, idempotency_key),
                description=req.description,
                amount_minor=req.amount_minor,
                now=now,
            )
        return InvoiceItem.model_validate(service.invoice_item_view(line, sub.currency))

    async def void_invoice(self, invoice_id: str) -> Invoice:
        """Void any user's draft or open invoice: it is never charged again."""
        now = await self._clock.refresh()
        async with self._engine.begin() as conn:
            inv = await service.get_invoice(conn, invoice_id, lock=True)
            inv = await service.void_invoice(conn, inv, now)
            lines = await service.lines_of(conn, invoice_id)
        return Invoice.model_validate(service.invoice_view(inv, lines))

    # -- the test clock --------------------------------------------------------------------

    def _clock_allowed(self) -> None:
        if not self._test_clock:
            raise TestClockDisabled(
                "The test clock exists only with the sandbox PSP and billing.test_clock on."
            )

    async def test_clock(self) -> TestClock:
        self._clock_allowed()
        now = await self._clock.refresh()
        return TestClock(now=now.isoformat(), offset_seconds=self._clock.offset_seconds)

    async def advance_clock(self, body: dict[str, Any]) -> TestClock:
        """Move billing time forward, then run every renewal, trial end and retry that falls
        due (passes until none is left, bounded)."""
        self._clock_allowed()
        req = TestClockAdvance.model_validate(body)
        now = await self._clock.refresh()
        seconds = float(req.seconds) if req.seconds is not None else 0.0
        if req.to is not None:
            seconds = (req.to - now).total_seconds()
        await self._clock.advance(seconds)
        for _ in range(1000):
            if not await self._flows.run_due():
                break
        return await self.test_clock()


def _document(
    inv: Row[Any], lines: list[Row[Any]], email: str, name: str, issuer: str
) -> InvoiceDocument:
    def at(moment: datetime | None) -> datetime | None:
        return None if moment is None else aware(moment)

    return InvoiceDocument(
        number=inv.number,
        status=inv.status,
        currency=inv.currency,
        created_at=aware(inv.created_at),
        period_start=aware(inv.period_start),
        period_end=aware(inv.period_end),
        customer_email=email,
        customer_name=name,
        issuer_name=issuer,
        lines=tuple(
            InvoiceLine(
                description=line.description,
                amount_minor=line.amount_minor,
                period_start=at(line.period_start),
                period_end=at(line.period_end),
                kind=line.kind,
            )
            for line in lines
        ),
        total_minor=inv.total_minor,
        amount_paid_minor=inv.amount_paid_minor,
        paid_at=at(inv.paid_at),
    )
