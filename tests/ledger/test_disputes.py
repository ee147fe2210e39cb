"""Disputes in the ledger, on SQLite and on PostgreSQL: the payments side's dispute events
(``payments.dispute.created/updated/closed``) through the ledger's own consumer.

Open holds what the wallet still has and makes the rest a debt at once; won gives it all back
(the debt part reinstated, then repaid); lost posts the hold and pays the PSP back. The next
credits of a wallet repay its debt first (a card top-up, a transfer received). Events in any
order and redelivered end in the same balances; inquiries move nothing; a hypothesis property
keeps the invariants (sums zero, no negative debt or wallet, the check and the replay clean)
over random sequences."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.bus import Envelope
from pocketpay.kit.clock import ManualClock
from pocketpay.kit.errors import AppError
from pocketpay.kit.ids import new_id
from pocketpay.kit.listing import Page
from pocketpay.ledger import history, service
from pocketpay.ledger.api import LedgerApi
from pocketpay.ledger.chart import debt_account_id, system_account_id, wallet_account_id
from pocketpay.ledger.check import run_check
from pocketpay.ledger.client import HttpLedgerClient
from pocketpay.ledger.consumers import LedgerConsumer
from pocketpay.ledger.errors import InvalidTransfer
from pocketpay.ledger.models import outbox, transfers
from tests.support import ledger_only

DISPUTES = system_account_id("disputes", "USD")
SETTLED = system_account_id("psp_settled", "USD")
REVENUE = system_account_id("revenue", "USD")


@dataclass
class Ledger:
    api: LedgerApi
    http: HttpLedgerClient
    engine: AsyncEngine

    async def deliver(self, event_type: str, data: dict[str, Any], event_id: str = "") -> None:
        clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
        eid = event_id or new_id("evt")
        env = Envelope(eid, event_type, clock.now(), data, source="payments")
        await LedgerConsumer(self.engine, clock)(env)

    async def top_up(self, owner: str, amount: int, purpose: str = "top_up") -> str:
        """A card payment captured (the capture places its authorization hold first)."""
        payment_id = new_id("pay")
        d = {
            "payment_id": payment_id,
            "owner_id": owner,
            "currency": "USD",
            "amount_minor": amount,
            "amount_captured_minor": amount,
            "purpose": purpose,
        }
        await self.deliver("payments.payment.captured", d)
        return payment_id

    async def send(self, sender: str, recipient: str, amount: int) -> None:
        body = {
            "idempotency_key": uuid.uuid4().hex,
            "sender_id": sender,
            "recipient_id": recipient,
            "amount_minor": amount,
            "currency": "USD",
        }
        await self.api.send(body)

    async def balance(self, account_id: str) -> service.Balance:
        async with self.engine.connect() as conn:
            return await service.balance(conn, account_id)

    async def figures(self, owner: str) -> tuple[int, int, int]:
        """(available, posted, debt) of the owner's USD wallet."""
        w = await self.balance(wallet_account_id(owner, "USD"))
        d = await self.balance(debt_account_id(owner, "USD"))
        return w.available_minor, w.posted_minor, d.debits_posted - d.credits_posted

    async def transfer_ids(self, *, like: str) -> set[str]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(transfers.c.id).where(transfers.c.id.like(like)))
            return set(rows.scalars())

    async def wallet_events(self, owner: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(outbox.c.data)
                .where(outbox.c.type == "ledger.wallet.updated")
                .order_by(outbox.c.seq)
            )
            return [dict(r.data) for r in rows if r.data["owner_id"] == owner]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    async with ledger_only(request.param, tmp_path) as parts:
        yield Ledger(*parts)


def owner() -> str:
    return f"usr_{uuid.uuid4().hex[:12]}"


def dispute(
    owner_id: str, payment_id: str, amount: int, status: str = "needs_response", **kw: Any
) -> dict[str, Any]:
    return {
        "id": kw.pop("id", new_id("dp")),
        "object": "dispute",
        "payment_id": payment_id,
        "owner_id": owner_id,
        "currency": "USD",
        "amount_minor": amount,
        "status": status,
        "reason": "fraudulent",
        "purpose": kw.pop("purpose", "top_up"),
        "evidence_due_by": None,
        "created_at": "2026-01-01T00:00:00+00:00",
    } | kw


