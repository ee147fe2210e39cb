"""Ledger use cases. Functions take the caller's connection: only an entrypoint commits.

Rules (TigerBeetle's): transfers are immutable, amounts are positive integers, both accounts
share the currency, ids are chosen by the caller so a retried request is a no-op, and a
guarded account (a wallet) never lets debits exceed credits. Pending transfers reserve money
and are later posted (possibly for less) or voided.
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, union_all, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pocketpay.kit.clock import aware
from pocketpay.kit.db import insert_ignore
from pocketpay.kit.ids import new_id
from pocketpay.kit.listing import InvalidCursor, Page, created_filters
from pocketpay.kit.metrics import LEDGER_TRANSFERS
from pocketpay.kit.money import MAX_AMOUNT_MINOR
from pocketpay.kit.outbox import add_event
from pocketpay.ledger.chart import (
    AccountCode,
    TransferCode,
    debt_of_wallet,
    is_guarded,
    parse_account_id,
    shard_count,
    wallet_of_debt,
)
from pocketpay.ledger.errors import (
    InsufficientFunds,
    InvalidTransfer,
    PendingNotOpen,
    TransferIdConflict,
    TransferNotFound,
)
from pocketpay.ledger.models import accounts, balance_history, balances, outbox, transfers


@dataclass(frozen=True)
class TransferRequest:
    id: str
    debit_account_id: str
    credit_account_id: str
    amount_minor: int
    currency: str
    code: TransferCode
    pending: bool = False
    user_data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Balance:
    account_id: str
    currency: str
    debits_pending: int
    debits_posted: int
    credits_pending: int
    credits_posted: int

    @property
    def posted_minor(self) -> int:
        return self.credits_posted - self.debits_posted

    @property
    def pending_minor(self) -> int:
        return self.credits_pending - self.debits_pending

    @property
    def available_minor(self) -> int:
        return self.credits_posted - self.debits_posted - self.debits_pending


def _validate(req: TransferRequest) -> tuple[AccountCode, AccountCode]:
    if not 0 < req.amount_minor <= MAX_AMOUNT_MINOR:
        raise InvalidTransfer("amount_minor must be a positive integer within limits")
    if req.debit_account_id == req.credit_account_id:
        raise InvalidTransfer("a transfer needs two different accounts")
    try:
        d_code, _, d_cur = parse_account_id(req.debit_account_id)
        c_code, _, c_cur = parse_account_id(req.credit_account_id)
    except ValueError as exc:
        raise InvalidTransfer(str(exc)) from exc
    if not d_cur == c_cur == req.currency:
        raise InvalidTransfer("both accounts must be in the transfer's currency")
    return d_code, c_code


async def ensure_account(conn: AsyncConnection, account_id: str, now: datetime) -> None:
    code, owner, currency = parse_account_id(account_id)
    n = shard_count(code)
    await conn.execute(
        insert_ignore(conn, accounts),
        {
            "id": account_id,
            "code": int(code),
            "currency": currency,
            "owner_id": owner,
            "shards": n,
            "created_at": now,
        },
    )
    await conn.execute(
        insert_ignore(conn, balances),
        [
            {
                "account_id": account_id,
                "shard": s,
                "debits_pending": 0,
                "debits_posted": 0,
                "credits_pending": 0,
                "credits_posted": 0,
            }
            for s in range(n)
        ],
    )


async def _apply(conn: AsyncConnection, ch: _Change, now: datetime) -> None:
    """Add ``ch.deltas`` to one balance row. With ``ch.guard_amount``, refuse
    (InsufficientFunds) unless the account's available balance covers it, in the same atomic
    UPDATE. An unsharded account's new counters (``RETURNING``) go to its balance history,
    tagged with the transfer."""
    if ch.code == AccountCode.WALLET:
        conn.info.setdefault(_TOUCHED, set()).add(ch.account_id)
    elif ch.code == AccountCode.DEBT:  # the wallet's view carries its debt
        conn.info.setdefault(_TOUCHED, set()).add(wallet_of_debt(ch.account_id))
    guarded = ch.guard_amount is not None and is_guarded(ch.code)
    history = shard_count(ch.code) == 1
    stmt = _balance_update(tuple(ch.deltas), guarded, history)
    params: dict[str, Any] = {"w_account": ch.account_id, "w_shard": ch.shard}
    params |= {f"d_{col}": delta for col, delta in ch.deltas.items()}
    if guarded:
        params["w_guard"] = ch.guard_amount
    result = await conn.execute(stmt, params)
    after = result.first() if history else None
    if after is None if history else result.rowcount == 0:
        if guarded:
            raise InsufficientFunds("The wallet's available balance does not cover this amount.")
        await ensure_account(conn, ch.account_id, now)
        result = await conn.execute(stmt, params)
        after = result.first() if history else None
    if after is not None:
        await conn.execute(
            _INSERT_HISTORY,
            {
                "account_id": ch.account_id,
                "transfer_id": ch.transfer_id,
                "debits_pending": after[0],
                "debits_posted": after[1],
                "credits_pending": after[2],
                "credits_posted": after[3],
                "created_at": now,
            },
        )


_INSERT_HISTORY = insert(balance_history)


# The wallets whose balance rows this connection's transaction changed (``unit`` reads it).
_TOUCHED = "ledger.touched_wallets"


@contextlib.asynccontextmanager
async def unit(engine: AsyncEngine, now: datetime) -> AsyncIterator[AsyncConnection]:
    """The ledger's unit of work: a transaction that, before it commits, repays the debts of
    the wallets it credited (``repay_debts``) and writes one ``ledger.wallet.updated`` event
    per user wallet whose balance (or debt) it changed, however many transfers touched it,
    carrying the wallet as the API shows it. Entrypoints that move money open this instead of
    ``engine.begin()``."""
    async with engine.begin() as conn:
        conn.info.pop(_TOUCHED, None)  # a rolled-back transaction's leftovers
        yield conn
        touched = conn.info.pop(_TOUCHED, set())
        if touched:
            views = await repay_debts(conn, sorted(touched), now)
            conn.info.pop(_TOUCHED, None)  # the repayments touched the same wallets again
            for view in views:
                await add_event(conn, outbox, "ledger.wallet.updated", view, now)


async def repay_debts(
    conn: AsyncConnection, wallet_ids: list[str], now: datetime
) -> list[dict[str, Any]]:
    """Debts are repaid first by the next credits: each wallet of ``wallet_ids`` whose owner
    owes in its currency and which has money available pays ``min(available, debt)`` to its
    debt account (posted ``debt_repay:<new id>``). Returns the wallets' views after it.

    One query reads the balances of all the wallets and of their debt accounts (it replaces
    the one read per wallet the events needed), so the transfer hot path pays nothing more
    while nobody owes. The figures are exact: a wallet here was written by this transaction
    (its row is locked until the commit; SQLite has one writer), and every change of a debt
    takes its wallet's row first (``lock_wallet`` in the dispute handlers; a repayment debits
    the wallet before it credits the debt), so no other transaction repays the same debt
    meanwhile and a debt never goes below zero."""
    debt_ids = {w: debt_of_wallet(w) for w in wallet_ids}
    figures = await balances_of(conn, [*wallet_ids, *debt_ids.values()])
    views = []
    for wallet_id in wallet_ids:
        _, _, currency = parse_account_id(wallet_id)
        b = figures.get(wallet_id) or Balance(wallet_id, currency, 0, 0, 0, 0)
        d = figures.get(debt_ids[wallet_id])
        debt = d.debits_posted - d.credits_posted if d else 0
        repay = min(b.available_minor, debt)
        if repay > 0:
            await create_transfer(
                conn,
                TransferRequest(
                    id=f"debt_repay:{new_id('rp')}",
                    debit_account_id=wallet_id,
                    credit_account_id=debt_ids[wallet_id],
                    amount_minor=repay,
                    currency=currency,
                    code=TransferCode.DEBT_REPAYMENT,
                ),
                now,
            )
            b = replace(b, debits_posted=b.debits_posted + repay)
            debt -= repay
        views.append(wallet_view(b, debt, debt_ids[wallet_id] if d else None))
    return views


async def balances_of(conn: AsyncConnection, account_ids: list[str]) -> dict[str, Balance]:
    """The balances of the given accounts that exist, in one query."""
    rows = (await conn.execute(_BALANCES_OF, {"w_ids": account_ids})).all()
    out = {}
    for r in rows:
        _, _, currency = parse_account_id(r[0])
        out[r[0]] = Balance(r[0], currency, *(int(v) for v in r[1:]))
    return out


_BALANCES_OF = (  # built once; the ids are bound at execution (an expanding IN)
    select(
        balances.c.account_id,
        func.sum(balances.c.debits_pending),
        func.sum(balances.c.debits_posted),
        func.sum(balances.c.credits_pending),
        func.sum(balances.c.credits_posted),
    )
    .where(balances.c.account_id.in_(bindparam("w_ids", expanding=True)))
    .group_by(balances.c.account_id)
)


async def lock_wallet(conn: AsyncConnection, wallet_id: str, now: datetime) -> None:
    """Take the wallet's balance row (PostgreSQL: ``FOR UPDATE``; SQLite has one writer)
    before a change of its owner's debt, so debts change under their wallet's row as
    repayments do (one lock order: no deadlock, no repayment of a stale debt)."""
    await ensure_account(conn, wallet_id, now)
    b = balances.c
    await conn.execute(select(b.shard).where(b.account_id == wallet_id).with_for_update())


def wallet_view(
    b: Balance, debt_minor: int = 0, debt_account_id: str | None = None
) -> dict[str, Any]:
    """A wallet as ``GET /api/v1/wallets`` shows it, plus its owner (``ledger.wallet.updated``).
    ``debt_minor``: what the owner owes in this currency (``debt_account_id``: the account,
    None if the owner never owed)."""
    _, owner_id, _ = parse_account_id(b.account_id)
    return {
        "id": b.account_id,
        "object": "wallet",
        "owner_id": owner_id,
        "currency": b.currency,
        "available_minor": b.available_minor,
        "pending_minor": b.pending_minor,
        "posted_minor": b.posted_minor,
        "debt_minor": debt_minor,
        "debt_account_id": debt_account_id,
    }


@functools.cache
def _balance_update(columns: tuple[str, ...], guarded: bool, returning: bool) -> Any:
    """``UPDATE balances SET col = col + :d_col ... WHERE account, shard [AND available >=
    :w_guard] [RETURNING the four counters]``, built once per shape (values are bound at
    execution; see kit.db)."""
    b = balances.c
    stmt = (
        update(balances)
        .where(b.account_id == bindparam("w_account"), b.shard == bindparam("w_shard"))
        .values({col: getattr(b, col) + bindparam(f"d_{col}") for col in columns})
    )
    if guarded:
        stmt = stmt.where(
            b.credits_posted - b.debits_posted - b.debits_pending >= bindparam("w_guard")
        )
    if returning:
        counters = (b.debits_pending, b.debits_posted, b.credits_pending, b.credits_posted)
        stmt = stmt.returning(*counters)
    return stmt


@dataclass(frozen=True)
class _Change:
    transfer_id: str
    account_id: str
    code: AccountCode
    shard: int
    deltas: dict[str, int]
    guard_amount: int | None = None


async def _apply_both(conn: AsyncConnection, now: datetime, *changes: _Change) -> None:
    """Apply a transfer's balance changes in one global order (account id, shard).

    Why: with debit-then-credit order, A->B and B->A at the same time lock the same two rows
    in opposite orders and PostgreSQL aborts one with a deadlock. If a guarded change is
    refused, the changes made before it are reverted, so the caller's transaction is left as
    it was even if the caller catches the error and commits its other work."""
    done: list[_Change] = []
    for ch in sorted(changes, key=lambda c: (c.account_id, c.shard)):
        try:
            await _apply(conn, ch, now)
        except InsufficientFunds:
            for prev in done:
                undo = {col: -delta for col, delta in prev.deltas.items()}
                await _apply(conn, replace(prev, deltas=undo, guard_amount=None), now)
            raise
        done.append(ch)


async def _forget(conn: AsyncConnection, transfer_id: str) -> None:
    """Remove a transfer row this transaction just inserted, when the transfer is refused,
    with the balance history rows its (undone) changes wrote."""
    await conn.execute(delete(transfers).where(transfers.c.id == transfer_id))
    await conn.execute(delete(balance_history).where(balance_history.c.transfer_id == transfer_id))


async def _insert_transfer(conn: AsyncConnection, values: dict[str, Any]) -> tuple[Row[Any], bool]:
    """Insert; returns (the row, True), or on an id already taken (the existing row, False)
    if it is the same transfer (a replay), else raises TransferIdConflict."""
    row = (await conn.execute(insert_ignore(conn, transfers, returning=True), values)).first()
    if row is not None:
        return row, True
    existing = (await conn.execute(_TRANSFER_BY_ID, {"w_id": values["id"]})).one()
    same = all(
        getattr(existing, k) == values[k]
        for k in (
            "debit_account_id",
            "credit_account_id",
            "amount_minor",
            "currency",
            "code",
            "kind",
            "pending_id",
        )
    )
    if not same:
        raise TransferIdConflict(f"transfer id {values['id']} exists with other values")
    return existing, False


_TRANSFER_BY_ID = select(transfers).where(transfers.c.id == bindparam("w_id"))


async def create_transfer(conn: AsyncConnection, req: TransferRequest, now: datetime) -> Row[Any]:
    d_code, c_code = _validate(req)
    d_shard = random.randrange(shard_count(d_code))
    c_shard = random.randrange(shard_count(c_code))
    kind = "pending" if req.pending else "posted"
    row, new = await _insert_transfer(
        conn,
        {
            "id": req.id,
            "debit_account_id": req.debit_account_id,
            "credit_account_id": req.credit_account_id,
            "amount_minor": req.amount_minor,
            "currency": req.currency,
            "code": int(req.code),
            "kind": kind,
            "pending_id": None,
            "pending_state": "open" if req.pending else None,
            "debit_shard": d_shard,
            "credit_shard": c_shard,
            "user_data": req.user_data,
            "created_at": now,
        },
    )
    if not new:
        return row
    col = "pending" if req.pending else "posted"
    try:
        await _apply_both(
            conn,
            now,
            _Change(
                req.id,
                req.debit_account_id,
                d_code,
                d_shard,
                {f"debits_{col}": req.amount_minor},
                req.amount_minor,
            ),
            _Change(
                req.id,
                req.credit_account_id,
                c_code,
                c_shard,
                {f"credits_{col}": req.amount_minor},
            ),
        )
    except InsufficientFunds:
        await _forget(conn, req.id)
        LEDGER_TRANSFERS.labels(req.code.name.lower(), "insufficient_funds").inc()
        raise
    LEDGER_TRANSFERS.labels(req.code.name.lower(), "posted").inc()
    return row


async def resolve_pending(
    conn: AsyncConnection,
    transfer_id: str,
    pending_id: str,
    now: datetime,
    *,
    post: bool,
    amount_minor: int | None = None,
    user_data: dict[str, Any] | None = None,
) -> Row[Any]:
    """Post (``post=True``, optionally for less) or void an open pending transfer."""
    pending = (await conn.execute(_TRANSFER_BY_ID, {"w_id": pending_id})).first()
    if pending is None or pending.kind != "pending":
        raise TransferNotFound(f"no pending transfer {pending_id}")
    amount = pending.amount_minor if amount_minor is None or not post else amount_minor
    if not 0 < amount <= pending.amount_minor:
        raise InvalidTransfer("a posted amount must be positive and at most the pending amount")
    row, new = await _insert_transfer(
        conn,
        {
            "id": transfer_id,
            "debit_account_id": pending.debit_account_id,
            "credit_account_id": pending.credit_account_id,
            "amount_minor": amount,
            "currency": pending.currency,
            "code": pending.code,
            "kind": "post_pending" if post else "void_pending",
            "pending_id": pending_id,
            "pending_state": None,
            "debit_shard": pending.debit_shard,
            "credit_shard": pending.credit_shard,
            "user_data": user_data or {},
            "created_at": now,
        },
    )
    if not new:
        return row
    res = await conn.execute(
        update(transfers)
        .where(transfers.c.id == pending_id, transfers.c.pending_state == "open")
        .values(pending_state="posted" if post else "voided")
    )
    if res.rowcount == 0:
        await _forget(conn, transfer_id)  # a caller may catch this and commit (late cancel)
        raise PendingNotOpen(f"pending transfer {pending_id} was already {pending.pending_state}")
    full = pending.amount_minor
    posted = amount if post else 0
    d_code, _, _ = parse_account_id(pending.debit_account_id)
    c_code, _, _ = parse_account_id(pending.credit_account_id)
    await _apply_both(
        conn,
        now,
        _Change(
            transfer_id,
            pending.debit_account_id,
            d_code,
            pending.debit_shard,
            {"debits_pending": -full, "debits_posted": posted},
        ),
        _Change(
            transfer_id,
            pending.credit_account_id,
            c_code,
            pending.credit_shard,
            {"credits_pending": -full, "credits_posted": posted},
        ),
    )
    LEDGER_TRANSFERS.labels(
        TransferCode(pending.code).name.lower(), "post_pending" if post else "void_pending"
    ).inc()
    return row


async def void_or_tombstone(
    conn: AsyncConnection,
    void_id: str,
    hold: TransferRequest,
    now: datetime,
    *,
    user_data: dict[str, Any] | None = None,
) -> Row[Any]:
    """Void the pending transfer ``hold``; if it does not exist yet (the void was handled
    before the event that creates the hold), write it as a tombstone: the hold's row, already
    voided, and the void, neither touching a balance. The hold's later creation then finds its
    id taken by an identical request and is a no-op."""
    assert hold.pending
    _validate(hold)
    _, tombstoned = await _insert_transfer(
        conn,
        {
            "id": hold.id,
            "debit_account_id": hold.debit_account_id,
            "credit_account_id": hold.credit_account_id,
            "amount_minor": hold.amount_minor,
            "currency": hold.currency,
            "code": int(hold.code),
            "kind": "pending",
            "pending_id": None,
            "pending_state": "voided",
            "debit_shard": 0,
            "credit_shard": 0,
            "user_data": hold.user_data | {"tombstone": True},
            "created_at": now,
        },
    )
    if not tombstoned:  # the hold exists: void it for real
        return await resolve_pending(conn, void_id, hold.id, now, post=False, user_data=user_data)
    row, _ = await _insert_transfer(
        conn,
        {
            "id": void_id,
            "debit_account_id": hold.debit_account_id,
            "credit_account_id": hold.credit_account_id,
            "amount_minor": hold.amount_minor,
            "currency": hold.currency,
            "code": int(hold.code),
            "kind": "void_pending",
            "pending_id": hold.id,
            "pending_state": None,
            "debit_shard": 0,
            "credit_shard": 0,
            "user_data": user_data or {},
            "created_at": now,
        },
    )
    LEDGER_TRANSFERS.labels(hold.code.name.lower(), "tombstone").inc()
    return row


async def find_transfer(conn: AsyncConnection, transfer_id: str) -> Row[Any] | None:
    return (await conn.execute(_TRANSFER_BY_ID, {"w_id": transfer_id})).first()


async def balance(conn: AsyncConnection, account_id: str) -> Balance:
    """Sum of the account's balance rows: at most SYSTEM_SHARDS rows, whatever the history."""
    _, _, currency = parse_account_id(account_id)
    b = balances.c
    row = (
        await conn.execute(
            select(
                func.coalesce(func.sum(b.debits_pending), 0),
                func.coalesce(func.sum(b.debits_posted), 0),
                func.coalesce(func.sum(b.credits_pending), 0),
                func.coalesce(func.sum(b.credits_posted), 0),
            ).where(b.account_id == account_id)
        )
    ).one()
    return Balance(account_id, currency, *(int(v) for v in row))


