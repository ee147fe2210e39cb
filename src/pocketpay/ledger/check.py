"""``pocketpay check``: the ledger's invariants, recomputed from the immutable transfers.

1. Per currency, debits equal credits (posted and pending): money is conserved.
2. Every stored balance equals the sum of the transfers that touched the account.
3. No wallet's available balance is negative, and no debt account was repaid more than it
   owed (credits_posted > debits_posted): read from the stored balances already summed.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pocketpay.ledger.models import balances, transfers

Totals = dict[
    str, list[int]
]  # account -> [debits_pending, debits_posted, credits_pending, credits_posted]


async def _from_transfers(conn: AsyncConnection) -> Totals:
    totals: Totals = defaultdict(lambda: [0, 0, 0, 0])
    t = transfers.c
    rows = await conn.execute(
        select(
            t.debit_account_id,
            t.credit_account_id,
            t.kind,
            t.pending_state,
            func.sum(t.amount_minor),
        ).group_by(t.debit_account_id, t.credit_account_id, t.kind, t.pending_state)
    )
    for debit, credit, kind, state, amount in rows:
        amount = int(amount)
        if kind == "posted" or kind == "post_pending":
            totals[debit][1] += amount
            totals[credit][3] += amount
        elif kind == "pending" and state == "open":
            totals[debit][0] += amount
            totals[credit][2] += amount
    return totals


async def _stored(conn: AsyncConnection) -> Totals:
    b = balances.c
    rows = await conn.execute(
        select(
            b.account_id,
            func.sum(b.debits_pending),
            func.sum(b.debits_posted),
            func.sum(b.credits_pending),
            func.sum(b.credits_posted),
        ).group_by(b.account_id)
    )
    return {r[0]: [int(v) for v in r[1:]] for r in rows}


async def run_check(engine: AsyncEngine) -> list[str]:
    """Returns the problems found; empty means the ledger is consistent.

    Both sums are read in one snapshot (REPEATABLE READ on PostgreSQL; SQLite's transaction
    is one snapshot already), so transfers posted meanwhile cannot show up as a mismatch."""
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            derived, stored = await _from_transfers(conn), await _stored(conn)
    return _compare(derived, stored)


def _compare(derived: Totals, stored: Totals) -> list[str]:
    problems: list[str] = []
    for account in sorted(set(derived) | set(stored)):
        want = derived.get(account, [0, 0, 0, 0])
        have = stored.get(account, [0, 0, 0, 0])
        if want != have:
            problems.append(f"{account}: stored {have} but transfers sum to {want}")
    per_currency: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for account, (dp, dpo, cp, cpo) in stored.items():
        cur = account.rsplit("_", 1)[-1]
        per_currency[cur][0] += dpo - cpo
        per_currency[cur][1] += dp - cp
    for cur, (posted, pending) in sorted(per_currency.items()):
        if posted or pending:
            problems.append(f"{cur}: debits minus credits is {posted} posted, {pending} pending")
    return problems + _signs(stored)


def _signs(stored: Totals) -> list[str]:
    problems: list[str] = []
    for account, (dp, dpo, _cp, cpo) in sorted(stored.items()):
        if account.startswith("wal_") and cpo - dpo - dp < 0:
            problems.append(f"{account}: available balance {cpo - dpo - dp} is negative")
        if account.startswith("debt_") and cpo > dpo:
            problems.append(f"{account}: repaid {cpo} but owed {dpo} (a negative debt)")
    return problems
