"""Billing's storage use cases: each takes a connection and never commits (the caller's unit
of work does). Views are the dicts the API answers and the events carry."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from pocketpay.billing.errors import InvalidTransition, PlanArchived
from pocketpay.billing.models import (
    charges,
    customers,
    invoice_lines,
    invoices,
    outbox,
    pending_lines,
    plans,
    subscriptions,
)
from pocketpay.billing.periods import Interval, boundary
from pocketpay.billing.states import (
    TERMINAL,
    InvoiceStatus,
    SubscriptionEvent,
    SubscriptionStatus,
    can_invoice_transition,
    next_status,
)
from pocketpay.kit.clock import aware, iso
from pocketpay.kit.db import insert_ignore
from pocketpay.kit.errors import KeyReused, NotFound
from pocketpay.kit.ids import derive_id, new_id
from pocketpay.kit.listing import Page, fetch_page
from pocketpay.kit.outbox import add_event

St, Ev, Inv = SubscriptionStatus, SubscriptionEvent, InvoiceStatus


# -- views -----------------------------------------------------------------------------------


def plan_view(p: Row[Any] | Any) -> dict[str, Any]:
    return {
        "id": p.id,
        "object": "plan",
        "name": p.name,
        "amount_minor": p.amount_minor,
        "currency": p.currency,
        "interval": p.interval,
        "interval_count": p.interval_count,
        "trial_days": p.trial_days,
        "active": p.active,
        "metadata": p.metadata,
        "created_at": iso(p.created_at),
        "archived_at": iso(p.archived_at),
    }


def subscription_view(s: Row[Any] | Any, latest_invoice: str | None) -> dict[str, Any]:
    return {
        "id": s.id,
        "object": "subscription",
        "plan_id": s.plan_id,
        "status": s.status,
        "payment_source": s.payment_source,
        "payment_method": s.payment_method,
        "currency": s.currency,
        "current_period_start": iso(s.current_period_start),
        "current_period_end": iso(s.current_period_end),
        "trial_end": iso(s.trial_end),
        "cancel_at_period_end": s.cancel_at_period_end,
        "canceled_at": iso(s.canceled_at),
        "latest_invoice": latest_invoice,
        "metadata": s.metadata,
        "created_at": iso(s.created_at),
        "updated_at": iso(s.updated_at),
    }


def invoice_view(i: Row[Any] | Any, lines: list[Row[Any]]) -> dict[str, Any]:
    return {
        "id": i.id,
        "object": "invoice",
        "number": i.number,
        "status": i.status,
        "subscription_id": i.subscription_id,
        "currency": i.currency,
        "period_start": iso(i.period_start),
        "period_end": iso(i.period_end),
        "lines": [
            {
                "kind": line.kind,
                "description": line.description,
                "amount_minor": line.amount_minor,
                "period_start": iso(line.period_start),
                "period_end": iso(line.period_end),
            }
            for line in lines
        ],
        "total_minor": i.total_minor,
        "amount_paid_minor": i.amount_paid_minor,
        "amount_due_minor": i.total_minor - i.amount_paid_minor,
        "attempts": i.attempts,
        "next_attempt_at": iso(i.next_attempt_at),
        "last_decline_code": i.last_decline_code,
        "created_at": iso(i.created_at),
        "finalized_at": iso(i.finalized_at),
        "paid_at": iso(i.paid_at),
        "voided_at": iso(i.voided_at),
    }


# -- plans ------------------------------------------------------------------------------------


async def create_plan(conn: AsyncConnection, body: dict[str, Any], now: datetime) -> Row[Any]:
    plan_id = new_id("plan")
    await conn.execute(
        plans.insert(),
        body | {"id": plan_id, "active": True, "created_at": now, "archived_at": None},
    )
    return await get_plan(conn, plan_id)


async def get_plan(conn: AsyncConnection, plan_id: str) -> Row[Any]:
    row = (await conn.execute(select(plans).where(plans.c.id == plan_id))).first()
    if row is None:
        raise NotFound(f"No plan {plan_id}.")
    return row


async def list_plans(
    conn: AsyncConnection, page: Page, *, active_only: bool
) -> tuple[list[Row[Any]], bool]:
    p = plans.c
    scope = select(plans).where(p.active.is_(True)) if active_only else select(plans)
    return await fetch_page(conn, scope, [], [p.seq], p.id, p.created_at, page, "plan")


async def archive_plan(conn: AsyncConnection, plan_id: str, now: datetime) -> Row[Any]:
    """Archived plans take no new subscriptions; the existing ones go on (never deleted)."""
    await get_plan(conn, plan_id)
    await conn.execute(
        update(plans)
        .where(plans.c.id == plan_id, plans.c.active.is_(True))
        .values(active=False, archived_at=now)
    )
    return await get_plan(conn, plan_id)


# -- subscriptions ----------------------------------------------------------------------------


async def get_subscription(
    conn: AsyncConnection, sub_id: str, owner_id: str | None = None, *, lock: bool = False
) -> Row[Any]:
    q = select(subscriptions).where(subscriptions.c.id == sub_id)
    if owner_id is not None:
        q = q.where(subscriptions.c.owner_id == owner_id)
    if lock:
        q = q.with_for_update()
    row = (await conn.execute(q)).first()
    if row is None:
        raise NotFound(f"No subscription {sub_id} among yours.")
    return row


async def latest_invoice(conn: AsyncConnection, sub_id: str) -> str | None:
    q = (
        select(invoices.c.id)
        .where(invoices.c.subscription_id == sub_id)
        .order_by(invoices.c.seq.desc())
        .limit(1)
    )
    return await conn.scalar(q)


async def latest_invoices(conn: AsyncConnection, sub_ids: list[str]) -> dict[str, str]:
    """Each subscription's latest invoice id (those with one), in one query."""
    if not sub_ids:
        return {}
    i = invoices.c
    last = select(func.max(i.seq)).where(i.subscription_id.in_(sub_ids)).group_by(i.subscription_id)
    rows = (await conn.execute(select(i.subscription_id, i.id).where(i.seq.in_(last)))).all()
    return {r.subscription_id: r.id for r in rows}