async def system_balances(ledger: Ledger) -> tuple[int, int]:
    """(disputes posted, PSP settled posted) now."""
    d, s = await ledger.balance(DISPUTES), await ledger.balance(SETTLED)
    return d.posted_minor, s.posted_minor


# -- open, won, lost ---------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["won", "lost"])
async def test_a_covered_dispute_is_held_then_given_back_or_lost(
    ledger: Ledger, outcome: str
) -> None:
    alice = owner()
    pay = await ledger.top_up(alice, 1000)
    before = await system_balances(ledger)
    d = dispute(alice, pay, 1000)
    await ledger.deliver("payments.dispute.created", d)
    assert await ledger.figures(alice) == (0, 1000, 0)  # held, not yet gone
    await ledger.deliver("payments.dispute.closed", d | {"status": outcome})
    disputes, psp = await system_balances(ledger)
    if outcome == "won":
        assert await ledger.figures(alice) == (1000, 1000, 0)
        assert (disputes, psp) == before
    else:
        assert await ledger.figures(alice) == (0, 0, 0)
        assert (disputes, psp) == (before[0], before[1] + 1000)
    assert await run_check(ledger.engine) == []


async def test_a_partly_spent_wallet_owes_the_rest_and_its_next_credits_repay_it(
    ledger: Ledger,
) -> None:
    alice, bob = owner(), owner()
    pay = await ledger.top_up(alice, 1000)
    await ledger.top_up(bob, 2000)
    await ledger.send(alice, bob, 600)
    d = dispute(alice, pay, 1000)
    await ledger.deliver("payments.dispute.created", d)
    assert await ledger.figures(alice) == (0, 400, 600)  # 400 held, 600 owed at once
    events = await ledger.wallet_events(alice)
    assert (events[-1]["debt_minor"], events[-1]["debt_account_id"]) == (
        600,
        debt_account_id(alice, "USD"),
    )

    await ledger.top_up(alice, 250)  # a card top-up repays first
    assert await ledger.figures(alice) == (0, 400, 350)
    assert (await ledger.wallet_events(alice))[-1]["debt_minor"] == 350
    await ledger.send(bob, alice, 500)  # so does a transfer received
    assert await ledger.figures(alice) == (150, 550, 0)
    assert (await ledger.wallet_events(alice))[-1]["debt_minor"] == 0
    assert len(await ledger.transfer_ids(like="debt_repay:%")) == 2

    await ledger.deliver("payments.dispute.closed", d | {"status": "lost"})
    assert await ledger.figures(alice) == (150, 150, 0)
    assert (await ledger.balance(DISPUTES)).posted_minor == 0
    assert await run_check(ledger.engine) == []


async def test_a_fully_spent_wallet_owes_it_all_and_a_win_clears_the_debt(ledger: Ledger) -> None:
    alice, bob = owner(), owner()
    pay = await ledger.top_up(alice, 1000)
    await ledger.send(alice, bob, 1000)
    d = dispute(alice, pay, 1000)
    await ledger.deliver("payments.dispute.created", d)
    assert await ledger.figures(alice) == (0, 0, 1000)
    assert await ledger.transfer_ids(like=f"dispute_%:{d['id']}") == {f"dispute_debt:{d['id']}"}
    await ledger.deliver("payments.dispute.closed", d | {"status": "won"})
    assert await ledger.figures(alice) == (0, 0, 0)  # reinstated, then repaid
    assert (await ledger.balance(DISPUTES)).posted_minor == 0
    assert await run_check(ledger.engine) == []


async def test_a_win_after_a_partial_repayment_gives_the_repayment_back(ledger: Ledger) -> None:
    alice, bob = owner(), owner()
    pay = await ledger.top_up(alice, 1000)
    await ledger.send(alice, bob, 600)
    d = dispute(alice, pay, 1000)
    await ledger.deliver("payments.dispute.created", d)
    await ledger.top_up(alice, 250)
    assert await ledger.figures(alice) == (0, 400, 350)
    await ledger.deliver("payments.dispute.closed", d | {"status": "won"})
    # Where alice would be without the dispute: 1000 - 600 + 250.
    assert await ledger.figures(alice) == (650, 650, 0)
    assert await run_check(ledger.engine) == []


