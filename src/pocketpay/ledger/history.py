"""Balances at any time, and ``pocketpay ledger replay`` (the event-sourcing check).

Every transfer that changes an unsharded account (a wallet) writes the account's four
counters after it to ``ledger_balance_history`` in the transfer's transaction
(``service._apply``). The balance at a time is the account's last history row at or before
it: one index seek on ``(account_id, created_at, seq)``, whatever the history's length. Rows
carry the writing transaction's clock; two transactions on one account a few milliseconds
apart may commit in the other order than their clocks, so an instant between them may show
either order.

``replay`` rebuilds every history row from the immutable transfers and reports each
difference: a row whose counters are not the previous row's plus its transfer's effect, a
transfer of the account without a row or a row without a transfer, and a stored balance that
is not the last row. It replays each account in its history's order (the order the balance
row's lock gave the writers), which is the order the counters were written in.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from pocketpay.ledger.models import accounts, balance_history, balances, transfers

# debits_pending, debits_posted, credits_pending, credits_posted
Counters = tuple[int, int, int, int]
ZERO: Counters = (0, 0, 0, 0)


@dataclass(frozen=True)
class _Transfer:
    id: str
    debit: str
    credit: str
    amount: int
    kind: str
    pending_id: str | None
    tombstone: bool


def effect(t: _Transfer, pending: dict[str, _Transfer], account_id: str) -> Counters:
    """What transfer ``t`` adds to ``account_id``'s counters (its debit or credit side)."""
    debit = account_id == t.debit
    if t.kind == "posted":
        return (0, t.amount, 0, 0) if debit else (0, 0, 0, t.amount)
    if t.kind == "pending":
        if t.tombstone:
            return ZERO  # written already voided, never touched a balance
        return (t.amount, 0, 0, 0) if debit else (0, 0, t.amount, 0)
    hold = pending[t.pending_id or ""]
    if hold.tombstone:
        return ZERO
    posted = t.amount if t.kind == "post_pending" else 0
    return (-hold.amount, posted, 0, 0) if debit else (0, 0, -hold.amount, posted)


def add(a: Counters, b: Counters) -> Counters:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3])


async def balance_at(conn: AsyncConnection, account_id: str, at: datetime) -> Counters | None:
    """The account's counters after its last transfer at or before ``at`` (None: no
    transfer of it by then)."""
    h = balance_history.c
    row = (
        await conn.execute(
            select(h.debits_pending, h.debits_posted, h.credits_pending, h.credits_posted)
            .where(h.account_id == account_id, h.created_at <= at)
            .order_by(h.created_at.desc(), h.seq.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else (int(row[0]), int(row[1]), int(row[2]), int(row[3]))


async def replay(conn: AsyncConnection) -> list[str]:
    """Every difference between the stored history (and balances) and the transfers; empty
    means every running balance is right. Reads in the caller's snapshot."""
    a = accounts.c
    unsharded = set((await conn.execute(select(a.id).where(a.shards == 1))).scalars())
    moved, pending = await _transfers_of(conn, unsharded)
    stored = await _history(conn)
    problems: list[str] = []
    for account in sorted(unsharded):
        problems += _check_account(account, stored.get(account, []), moved[account], pending)
    problems += await _check_balances(conn, stored)
    return problems


async def _transfers_of(
    conn: AsyncConnection, unsharded: set[str]
) -> tuple[dict[str, dict[str, _Transfer]], dict[str, _Transfer]]:
    t = transfers.c
    rows = await conn.stream(
        select(t.id, t.debit_account_id, t.credit_account_id, t.amount_minor, t.kind)
        .add_columns(t.pending_id, t.user_data)
        .order_by(t.seq)
    )
    moved: dict[str, dict[str, _Transfer]] = defaultdict(dict)
    pending: dict[str, _Transfer] = {}
    async for r in rows:
        tr = _Transfer(r[0], r[1], r[2], int(r[3]), r[4], r[5], bool((r[6] or {}).get("tombstone")))
        if tr.kind == "pending":
            pending[tr.id] = tr
        for side in (tr.debit, tr.credit):
            if side in unsharded:
                moved[side][tr.id] = tr
    return moved, pending


async def _history(conn: AsyncConnection) -> dict[str, list[tuple[str, Counters]]]:
    h = balance_history.c
    rows = await conn.stream(
        select(
            h.account_id,
            h.transfer_id,
            h.debits_pending,
            h.debits_posted,
            h.credits_pending,
            h.credits_posted,
        ).order_by(h.account_id, h.seq)
    )
    out: dict[str, list[tuple[str, Counters]]] = defaultdict(list)
    async for r in rows:
        out[r[0]].append((r[1], (int(r[2]), int(r[3]), int(r[4]), int(r[5]))))
    return out


def _check_account(
    account: str,
    rows: list[tuple[str, Counters]],
    moved: dict[str, _Transfer],
    pending: dict[str, _Transfer],
) -> list[str]:
    problems: list[str] = []
    running = ZERO
    seen: set[str] = set()
    for transfer_id, counters in rows:
        tr = moved.get(transfer_id)
        if tr is None:
            problems.append(f"{account}: history row for {transfer_id}, which is not its transfer")
            running = counters
            continue
        seen.add(transfer_id)
        running = add(running, effect(tr, pending, account))
        if counters != running:
            problems.append(
                f"{account}: after {transfer_id} the history says {list(counters)} but the "
                f"transfers give {list(running)}"
            )
            running = counters
    for transfer_id, tr in moved.items():
        if transfer_id not in seen and effect(tr, pending, account) != ZERO:
            problems.append(f"{account}: transfer {transfer_id} has no history row")
    return problems


async def _check_balances(
    conn: AsyncConnection, stored: dict[str, list[tuple[str, Counters]]]
) -> list[str]:
    b = balances.c
    a = accounts.c
    rows = await conn.execute(
        select(b.account_id, b.debits_pending, b.debits_posted, b.credits_pending)
        .add_columns(b.credits_posted)
        .join(accounts, a.id == b.account_id)
        .where(a.shards == 1)
    )
    problems: list[str] = []
    for r in rows:
        have: Counters = (int(r[1]), int(r[2]), int(r[3]), int(r[4]))
        history = stored.get(r[0])
        last = history[-1][1] if history else ZERO
        if have != last:
            problems.append(f"{r[0]}: balance {list(have)} but its history ends at {list(last)}")
    return problems