async def list_subscriptions(
    conn: AsyncConnection, owner_id: str, page: Page
) -> tuple[list[Row[Any]], bool]:
    s = subscriptions.c
    scope = select(subscriptions).where(s.owner_id == owner_id)
    return await fetch_page(conn, scope, [], [s.seq], s.id, s.created_at, page, "subscription")


def period_bounds(anchor: datetime, plan: Row[Any], period: int) -> tuple[datetime, datetime]:
    """The subscription's period ``period`` (0: the first paid one), from its anchor."""
    interval, count = Interval(plan.interval), int(plan.interval_count)
    start = boundary(aware(anchor), interval, count, period)
    return start, boundary(aware(anchor), interval, count, period + 1)


async def create_subscription(
    conn: AsyncConnection,
    *,
    owner_id: str,
    idempotency_key: str,
    plan: Row[Any],
    payment_source: str,
    payment_method: str | None,
    metadata: dict[str, str],
    now: datetime,
) -> tuple[Row[Any], bool]:
    """The subscription named by (owner, key) and whether this call made it. With a trial it
    starts ``trialing`` (no invoice until the trial ends); else ``incomplete`` with its first
    invoice open, ``active`` once that is paid."""
    if not plan.active:
        raise PlanArchived(f"The plan {plan.id} is archived: choose an active plan.")
    sub_id = derive_id("sub", owner_id, idempotency_key)
    trial_end = now + timedelta(days=plan.trial_days) if plan.trial_days else None
    anchor = trial_end or now
    interval, count = Interval(plan.interval), plan.interval_count
    first_end = boundary(anchor, interval, count, 1)
    values = {
        "id": sub_id,
        "owner_id": owner_id,
        "plan_id": plan.id,
        "status": (St.TRIALING if trial_end else St.INCOMPLETE).value,
        "payment_source": payment_source,
        "payment_method": payment_method,
        "currency": plan.currency,
        "anchor": anchor,
        "trial_end": trial_end,
        # In a trial the current period is the trial (period -1); the first paid one is 0.
        "period": -1 if trial_end else 0,
        "current_period_start": now,
        "current_period_end": trial_end or first_end,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "next_action_at": trial_end or first_end,
        "metadata": metadata,
        "created_at": now,
        "updated_at": now,
    }
    made = (await conn.execute(insert_ignore(conn, subscriptions), values)).rowcount == 1
    sub = await get_subscription(conn, sub_id)
    if not made:
        asked = (plan.id, payment_source, payment_method, metadata)
        if asked != (sub.plan_id, sub.payment_source, sub.payment_method, sub.metadata):
            raise KeyReused("This Idempotency-Key already made a subscription with other details.")
        return sub, False
    await _customer(conn, owner_id, now)
    await add_event(conn, outbox, "billing.subscription.created", _event(sub), now)
    if not trial_end:
        await open_invoice(conn, sub, plan, now, first_end, now)
    return sub, True