async def wallets(conn: AsyncConnection, owner_id: str) -> list[Balance]:
    """Every wallet of the owner with its balance, in one query (not one per wallet)."""
    return [wallet for wallet, _ in await wallets_and_debts(conn, owner_id)]


async def wallets_and_debts(
    conn: AsyncConnection, owner_id: str
) -> list[tuple[Balance, Balance | None]]:
    """Every wallet of the owner with its balance, and its debt account (None if the owner
    never owed in that currency), in one query (not one per wallet)."""
    rows = (await conn.execute(_WALLETS, {"w_owner": owner_id})).all()
    found = {r[0]: Balance(r[0], r[2], *(int(v) for v in r[3:])) for r in rows}
    wallet = int(AccountCode.WALLET)
    return [(found[r[0]], found.get(debt_of_wallet(r[0]))) for r in rows if r[1] == wallet]


_a, _b = accounts.c, balances.c
_WALLETS = (  # built once; the owner is bound at execution
    select(
        _a.id,
        _a.code,
        _a.currency,
        func.coalesce(func.sum(_b.debits_pending), 0),
        func.coalesce(func.sum(_b.debits_posted), 0),
        func.coalesce(func.sum(_b.credits_pending), 0),
        func.coalesce(func.sum(_b.credits_posted), 0),
    )
    .select_from(accounts.outerjoin(balances, _b.account_id == _a.id))
    .where(
        _a.owner_id == bindparam("w_owner"),
        _a.code.in_([int(AccountCode.WALLET), int(AccountCode.DEBT)]),
    )
    .group_by(_a.id, _a.code, _a.currency)
    .order_by(_a.currency, _a.code)
)