async def test_an_invoice_dispute_holds_revenue_whatever_it_has(ledger: Ledger) -> None:
    alice = owner()
    pay = await ledger.top_up(alice, 700, purpose="invoice")
    revenue = (await ledger.balance(REVENUE)).available_minor
    d = dispute(alice, pay, 700, purpose="invoice")
    await ledger.deliver("payments.dispute.created", d)
    assert (await ledger.balance(REVENUE)).available_minor == revenue - 700
    await ledger.deliver("payments.dispute.closed", d | {"status": "lost"})
    assert (await ledger.balance(REVENUE)).posted_minor == revenue - 700
    assert await ledger.figures(alice) == (0, 0, 0)  # the wallet never saw it
    assert await run_check(ledger.engine) == []


# -- order, redelivery, inquiries, contradictions -----------------------------------------


async def _partly_spent(ledger: Ledger) -> tuple[str, dict[str, Any]]:
    alice = owner()
    pay = await ledger.top_up(alice, 1000)
    await ledger.send(alice, owner(), 600)
    return alice, dispute(alice, pay, 1000)


@pytest.mark.parametrize("outcome", ["won", "lost"])
async def test_any_order_and_redelivery_end_in_the_same_balances(
    ledger: Ledger, outcome: str
) -> None:
    results = set()
    orders = list(itertools.permutations(["created", "updated", "closed"]))
    for order in orders:
        alice, d = await _partly_spent(ledger)
        events = {
            "created": d,
            "updated": d | {"status": "under_review"},
            "closed": d | {"status": outcome},
        }
        ids = {name: new_id("evt") for name in order}
        for name in order:
            await ledger.deliver(f"payments.dispute.{name}", events[name], ids[name])
        after = await ledger.figures(alice)
        for name in order:  # redelivered: the same event (inbox) and a copy (transfer ids)
            await ledger.deliver(f"payments.dispute.{name}", events[name], ids[name])
            await ledger.deliver(f"payments.dispute.{name}", events[name])
        assert await ledger.figures(alice) == after
        results.add(after)
    assert results == {(400, 400, 0) if outcome == "won" else (0, 0, 600)}  # lost: still owed
    assert (await ledger.balance(DISPUTES)).posted_minor == 0
    assert await run_check(ledger.engine) == []


async def test_inquiries_move_nothing(ledger: Ledger) -> None:
    alice = owner()
    pay = await ledger.top_up(alice, 1000)
    d = dispute(alice, pay, 1000, status="warning_needs_response")
    await ledger.deliver("payments.dispute.created", d)
    await ledger.deliver("payments.dispute.updated", d | {"status": "warning_under_review"})
    await ledger.deliver("payments.dispute.closed", d | {"status": "warning_closed"})
    assert await ledger.figures(alice) == (1000, 1000, 0)
    assert await ledger.transfer_ids(like=f"dispute_%:{d['id']}") == set()


async def test_an_inquiry_turned_chargeback_holds_from_its_update(ledger: Ledger) -> None:
    alice = owner()
    pay = await ledger.top_up(alice, 1000)
    d = dispute(alice, pay, 1000, status="warning_needs_response")
    await ledger.deliver("payments.dispute.created", d)
    assert await ledger.figures(alice) == (1000, 1000, 0)
    await ledger.deliver("payments.dispute.updated", d | {"status": "needs_response"})
    assert await ledger.figures(alice) == (0, 1000, 0)  # held now
    await ledger.deliver("payments.dispute.updated", d | {"status": "under_review"})
    assert await ledger.figures(alice) == (0, 1000, 0)  # once
    await ledger.deliver("payments.dispute.closed", d | {"status": "won"})
    assert await ledger.figures(alice) == (1000, 1000, 0)


async def test_contradictions_raise_and_change_nothing(ledger: Ledger) -> None:
    alice, d = await _partly_spent(ledger)
    await ledger.deliver("payments.dispute.closed", d | {"status": "lost"})
    after = await ledger.figures(alice)
    with pytest.raises(InvalidTransfer):  # won after lost
        await ledger.deliver("payments.dispute.closed", d | {"status": "won"})
    spent = owner()
    pay = await ledger.top_up(spent, 300)
    await ledger.send(spent, owner(), 300)
    e = dispute(spent, pay, 300)
    await ledger.deliver("payments.dispute.closed", e | {"status": "won"})
    with pytest.raises(InvalidTransfer):  # lost after won, no hold to tell
        await ledger.deliver("payments.dispute.closed", e | {"status": "lost"})
    with pytest.raises(InvalidTransfer):  # another amount than the one opened
        await ledger.deliver("payments.dispute.closed", d | {"status": "lost", "amount_minor": 9})
    with pytest.raises(InvalidTransfer):  # closed but not decided
        await ledger.deliver("payments.dispute.closed", d | {"status": "under_review"})
    assert await ledger.figures(alice) == after
    assert await ledger.figures(spent) == (0, 0, 0)
    assert await run_check(ledger.engine) == []