def _event(sub: Row[Any] | Any) -> dict[str, Any]:
    return subscription_view(sub, None) | {"subscription_id": sub.id, "owner_id": sub.owner_id}


async def move_subscription(
    conn: AsyncConnection, sub: Row[Any], event: SubscriptionEvent, now: datetime, **values: Any
) -> Row[Any]:
    """Apply ``event`` through the state table (refused moves raise); writes the event
    ``billing.subscription.updated`` when the status or anything else changed."""
    target = next_status(St(sub.status), event)
    if target is None:
        raise InvalidTransition(
            f"A {sub.status} subscription cannot take {event.value.replace('_', ' ')}."
        )
    values = {"status": target.value, "updated_at": now} | values
    await conn.execute(update(subscriptions).where(subscriptions.c.id == sub.id).values(**values))
    moved = await get_subscription(conn, sub.id)
    data = _event(moved) | {"previous_status": sub.status, "cause": event.value}
    await add_event(conn, outbox, "billing.subscription.updated", data, now)
    return moved


async def touch_subscription(
    conn: AsyncConnection, sub: Row[Any], cause: str, now: datetime, **values: Any
) -> Row[Any]:
    """A change that is no status move (``cause`` says what), with its
    ``billing.subscription.updated`` event."""
    values = {"updated_at": now} | values
    await conn.execute(update(subscriptions).where(subscriptions.c.id == sub.id).values(**values))
    moved = await get_subscription(conn, sub.id)
    data = _event(moved) | {"previous_status": sub.status, "cause": cause}
    await add_event(conn, outbox, "billing.subscription.updated", data, now)
    return moved


async def set_payment_method(
    conn: AsyncConnection, sub: Row[Any], payment_method: str, now: datetime
) -> Row[Any]:
    return await touch_subscription(
        conn,
        sub,
        "payment_method_changed",
        now,
        payment_source="card",
        payment_method=payment_method,
    )


async def cancel_at_period_end(conn: AsyncConnection, sub: Row[Any], now: datetime) -> None:
    """Keep the subscription until its period ends; the scheduler cancels it then."""
    await touch_subscription(conn, sub, "cancel_at_period_end", now, cancel_at_period_end=True)


# -- invoices ---------------------------------------------------------------------------------


async def _customer(conn: AsyncConnection, owner_id: str, now: datetime) -> None:
    await conn.execute(
        insert_ignore(conn, customers),
        {"owner_id": owner_id, "invoices_numbered": 0, "created_at": now},
    )


async def _next_number(conn: AsyncConnection, owner_id: str) -> str:
    """The owner's next invoice number, gapless: the counter moves in the finalizing
    transaction (a rollback gives the number back)."""
    c = customers.c
    row = (
        await conn.execute(
            update(customers)
            .where(c.owner_id == owner_id)
            .values(invoices_numbered=c.invoices_numbered + 1)
            .returning(c.seq, c.invoices_numbered)
        )
    ).one()
    return f"PP-{int(row.seq):04d}-{int(row.invoices_numbered):04d}"


async def open_invoice(
    conn: AsyncConnection,
    sub: Row[Any],
    plan: Row[Any],
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    plan_line: bool = True,
) -> Row[Any]:
    """The invoice of ``sub`` starting at ``start`` (a period, or a plan change's moment):
    made, finalized and numbered once (a retry, or a second scheduler, finds it by
    (subscription, period start)). It takes the plan's line for ``[start, end)`` (unless
    ``plan_line`` is off: a plan change invoiced at once) and every pending line of the
    subscription, in the same transaction. Its total is the sum of its lines; a total of
    zero or less is settled by being issued, and a negative one first gets a line carrying
    the credit to the next invoice (a pending line), so no credit is lost."""
    invoice_id = derive_id("in", sub.id, start.isoformat())
    made = (
        await conn.execute(
            insert_ignore(conn, invoices),
            {
                "id": invoice_id,
                "owner_id": sub.owner_id,
                "subscription_id": sub.id,
                "number": None,
                "status": Inv.DRAFT.value,
                "currency": sub.currency,
                "period_start": start,
                "period_end": end,
                "total_minor": 0,
                "amount_paid_minor": 0,
                "attempts": 0,
                "next_attempt_at": None,
                "last_decline_code": None,
                "created_at": now,
                "finalized_at": None,
                "paid_at": None,
                "voided_at": None,
            },
        )
    ).rowcount == 1
    if made:
        lines = [_plan_line(plan, start, end)] if plan_line else []
        lines += await _take_pending(conn, sub.id, invoice_id)
        total = sum(int(line["amount_minor"]) for line in lines)
        number = await _next_number(conn, sub.owner_id)
        if total < 0:
            carried = {
                "kind": "credit",
                "description": f"Credit carried to the next invoice (from {number})",
                "period_start": None,
                "period_end": None,
            }
            lines.append(carried | {"amount_minor": -total})
            await add_pending(conn, sub.id, [carried | {"amount_minor": total}], now)
            total = 0
        await conn.execute(invoice_lines.insert(), [{"invoice_id": invoice_id} | x for x in lines])
        done = total == 0  # a free period, or one paid by credits: paid by being issued
        await conn.execute(
            update(invoices)
            .where(invoices.c.id == invoice_id)
            .values(
                number=number,
                status=(Inv.PAID if done else Inv.OPEN).value,
                total_minor=total,
                finalized_at=now,
                paid_at=now if done else None,
                next_attempt_at=None if done else now,
            )
        )
        row = await get_invoice(conn, invoice_id)
        await add_event(conn, outbox, "billing.invoice.finalized", invoice_event(row), now)
    return await get_invoice(conn, invoice_id)


