"""A hypothesis state machine over subscriptions, driven by the test clock (issue 9).

Each example runs the whole embedded stack (a Runtime on a fresh copy of the migrated SQLite
template, the embedded bus, the sandbox PSP served for real) in the example's own event loop,
and drives it through the components' in-process API objects (what the gateway's routes
call): subscribe (from the wallet, or with a saved card that pays or one that declines every
charge), top the wallet up by card or send its money away, advance the test clock by 1..40
days (renewals, trial ends, dunning retries and expiries run), cancel now or at the period's
end, switch the card, pay an open invoice now, and as an admin add a one-off line (or credit)
or void an open invoice. After each step the machine waits until
nothing is in flight (no billing charge pending, no payment created or authorized, the ledger
caught up with every capture), then checks:

* at most one invoice per (subscription, period start); every total equals its lines;
* an invoice has at most one succeeded charge, a succeeded charge's invoice is paid, and a paid
  invoice that cost something has exactly one;
* the paid invoices' amounts equal what ``sys_revenue_USD`` received in the ledger;
* a voided invoice stays void and gets no charge after the void; a one-off line taken by an
  invoice is on that invoice once;
* no wallet is below zero, nothing is left pending in the ledger, ``run_check`` is clean;
* every ``billing.subscription.updated`` event is a move of ``states.SUBSCRIPTION_MOVES``
  (``cancel_at_period_end`` and ``payment_method_changed`` keep the status) and the events of
  a subscription chain from its creation to its current status.

Each rule also checks the answer it gets against the state table (a cancel or card switch is
refused exactly when the table refuses it). SQLite only: a stack per example on PostgreSQL +
NATS would be slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import func, select

from pocketpay.billing.api import BillingApi
from pocketpay.billing.models import (
    charges,
    invoice_lines,
    invoices,
    outbox,
    pending_lines,
    subscriptions,
)
from pocketpay.billing.states import (
    RENEWING,
    SUBSCRIPTION_MOVES,
    TERMINAL,
    SubscriptionEvent,
    SubscriptionStatus,
)
from pocketpay.kit.errors import AppError
from pocketpay.ledger.api import LedgerApi
from pocketpay.ledger.chart import system_account_id
from pocketpay.ledger.check import run_check
from pocketpay.ledger.models import balances, transfers
from pocketpay.payments.api import PaymentsApi
from pocketpay.payments.models import payments
from tests.support import Stack, running_stack

T = TypeVar("T")
pytestmark = pytest.mark.timeout(240)
DAY = 86400
USERS = ("usr_ann", "usr_ben")
CARDS = ("pm_card_visa", "pm_card_chargeCustomerFail")
# (name, amount, interval, trial days): a monthly plan, a weekly one, one with a trial.
PLANS = (("Pro", 1000, "month", 0), ("Weekly", 300, "week", 0), ("Trial", 700, "month", 3))
REVENUE = system_account_id("revenue", "USD")
KEEPS_STATUS = {"cancel_at_period_end", "payment_method_changed"}
MAX_SUBSCRIPTIONS = 4
QUIET_TIMEOUT = 20.0


class BillingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="pp-billing-sm-"))
        self.exit = contextlib.AsyncExitStack()
        self.n = 0
        self.quiet_timeout = QUIET_TIMEOUT
        self.stack: Stack = self.run(self._start())
        self.subs: list[str] = []
        self.owner_of: dict[str, str] = {}  # subscription -> user
        self.voided: dict[str, int] = {}  # voided invoice -> its charges when voided

    async def _start(self) -> Stack:
        stack = await self.exit.enter_async_context(running_stack("sqlite", self.dir))
        parts = stack.runtime.components
        self.billing: BillingApi = parts["billing"].state["api"]
        self.payments: PaymentsApi = parts["payments"].state["api"]
        self.ledger: LedgerApi = parts["ledger"].state["api"]
        self.plans = []
        for name, amount, interval, trial in PLANS:
            body = {
                "name": name,
                "amount_minor": amount,
                "currency": "USD",
                "interval": interval,
                "trial_days": trial,
            }
            self.plans.append(await self.billing.create_plan(body))
        self.cards: dict[tuple[str, str], str] = {}  # saved when first used
        return stack

    def teardown(self) -> None:
        try:
            self.run(self.exit.aclose())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def key(self) -> str:
        self.n += 1
        return f"key{self.n}"

    async def _scalar(self, query: Any) -> Any:
        async with self.stack.runtime.engine.connect() as conn:
            return (await conn.execute(query)).scalar()

    async def _rows(self, query: Any) -> list[Any]:
        async with self.stack.runtime.engine.connect() as conn:
            return list((await conn.execute(query)).all())

    async def _status(self, sub_id: str) -> SubscriptionStatus:
        q = select(subscriptions.c.status).where(subscriptions.c.id == sub_id)
        return SubscriptionStatus(await self._scalar(q))

    async def _available(self, user: str) -> int:
        found = [w for w in (await self.ledger.wallets(user)).data if w.currency == "USD"]
        return found[0].available_minor if found else 0

    async def _in_flight(self) -> list[str]:
        """What is still moving: empty once billing, payments and the ledger are at rest."""
        b = balances.c
        pending_charges = await self._scalar(
            select(func.count()).where(charges.c.status == "pending")
        )
        moving = await self._scalar(
            select(func.count()).where(payments.c.status.in_(["created", "authorized"]))
        )
        captured = await self._scalar(
            select(func.count()).where(payments.c.status.in_(["captured", "settled", "refunded"]))
        )
        posted = await self._scalar(
            select(func.count()).where(transfers.c.id.like("pay\\_cap:%", escape="\\"))
        )
        held = await self._scalar(
            select(func.coalesce(func.sum(b.debits_pending + b.credits_pending), 0))
        )
        out = []
        if pending_charges:
            out.append(f"{pending_charges} billing charge(s) pending")
        if moving:
            out.append(f"{moving} payment(s) created or authorized")
        if captured != posted:
            out.append(f"{captured} payment(s) captured, {posted} capture(s) in the ledger")
        if held:
            out.append(f"{held} minor units pending in the ledger")
        return out

    async def _quiet(self) -> None:
        deadline = self.loop.time() + self.quiet_timeout
        while moving := await self._in_flight():
            if self.loop.time() > deadline:
                wait = self.quiet_timeout
                raise AssertionError(f"not at rest after {wait}s: {'; '.join(moving)}")
            await asyncio.sleep(0.02)

    def act(self, action: Awaitable[T]) -> T | AppError:
        """Run ``action`` (its business error is its answer), then wait until all is at rest."""

        async def go() -> T | AppError:
            try:
                result: T | AppError = await action
            except AppError as exc:
                result = exc
            await self._quiet()
            return result

        return self.run(go())

    async def _card(self, user: str, card: str) -> str:
        if (user, card) not in self.cards:
            saved = await self.payments.save_payment_method(
                user, self.key(), {"payment_method": card}
            )
            self.cards[user, card] = saved.id
        return self.cards[user, card]

    def live_subs(self) -> bool:
        return bool(self.subs)

    # -- rules -----------------------------------------------------------------------------

    @precondition(lambda self: len(self.subs) < MAX_SUBSCRIPTIONS)
    @rule(
        user=st.sampled_from(USERS),
        plan=st.integers(0, len(PLANS) - 1),
        source=st.sampled_from(("wallet", *CARDS)),
    )
    def subscribe(self, user: str, plan: int, source: str) -> None:
        price, trial = PLANS[plan][1], PLANS[plan][3] > 0
        body: dict[str, Any] = {"plan_id": self.plans[plan].id}
        if source == "wallet":
            body["payment_source"] = "wallet"
        else:
            body["payment_method"] = self.run(self._card(user, source))
        before = self.run(self._available(user))
        sub = self.act(self.billing.subscribe(user, self.key(), body))
        assert not isinstance(sub, AppError), sub
        self.subs.append(sub.id)
        self.owner_of[sub.id] = user
        status = self.run(self._status(sub.id))
        if trial:
            expected = SubscriptionStatus.TRIALING
        elif source == "wallet":
            ok = before >= price
            expected = SubscriptionStatus.ACTIVE if ok else SubscriptionStatus.INCOMPLETE
        elif source == "pm_card_visa":
            expected = SubscriptionStatus.ACTIVE
        else:
            expected = SubscriptionStatus.INCOMPLETE
        assert status == expected, (source, plan, before, status)

    @rule(user=st.sampled_from(USERS), amount=st.integers(100, 3000))
    def top_up(self, user: str, amount: int) -> None:
        body = {"amount_minor": amount, "currency": "USD", "payment_method": "pm_card_visa"}
        payment = self.act(self.payments.create(user, self.key(), body))
        assert not isinstance(payment, AppError), payment
        status = self.run(
            self._scalar(select(payments.c.status).where(payments.c.id == payment.id))
        )
        assert status in ("captured", "settled"), status

    @rule(user=st.sampled_from(USERS), data=st.data())
    def send_money_away(self, user: str, data: st.DataObject) -> None:
        available = self.run(self._available(user))
        if available == 0:
            return
        amount = data.draw(st.one_of(st.just(available), st.integers(1, available)))
        other = next(u for u in USERS if u != user)
        body = {
            "idempotency_key": self.key(),
            "sender_id": user,
            "recipient_id": other,
            "amount_minor": amount,
            "currency": "USD",
        }
        sent = self.act(self.ledger.send(body))
        assert not isinstance(sent, AppError), sent

    @rule(days=st.integers(1, 40))
    def advance_clock(self, days: int) -> None:
        moved = self.act(self.billing.advance_clock({"seconds": days * DAY}))
        assert not isinstance(moved, AppError), moved

    @precondition(live_subs)
    @rule(data=st.data(), at_period_end=st.booleans())
    def cancel(self, data: st.DataObject, at_period_end: bool) -> None:
        sub_id = data.draw(st.sampled_from(self.subs))
        status = self.run(self._status(sub_id))
        if at_period_end:
            allowed = status in RENEWING
        else:
            allowed = (status, SubscriptionEvent.CANCEL) in SUBSCRIPTION_MOVES
        body = {"at_period_end": at_period_end}
        got = self.act(self.billing.cancel(self.owner_of[sub_id], sub_id, body))
        if not allowed:
            assert isinstance(got, AppError) and got.code == "billing.invalid_transition", got
            return
        assert not isinstance(got, AppError), (status, at_period_end, got)
        if at_period_end:
            assert got.cancel_at_period_end
        else:
            assert self.run(self._status(sub_id)) == SubscriptionStatus.CANCELED

    @precondition(live_subs)
    @rule(data=st.data(), card=st.sampled_from(CARDS))
    def switch_card(self, data: st.DataObject, card: str) -> None:
        sub_id = data.draw(st.sampled_from(self.subs))
        user = self.owner_of[sub_id]
        status = self.run(self._status(sub_id))
        method = self.run(self._card(user, card))
        got = self.act(self.billing.update(user, sub_id, {"payment_method": method}))
        if status in TERMINAL:
            assert isinstance(got, AppError) and got.code == "billing.invalid_transition", got
            return
        assert not isinstance(got, AppError), (status, got)
        assert got.payment_method == method
        assert self.run(self._status(sub_id)) == status  # a switch keeps the status

    @precondition(live_subs)
    @rule(data=st.data())
    def pay_open_invoice_now(self, data: st.DataObject) -> None:
        """``POST /invoices/{id}/pay`` of an open invoice: the customer retries it now."""
        i = invoices.c
        q = select(i.id, i.owner_id).where(i.status == "open").order_by(i.seq)
        found = self.run(self._rows(q))
        if not found:
            return
        invoice_id, owner_id = data.draw(st.sampled_from(found))
        got = self.act(self.billing.pay_invoice(owner_id, invoice_id))
        assert not isinstance(got, AppError), got

    @precondition(live_subs)
    @rule(data=st.data(), amount=st.integers(-800, 800).filter(bool))
    def add_one_off_line(self, data: st.DataObject, amount: int) -> None:
        """An admin's one-off line (a credit when negative) for the next invoice."""
        sub_id = data.draw(st.sampled_from(self.subs))
        status = self.run(self._status(sub_id))
        body = {"description": "One-off", "amount_minor": amount}
        got = self.act(self.billing.add_invoice_item("usr_admin", self.key(), sub_id, body))
        if status in TERMINAL:
            assert isinstance(got, AppError) and got.code == "billing.invalid_transition", got
            return
        assert not isinstance(got, AppError), (status, got)
        assert got.invoice_id is None and got.amount_minor == amount

    @precondition(live_subs)
    @rule(data=st.data())
    def void_open_invoice(self, data: st.DataObject) -> None:
        """An admin voids an open invoice (at rest: no charge of it in flight)."""
        i = invoices.c
        found = self.run(self._rows(select(i.id).where(i.status == "open").order_by(i.seq)))
        if not found:
            return
        (invoice_id,) = data.draw(st.sampled_from(found))
        got = self.act(self.billing.void_invoice(invoice_id))
        assert not isinstance(got, AppError), got
        assert got.status == "void"
        self.voided[invoice_id] = self.run(
            self._scalar(select(func.count()).where(charges.c.invoice_id == invoice_id))
        )

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def voided_invoices_are_never_charged_again(self) -> None:
        for invoice_id, n in self.voided.items():
            q = select(func.count()).where(charges.c.invoice_id == invoice_id)
            assert self.run(self._scalar(q)) == n, invoice_id
            q = select(invoices.c.status).where(invoices.c.id == invoice_id)
            assert self.run(self._scalar(q)) == "void", invoice_id

    @invariant()
    def each_one_off_line_is_on_one_invoice(self) -> None:
        """A taken one-off line is on its invoice exactly once (same amounts per invoice)."""
        p, line = pending_lines.c, invoice_lines.c
        taken = self.run(
            self._rows(
                select(p.invoice_id, func.count(), func.sum(p.amount_minor))
                .where(p.kind == "one_off", p.invoice_id.is_not(None))
                .group_by(p.invoice_id)
            )
        )
        billed = self.run(
            self._rows(
                select(line.invoice_id, func.count(), func.sum(line.amount_minor))
                .where(line.kind == "one_off")
                .group_by(line.invoice_id)
            )
        )
        assert sorted(taken) == sorted(billed), (taken, billed)

    @invariant()
    def one_invoice_per_period_and_totals_equal_lines(self) -> None:
        i, line = invoices.c, invoice_lines.c
        per_period = self.run(
            self._rows(
                select(i.subscription_id, i.period_start, func.count())
                .group_by(i.subscription_id, i.period_start)
                .having(func.count() > 1)
            )
        )
        assert per_period == [], per_period
        sums = (
            select(line.invoice_id, func.sum(line.amount_minor).label("s"))
            .group_by(line.invoice_id)
            .subquery()
        )
        rows = self.run(
            self._rows(
                select(i.id, i.status, i.total_minor, sums.c.s).outerjoin(
                    sums, sums.c.invoice_id == i.id
                )
            )
        )
        for inv_id, status, total, lines in rows:
            if status != "draft":
                assert total == int(lines or 0), (inv_id, status, total, lines)

    @invariant()
    def one_charge_per_paid_invoice_and_revenue_equals_paid_invoices(self) -> None:
        i, c = invoices.c, charges.c
        succeeded = self.run(
            self._rows(
                select(c.invoice_id, func.count())
                .where(c.status == "succeeded")
                .group_by(c.invoice_id)
            )
        )
        twice = [(inv, n) for inv, n in succeeded if n > 1]
        assert twice == [], f"invoices charged more than once: {twice}"
        paid = self.run(self._rows(select(i.id, i.total_minor, i.amount_paid_minor, i.status)))
        charged = {inv for inv, _ in succeeded}
        paid_costly = {inv for inv, total, _, status in paid if status == "paid" and total > 0}
        assert charged == paid_costly, (
            f"charged but not paid: {sorted(charged - paid_costly)}; "
            f"paid without a charge: {sorted(paid_costly - charged)}"
        )
        for inv, total, amount_paid, status in paid:
            assert amount_paid == (total if status == "paid" else 0), (inv, status, amount_paid)
        paid_sum = sum(amount for _, _, amount, status in paid if status == "paid")
        b = balances.c
        received = self.run(
            self._rows(
                select(
                    func.coalesce(func.sum(b.credits_posted), 0),
                    func.coalesce(func.sum(b.debits_posted), 0),
                ).where(b.account_id == REVENUE)
            )
        )[0]
        assert int(received[0]) - int(received[1]) == paid_sum, (
            f"{REVENUE} received {received[0]} (debited {received[1]}), "
            f"paid invoices sum to {paid_sum}"
        )

    @invariant()
    def wallets_never_below_zero_and_ledger_check_is_clean(self) -> None:
        b = balances.c
        rows = self.run(
            self._rows(
                select(
                    b.account_id,
                    func.sum(b.credits_posted - b.debits_posted - b.debits_pending),
                )
                .where(b.account_id.like("wal\\_%", escape="\\"))
                .group_by(b.account_id)
            )
        )
        assert all(int(v) >= 0 for _, v in rows), rows
        assert self.run(run_check(self.stack.runtime.engine)) == []

    @invariant()
    def subscription_moves_follow_the_state_table(self) -> None:
        o, s = outbox.c, subscriptions.c
        events = self.run(
            self._rows(
                select(o.type, o.data)
                .where(o.type.in_(["billing.subscription.created", "billing.subscription.updated"]))
                .order_by(o.seq)
            )
        )
        last: dict[str, str] = {}
        for kind, data in events:
            sub_id, status = data["subscription_id"], data["status"]
            if kind == "billing.subscription.created":
                last[sub_id] = status
                continue
            previous, cause = data["previous_status"], data["cause"]
            assert last.get(sub_id) == previous, (sub_id, last.get(sub_id), data)
            if cause in KEEPS_STATUS:
                assert status == previous, data
            else:
                move = (SubscriptionStatus(previous), SubscriptionEvent(cause))
                assert SUBSCRIPTION_MOVES.get(move) == status, data
            last[sub_id] = status
        stored = dict(self.run(self._rows(select(s.id, s.status))))
        assert stored == last, (stored, last)
        assert set(stored) == set(self.subs)