# -- views: wallets, accounts, entries -----------------------------------------------------


@pytest.mark.parametrize("kind", ["api", "http"])
async def test_wallets_and_accounts_show_the_debt(ledger: Ledger, kind: str) -> None:
    client = ledger.api if kind == "api" else ledger.http
    alice, bob = owner(), owner()
    pay = await ledger.top_up(alice, 1000)
    [fresh] = (await client.wallets(alice)).data
    assert (fresh.debt_minor, fresh.debt_account_id) == (0, None)
    await ledger.send(alice, bob, 600)
    await ledger.deliver("payments.dispute.created", dispute(alice, pay, 1000))
    debt_id = debt_account_id(alice, "USD")
    [wallet] = (await client.wallets(alice)).data
    assert (wallet.available_minor, wallet.debt_minor, wallet.debt_account_id) == (0, 600, debt_id)
    at = await client.wallet_at(alice, wallet.account_id, None)
    assert (at.debt_minor, at.account_type) == (600, "wallet")
    debt = await client.wallet_at(alice, debt_id, None)
    assert (debt.account_type, debt.posted_minor, debt.debt_minor) == ("debt", -600, 600)
    await ledger.top_up(alice, 100)
    # The debt at a past time comes from its own balance history (one shard).
    async with ledger.engine.connect() as conn:
        assert await history.replay(conn) == []
    later = await client.wallet_at(alice, debt_id, datetime(2030, 1, 1, tzinfo=UTC))
    assert later.debt_minor == 500
    entries = await client.account_entries(alice, debt_id, Page(limit=10))
    assert [(e.code, e.direction, e.amount_minor) for e in entries.data] == [
        ("debt_repayment", "credit", 100),
        ("dispute_debt", "debit", 600),
    ]
    for other in (bob, "usr_nobody"):
        with pytest.raises(AppError) as err:
            await client.account_entries(other, debt_id, Page(limit=10))
        assert err.value.code == "not_found"
        with pytest.raises(AppError):
            await client.wallet_at(other, debt_id, None)


# -- the property --------------------------------------------------------------------------

step = st.one_of(
    st.tuples(st.just("credit"), st.integers(1, 500)),
    st.tuples(st.just("spend"), st.integers(1, 500)),
    st.tuples(st.just("receive"), st.integers(1, 500)),
    st.tuples(st.just("open"), st.integers(0, 7)),
    st.tuples(st.sampled_from(["won", "lost"]), st.integers(0, 7)),
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(step, min_size=1, max_size=14))
async def test_any_sequence_keeps_the_invariants(
    ledger: Ledger, steps: list[tuple[str, int]]
) -> None:
    """Credits, spends, transfers received and disputes opened and closed (of earlier
    payments, in any order, some twice): after each step no debt and no wallet is negative,
    the owner's money plus debt never exceeds what came in, and the check stays clean."""
    alice, friend = owner(), owner()
    await ledger.top_up(friend, 100_000)
    payments: list[tuple[str, int]] = []
    closed: dict[str, str] = {}
    for action, n in steps:
        if action == "credit":
            payments.append((await ledger.top_up(alice, n), n))
        elif action in ("spend", "receive"):
            sender, recipient = (alice, friend) if action == "spend" else (friend, alice)
            try:
                await ledger.send(sender, recipient, n)
            except AppError as exc:
                assert exc.code == "ledger.insufficient_funds" and action == "spend"
        elif payments:
            pay, amount = payments[n % len(payments)]
            d = dispute(alice, pay, amount, id=f"dp_{pay}")
            if action == "open":
                await ledger.deliver("payments.dispute.created", d)
            elif closed.setdefault(d["id"], action) == action:
                await ledger.deliver("payments.dispute.closed", d | {"status": action})
        available, _, debt = await ledger.figures(alice)
        assert available >= 0 and debt >= 0
        assert available == 0 or debt == 0  # a debt is repaid before money is available
    disputes = await ledger.balance(DISPUTES)
    assert disputes.credits_posted >= disputes.debits_posted
    assert await run_check(ledger.engine) == []
    async with ledger.engine.connect() as conn:
        assert await history.replay(conn) == []