def _plan_line(plan: Row[Any], start: datetime, end: datetime) -> dict[str, Any]:
    return {
        "kind": "subscription",
        "description": f"{plan.name} ({_every(plan)})",
        "amount_minor": plan.amount_minor,
        "period_start": start,
        "period_end": end,
    }


async def add_pending(
    conn: AsyncConnection, sub_id: str, lines: list[dict[str, Any]], now: datetime
) -> None:
    """Lines for the subscription's next invoice (lines of zero are left out)."""
    rows = [
        line | {"subscription_id": sub_id, "created_at": now, "invoice_id": None}
        for line in lines
        if line["amount_minor"] != 0
    ]
    if rows:
        await conn.execute(pending_lines.insert(), rows)


def invoice_item_view(line: Row[Any] | Any, currency: str) -> dict[str, Any]:
    return {
        "id": line.id,
        "object": "invoice_item",
        "subscription_id": line.subscription_id,
        "kind": line.kind,
        "description": line.description,
        "amount_minor": line.amount_minor,
        "currency": currency,
        "invoice_id": line.invoice_id,
        "created_at": iso(line.created_at),
    }


async def add_one_off(
    conn: AsyncConnection,
    sub: Row[Any],
    *,
    line_id: str,
    description: str,
    amount_minor: int,
    now: datetime,
) -> Row[Any]:
    """An admin's one-off line for the subscription's next invoice, named ``line_id`` (derived
    from the admin's Idempotency-Key): a retry finds it instead of adding it twice. The caller
    holds the subscription's row, so the line lands on exactly one invoice."""
    if St(sub.status) in TERMINAL:
        raise InvalidTransition(f"A {sub.status} subscription has no next invoice.")
    values = {
        "id": line_id,
        "subscription_id": sub.id,
        "kind": "one_off",
        "description": description,
        "amount_minor": amount_minor,
        "period_start": None,
        "period_end": None,
        "created_at": now,
        "invoice_id": None,
    }
    made = (await conn.execute(insert_ignore(conn, pending_lines), values)).rowcount == 1
    line = (await conn.execute(select(pending_lines).where(pending_lines.c.id == line_id))).one()
    if (line.subscription_id, line.description, line.amount_minor) != (
        sub.id,
        description,
        amount_minor,
    ):
        raise KeyReused("This Idempotency-Key already added another line.")
    if made:
        data = invoice_item_view(line, sub.currency) | {"owner_id": sub.owner_id}
        await add_event(conn, outbox, "billing.invoice_item.created", data, now)
    return line


async def _take_pending(
    conn: AsyncConnection, sub_id: str, invoice_id: str
) -> list[dict[str, Any]]:
    """The subscription's pending lines, now the invoice's (the caller holds the
    subscription's row or is its only writer, so two invoices never take the same line)."""
    p = pending_lines.c
    q = (
        select(p.seq, p.kind, p.description, p.amount_minor, p.period_start, p.period_end)
        .where(p.subscription_id == sub_id, p.invoice_id.is_(None))
        .order_by(p.seq)
    )
    rows = (await conn.execute(q)).all()
    if not rows:
        return []
    taken = await conn.execute(
        update(pending_lines)
        .where(p.seq.in_([r.seq for r in rows]), p.invoice_id.is_(None))
        .values(invoice_id=invoice_id)
    )
    assert taken.rowcount == len(rows), "a pending line was taken by two invoices"
    return [
        {
            "kind": r.kind,
            "description": r.description,
            "amount_minor": r.amount_minor,
            "period_start": r.period_start,
            "period_end": r.period_end,
        }
        for r in rows
    ]