async def entries(conn: AsyncConnection, acct: str, page: Page) -> tuple[list[Row[Any]], bool]:
    """Transfers that touch an account (a wallet or a debt account), newest first, paged by
    ``seq`` (``starting_after``: older than that entry; ``ending_before``: the ones just
    newer, still answered newest first), within ``created[...]``; and whether more lie beyond
    in that direction. Entry cursors are seqs, so any number is a valid position (no
    lookup)."""
    if page.starting_after and page.ending_before:
        raise InvalidCursor("Send starting_after or ending_before, not both.")
    t = transfers.c
    newer = page.ending_before is not None
    take = page.limit + 1

    def side(column: Any) -> Any:
        # Each side walks its own (account, seq) index and stops after ``take`` rows, so the
        # page costs the same at 10 entries and at 100,000 (an OR of the two columns made
        # SQLite sort every matching row).
        q = select(transfers).where(column == acct, *created_filters(page, t.created_at))
        if page.starting_after is not None:
            q = q.where(t.seq < int(page.starting_after))
        if page.ending_before is not None:
            q = q.where(t.seq > int(page.ending_before))
        order = t.seq.asc() if newer else t.seq.desc()
        return q.order_by(order).limit(take).subquery().select()

    both = union_all(side(t.debit_account_id), side(t.credit_account_id)).subquery()
    order = both.c.seq.asc() if newer else both.c.seq.desc()
    rows = list((await conn.execute(select(both).order_by(order).limit(take))).all())
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    return (list(reversed(rows)) if newer else rows), more


def transfer_dict(row: Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "seq": row.seq,
        "debit_account_id": row.debit_account_id,
        "credit_account_id": row.credit_account_id,
        "amount_minor": row.amount_minor,
        "currency": row.currency,
        "code": TransferCode(row.code).name.lower(),
        "kind": row.kind,
        "pending_id": row.pending_id,
        "pending_state": row.pending_state,
        "user_data": row.user_data,
        "created_at": aware(row.created_at).isoformat(),
    }