# No shrink phase (as the ledger's machine): every example starts a stack, and a failure is
# reported with its steps as generated (at most 12) and replayed first on the next run.
BillingMachine.TestCase.settings = settings(
    max_examples=12,
    stateful_step_count=12,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestBillingStateMachine = BillingMachine.TestCase


class _Draw:
    """A stand-in for ``st.data()`` that draws a value chosen in advance."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def draw(self, _strategy: Any) -> Any:
        return self.value


def test_paying_an_open_invoice_of_a_canceled_subscription() -> None:
    """Found by the machine: subscribe from an empty wallet (incomplete, its first invoice
    open), cancel now (the invoice stays open: the customer may pay), top the wallet up, pay
    the invoice now. The money was taken and the invoice stayed open (the canceled
    subscription could not move); now the invoice is paid and the subscription stays canceled."""
    machine = BillingMachine()
    machine.quiet_timeout = 3.0
    try:
        machine.subscribe(user=USERS[0], plan=0, source="wallet")
        machine.cancel(data=_Draw(machine.subs[0]), at_period_end=False)
        machine.top_up(user=USERS[0], amount=2000)
        q = select(invoices.c.id, invoices.c.owner_id).where(invoices.c.status == "open")
        (open_,) = machine.run(machine._rows(q))
        got = machine.act(machine.billing.pay_invoice(open_[1], open_[0]))
        assert not isinstance(got, AppError), got
        machine.one_charge_per_paid_invoice_and_revenue_equals_paid_invoices()
        machine.subscription_moves_follow_the_state_table()
    finally:
        machine.teardown()
