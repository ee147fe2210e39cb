"""Pause, resume and plan changes: storage use cases in the caller's transaction (the
subscription's row locked by the caller). Each returns the invoice it opened, if any, for the
caller to charge once the transaction has committed (``BillingApi``).

* **Pause** (trialing or active): no renewal while paused; open invoices keep their dunning
  time but the scheduler skips them until the subscription is resumed (``flows._due_invoices``).
* **Resume**: a new billing cycle from now (anchor = now, period 0), its first invoice opened
  at once, as Stripe's resume with ``billing_cycle_anchor=now``.
* **Plan change** (trialing: the plan is switched, the trial's end invoices the new one;
  active: prorated). Same interval and count: at ``t`` in the period ``[start, end)`` the
  credit ``-part(old, start, end, t, end)`` and the charge ``part(new, start, end, t, end)``
  (``proration.plan_change``) become pending lines for the next renewal
  (``create_prorations``), or an invoice now (``always_invoice``, with every pending line);
  ``none`` only switches the plan. Another interval or count starts a new cycle now: the
  unused old time is credited (unless ``none``) and the new plan's first period invoiced now.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from pocketpay.billing import proration, service
from pocketpay.billing.errors import CurrencyMismatch, InvalidTransition, PlanArchived
from pocketpay.billing.schemas import ProrationBehavior
from pocketpay.billing.states import SubscriptionEvent as Ev
from pocketpay.billing.states import SubscriptionStatus as St
from pocketpay.kit.clock import aware


async def pause(conn: AsyncConnection, sub: Row[Any], now: datetime) -> None:
    await service.move_subscription(conn, sub, Ev.PAUSE, now, next_action_at=None)


async def resume(conn: AsyncConnection, sub: Row[Any], now: datetime) -> Row[Any]:
    """Active again with a cycle anchored now; returns the new period's invoice."""
    plan = await service.get_plan(conn, sub.plan_id)
    start, end = service.period_bounds(now, plan, 0)
    moved = await service.move_subscription(
        conn,
        sub,
        Ev.RESUME,
        now,
        anchor=now,
        period=0,
        current_period_start=start,
        current_period_end=end,
        next_action_at=end,
    )
    return await service.open_invoice(conn, moved, plan, start, end, now)


async def change_plan(
    conn: AsyncConnection,
    sub: Row[Any],
    plan_id: str,
    behavior: ProrationBehavior,
    now: datetime,
) -> Row[Any] | None:
    """Switch ``sub`` to ``plan_id``; refusals change nothing. The same plan again (a retried
    request) is a no-op, so a retry never prorates twice."""
    new = await service.get_plan(conn, plan_id)
    if new.currency != sub.currency:
        raise CurrencyMismatch(
            f"The plan {new.id} is in {new.currency}; the subscription pays in {sub.currency}."
        )
    if not new.active:
        raise PlanArchived(f"The plan {new.id} is archived: choose an active plan.")
    if new.id == sub.plan_id:
        return None
    if sub.status == St.TRIALING.value:
        await service.touch_subscription(conn, sub, "plan_changed", now, plan_id=new.id)
        return None
    if sub.status != St.ACTIVE.value:
        raise InvalidTransition(
            f"A {sub.status} subscription cannot change plan"
            + (": resume it first." if sub.status == St.PAUSED.value else ".")
        )
    old = await service.get_plan(conn, sub.plan_id)
    start, end = aware(sub.current_period_start), aware(sub.current_period_end)
    credit, charge = proration.plan_change(old.amount_minor, new.amount_minor, start, end, now)
    credit_line = _line(f"Unused time on {old.name}", credit, now, end)
    if (old.interval, old.interval_count) != (new.interval, new.interval_count):
        first_start, first_end = service.period_bounds(now, new, 0)
        credits = [] if behavior == "none" else [credit_line]
        await service.add_pending(conn, sub.id, credits, now)
        moved = await service.touch_subscription(
            conn,
            sub,
            "plan_changed",
            now,
            plan_id=new.id,
            anchor=now,
            period=0,
            current_period_start=first_start,
            current_period_end=first_end,
            next_action_at=first_end,
        )
        return await service.open_invoice(conn, moved, new, first_start, first_end, now)
    if behavior != "none":
        charge_line = _line(f"Remaining time on {new.name}", charge, now, end)
        await service.add_pending(conn, sub.id, [credit_line, charge_line], now)
    moved = await service.touch_subscription(conn, sub, "plan_changed", now, plan_id=new.id)
    if behavior == "always_invoice":
        return await service.open_invoice(conn, moved, new, now, end, now, plan_line=False)
    return None


def _line(description: str, amount: int, start: datetime, end: datetime) -> dict[str, Any]:
    return {
        "kind": "proration",
        "description": description,
        "amount_minor": amount,
        "period_start": start,
        "period_end": end,
    }