def _every(plan: Row[Any]) -> str:
    unit = str(plan.interval)
    return f"every {plan.interval_count} {unit}s" if plan.interval_count > 1 else f"per {unit}"


def invoice_event(i: Row[Any] | Any) -> dict[str, Any]:
    return {
        "invoice_id": i.id,
        "owner_id": i.owner_id,
        "subscription_id": i.subscription_id,
        "number": i.number,
        "status": i.status,
        "currency": i.currency,
        "total_minor": i.total_minor,
        "amount_paid_minor": i.amount_paid_minor,
        "attempts": i.attempts,
        "last_decline_code": i.last_decline_code,
        "next_attempt_at": iso(i.next_attempt_at),
    }


async def get_invoice(
    conn: AsyncConnection, invoice_id: str, owner_id: str | None = None, *, lock: bool = False
) -> Row[Any]:
    q = select(invoices).where(invoices.c.id == invoice_id)
    if owner_id is not None:
        q = q.where(invoices.c.owner_id == owner_id)
    if lock:
        q = q.with_for_update()
    row = (await conn.execute(q)).first()
    if row is None:
        raise NotFound(f"No invoice {invoice_id} among yours.")
    return row


async def lines_of(conn: AsyncConnection, invoice_id: str) -> list[Row[Any]]:
    q = (
        select(invoice_lines)
        .where(invoice_lines.c.invoice_id == invoice_id)
        .order_by(invoice_lines.c.seq)
    )
    return list((await conn.execute(q)).all())


async def lines_by_invoice(
    conn: AsyncConnection, invoice_ids: list[str]
) -> dict[str, list[Row[Any]]]:
    """The lines of each of ``invoice_ids``, in one query (a page of invoices)."""
    found: dict[str, list[Row[Any]]] = {i: [] for i in invoice_ids}
    if invoice_ids:
        q = (
            select(invoice_lines)
            .where(invoice_lines.c.invoice_id.in_(invoice_ids))
            .order_by(invoice_lines.c.seq)
        )
        for line in (await conn.execute(q)).all():
            found[line.invoice_id].append(line)
    return found


async def list_invoices(
    conn: AsyncConnection, owner_id: str, page: Page, subscription_id: str | None
) -> tuple[list[Row[Any]], bool]:
    i = invoices.c
    scope = select(invoices).where(i.owner_id == owner_id)
    filters = [i.subscription_id == subscription_id] if subscription_id else []
    return await fetch_page(conn, scope, filters, [i.seq], i.id, i.created_at, page, "invoice")


async def set_invoice(
    conn: AsyncConnection, invoice: Row[Any], target: InvoiceStatus | None, **values: Any
) -> Row[Any]:
    if target is not None:
        if not can_invoice_transition(Inv(invoice.status), target):
            raise InvalidTransition(f"A {invoice.status} invoice cannot become {target.value}.")
        values["status"] = target.value
    await conn.execute(update(invoices).where(invoices.c.id == invoice.id).values(**values))
    return await get_invoice(conn, invoice.id)


async def void_invoice(conn: AsyncConnection, inv: Row[Any], now: datetime) -> Row[Any]:
    """An admin's void of a draft or open invoice (locked by the caller): never charged again.
    Refused while a charge of it is in flight (its money could arrive for a void invoice), and
    for paid, void and uncollectible (written off, still payable) invoices. The subscription's
    status does not move (a past_due one stays so until another invoice is paid)."""
    if inv.status not in (Inv.DRAFT.value, Inv.OPEN.value):
        raise InvalidTransition(f"A {inv.status} invoice cannot be voided.")
    if await pending_charge(conn, inv.id) is not None:
        raise InvalidTransition(
            f"A charge of the invoice {inv.id} is in flight: void it once it is answered."
        )
    voided = await set_invoice(conn, inv, Inv.VOID, voided_at=now, next_attempt_at=None)
    await add_event(conn, outbox, "billing.invoice.voided", invoice_event(voided), now)
    return voided


# -- charges ----------------------------------------------------------------------------------


async def pending_charge(conn: AsyncConnection, invoice_id: str) -> Row[Any] | None:
    q = select(charges).where(charges.c.invoice_id == invoice_id, charges.c.status == "pending")
    return (await conn.execute(q)).first()


async def get_charge(conn: AsyncConnection, charge_id: str, *, lock: bool = False) -> Row[Any]:
    q = select(charges).where(charges.c.id == charge_id)
    if lock:
        q = q.with_for_update()
    return (await conn.execute(q)).one()
