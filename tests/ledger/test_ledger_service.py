"""The ledger service on a real database (SQLite and PostgreSQL): TigerBeetle's rules.

Every test drives ``pocketpay.ledger.service`` the way an entrypoint does: one
``engine.begin()`` unit of work per operation, committed when it returns and rolled back when
it raises. After each scenario ``run_check`` recomputes every balance from the transfers.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, func, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.errors import AppError
from pocketpay.kit.money import MAX_AMOUNT_MINOR
from pocketpay.ledger import service
from pocketpay.ledger.chart import (
    SYSTEM_SHARDS,
    TransferCode,
    system_account_id,
    wallet_account_id,
)
from pocketpay.ledger.check import run_check
from pocketpay.ledger.errors import (
    InsufficientFunds,
    InvalidTransfer,
    PendingNotOpen,
    TransferIdConflict,
    TransferNotFound,
)
from pocketpay.ledger.models import accounts, balances, transfers

NOW = datetime(2026, 1, 1, tzinfo=UTC)
USD = "USD"
RECV = system_account_id("psp_receivable", USD)
SETTLED = system_account_id("psp_settled", USD)
ALICE = wallet_account_id("alice", USD)
BOB = wallet_account_id("bob", USD)


def req(
    tid: str,
    debit: str,
    credit: str,
    amount: int,
    *,
    currency: str = USD,
    code: TransferCode = TransferCode.WALLET_TRANSFER,
    pending: bool = False,
    **user_data: Any,
) -> service.TransferRequest:
    return service.TransferRequest(
        tid, debit, credit, amount, currency, code, pending, dict(user_data)
    )


async def create(engine: AsyncEngine, r: service.TransferRequest) -> Row[Any]:
    async with engine.begin() as conn:
        return await service.create_transfer(conn, r, NOW)


async def resolve(
    engine: AsyncEngine, tid: str, pending_id: str, *, post: bool, amount: int | None = None
) -> Row[Any]:
    async with engine.begin() as conn:
        return await service.resolve_pending(
            conn, tid, pending_id, NOW, post=post, amount_minor=amount
        )


async def bal(engine: AsyncEngine, account_id: str) -> service.Balance:
    async with engine.connect() as conn:
        return await service.balance(conn, account_id)


async def fund(engine: AsyncEngine, wallet: str, amount: int, ref: str) -> None:
    """What a card capture does: a pending authorization from the PSP receivable, posted."""
    await create(
        engine,
        req(
            f"auth:{ref}", RECV, wallet, amount, code=TransferCode.CARD_AUTHORIZATION, pending=True
        ),
    )
    await resolve(engine, f"cap:{ref}", f"auth:{ref}", post=True)


async def snapshot(engine: AsyncEngine) -> tuple[list[Any], list[Any], list[Any]]:
    """Everything the ledger stores, to compare before and after a refused operation."""
    async with engine.connect() as conn:
        return (
            [tuple(r) for r in await conn.execute(select(accounts).order_by(accounts.c.id))],
            [
                tuple(r)
                for r in await conn.execute(
                    select(balances).order_by(balances.c.account_id, balances.c.shard)
                )
            ],
            [
                (r.id, r.kind, r.amount_minor, r.pending_state)
                for r in await conn.execute(select(transfers).order_by(transfers.c.seq))
            ],
        )


async def count_transfers(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(transfers))).scalar_one())


async def balance_rows(engine: AsyncEngine, account_id: str) -> int:
    async with engine.connect() as conn:
        q = select(func.count()).where(balances.c.account_id == account_id)
        return int((await conn.execute(q)).scalar_one())


def assert_code(exc: pytest.ExceptionInfo[AppError], code: str) -> None:
    assert exc.value.code == code
    assert exc.value.to_dict()["code"] == code


# -- balanced transfers ---------------------------------------------------------------------


async def test_a_posted_transfer_debits_one_account_and_credits_the_other(
    engine: AsyncEngine,
) -> None:
    row = await create(engine, req("t1", RECV, ALICE, 700, code=TransferCode.CARD_CAPTURE))
    assert (row.id, row.kind, row.amount_minor, row.currency) == ("t1", "posted", 700, USD)
    assert row.pending_state is None
    a, r = await bal(engine, ALICE), await bal(engine, RECV)
    assert (a.credits_posted, a.debits_posted, a.posted_minor, a.available_minor) == (
        700,
        0,
        700,
        700,
    )
    assert (r.debits_posted, r.credits_posted, r.posted_minor) == (700, 0, -700)
    # Balanced: what one side was debited, the other was credited.
    assert a.credits_posted + r.credits_posted == a.debits_posted + r.debits_posted
    await create(engine, req("t2", ALICE, BOB, 300))
    a, b = await bal(engine, ALICE), await bal(engine, BOB)
    assert (a.available_minor, b.available_minor) == (400, 300)
    assert await run_check(engine) == []


async def test_accounts_are_created_on_first_use_with_their_shards(engine: AsyncEngine) -> None:
    await fund(engine, ALICE, 100, "p1")
    assert await balance_rows(engine, ALICE) == 1
    assert await balance_rows(engine, RECV) == SYSTEM_SHARDS == 16
    async with engine.connect() as conn:
        rows = {r.id: r for r in await conn.execute(select(accounts))}
    assert rows[ALICE].owner_id == "alice" and rows[ALICE].shards == 1
    assert rows[RECV].owner_id is None and rows[RECV].shards == SYSTEM_SHARDS
    assert {r.currency for r in rows.values()} == {USD}


async def test_system_accounts_may_go_negative_wallets_may_not(engine: AsyncEngine) -> None:
    await create(engine, req("s1", SETTLED, RECV, 5_000, code=TransferCode.SETTLEMENT))
    assert (await bal(engine, SETTLED)).posted_minor == -5_000
    with pytest.raises(InsufficientFunds):
        await create(engine, req("w1", ALICE, BOB, 1))
    assert await run_check(engine) == []


# -- idempotency ----------------------------------------------------------------------------


async def test_replaying_a_transfer_id_has_no_second_effect(engine: AsyncEngine) -> None:
    await fund(engine, ALICE, 1_000, "p1")
    r = req("tr_1", ALICE, BOB, 250, note="first")
    first = await create(engine, r)
    before = await snapshot(engine)
    for _ in range(3):
        again = await create(engine, r)
        assert again.seq == first.seq and again.id == first.id
    # user_data is not part of a transfer's identity: a retry with another note is a replay.
    await create(engine, req("tr_1", ALICE, BOB, 250, note="retry"))
    assert await snapshot(engine) == before
    assert (await bal(engine, ALICE)).available_minor == 750
    assert (await bal(engine, BOB)).available_minor == 250
    assert await run_check(engine) == []


async def test_replay_inside_one_unit_of_work(engine: AsyncEngine) -> None:
    await fund(engine, ALICE, 100, "p1")
    r = req("tr_1", ALICE, BOB, 60)
    async with engine.begin() as conn:
        a = await service.create_transfer(conn, r, NOW)
        b = await service.create_transfer(conn, r, NOW)
    assert a.seq == b.seq
    assert (await bal(engine, BOB)).available_minor == 60
    assert await run_check(engine) == []


@pytest.mark.parametrize(
    "changed",
    [
        {"amount": 251},
        {"credit": wallet_account_id("carol", USD)},
        {"debit": RECV},
        {"code": TransferCode.REFUND},
        {"pending": True},
    ],
    ids=["amount", "credit", "debit", "code", "pending"],
)
async def test_same_id_with_other_values_is_a_conflict(
    engine: AsyncEngine, changed: dict[str, Any]
) -> None:
    await fund(engine, ALICE, 1_000, "p1")
    await create(engine, req("tr_1", ALICE, BOB, 250))
    before = await snapshot(engine)
    values: dict[str, Any] = {"debit": ALICE, "credit": BOB, "amount": 250} | changed
    with pytest.raises(TransferIdConflict) as exc:
        await create(
            engine,
            req(
                "tr_1",
                values["debit"],
                values["credit"],
                values["amount"],
                code=values.get("code", TransferCode.WALLET_TRANSFER),
                pending=values.get("pending", False),
            ),
        )
    assert_code(exc, "ledger.transfer_id_conflict")
    assert await snapshot(engine) == before
    assert await run_check(engine) == []


async def test_a_resolving_id_cannot_reuse_a_transfer_id(engine: AsyncEngine) -> None:
    await fund(engine, ALICE, 100, "p1")
    await create(engine, req("h1", ALICE, RECV, 40, code=TransferCode.REFUND, pending=True))
    with pytest.raises(TransferIdConflict):
        await resolve(engine, "cap:p1", "h1", post=True)  # the id of the capture above
    assert (await bal(engine, ALICE)).debits_pending == 40
    assert await run_check(engine) == []


# -- insufficient funds ---------------------------------------------------------------------


async def test_insufficient_funds_changes_nothing(engine: AsyncEngine) -> None:
    await fund(engine, ALICE, 100, "p1")
    before = await snapshot(engine)
    with pytest.raises(InsufficientFunds) as exc:
        await create(engine, req("tr_big", ALICE, BOB, 101))
    assert_code(exc, "ledger.insufficient_funds")
    assert exc.value.status == 422
    assert await snapshot(engine) == before
    async with engine.connect() as conn:
        assert await service.find_transfer(conn, "tr_big") is None
    # The id was not burned: the same id later succeeds once the money is there.
    await create(engine, req("tr_big", ALICE, BOB, 100))
    assert (await bal(engine, ALICE)).available_minor == 0
    assert await run_check(engine) == []


async def test_a_wallet_never_seen_has_nothing_to_send(engine: AsyncEngine) -> None:
    with pytest.raises(InsufficientFunds):
        await create(engine, req("t", wallet_account_id("nobody", USD), BOB, 1))
    assert await count_transfers(engine) == 0
    assert await run_check(engine) == []


async def test_the_whole_balance_can_be_spent_exactly(engine: AsyncEngine) -> None:
    await fund(engine, ALICE, 30, "p1")
    for i in range(3):
        await create(engine, req(f"t{i}", ALICE, BOB, 10))
    with pytest.raises(InsufficientFunds):
        await create(engine, req("t3", ALICE, BOB, 1))
    assert (await bal(engine, ALICE)).available_minor == 0
    assert (await bal(engine, BOB)).available_minor == 30
    assert await run_check(engine) == []


async def test_pending_credit_is_not_spendable(engine: AsyncEngine) -> None:
    await create(
        engine,
        req("auth:p1", RECV, ALICE, 500, code=TransferCode.CARD_AUTHORIZATION, pending=True),
    )
    a = await bal(engine, ALICE)
    assert (a.credits_pending, a.pending_minor, a.available_minor, a.posted_minor) == (
        500,
        500,
        0,
        0,
    )
    with pytest.raises(InsufficientFunds):
        await create(engine, req("t1", ALICE, BOB, 1))
    assert await run_check(engine) == []


async def test_a_hold_reserves_money_from_the_available_balance(engine: AsyncEngine) -> None:
    await fund(engine, ALICE, 100, "p1")
    await create(engine, req("hold1", ALICE, RECV, 70, code=TransferCode.REFUND, pending=True))
    a = await bal(engine, ALICE)
    assert (a.debits_pending, a.available_minor, a.posted_minor) == (70, 30, 100)
    with pytest.raises(InsufficientFunds):
        await create(engine, req("t1", ALICE, BOB, 31))
    with pytest.raises(InsufficientFunds):
        await create(engine, req("hold2", ALICE, RECV, 31, code=TransferCode.REFUND, pending=True))
    await create(engine, req("t2", ALICE, BOB, 30))
    assert (await bal(engine, ALICE)).available_minor == 0
    assert await run_check(engine) == []


async def test_a_refused_transfer_leaves_no_row_when_the_caller_goes_on(
    engine: AsyncEngine,
) -> None:
    """A unit of work may catch a business error and commit its other work: the refused
    transfer must not be left behind as a recorded transfer without its balance effects."""
    await fund(engine, ALICE, 10, "p1")
    async with engine.begin() as conn:
        with pytest.raises(InsufficientFunds):
            await service.create_transfer(conn, req("tr_x", ALICE, BOB, 11), NOW)
        await service.create_transfer(conn, req("tr_y", ALICE, BOB, 10), NOW)
    async with engine.connect() as conn:
        assert await service.find_transfer(conn, "tr_x") is None
    assert (await bal(engine, BOB)).available_minor == 10
    assert await run_check(engine) == []


# -- pending transfers: post and void -------------------------------------------------------


async def test_authorization_posted_in_full(engine: AsyncEngine) -> None:
    await create(
        engine,
        req("auth:p1", RECV, ALICE, 500, code=TransferCode.CARD_AUTHORIZATION, pending=True),
    )
    row = await resolve(engine, "cap:p1", "auth:p1", post=True)
    assert (row.kind, row.pending_id, row.amount_minor) == ("post_pending", "auth:p1", 500)
    a = await bal(engine, ALICE)
    assert (a.credits_pending, a.credits_posted, a.available_minor) == (0, 500, 500)
    async with engine.connect() as conn:
        pending = await service.find_transfer(conn, "auth:p1")
        assert pending is not None
    assert pending.pending_state == "posted"
    assert await run_check(engine) == []


async def test_partial_post_releases_the_rest(engine: AsyncEngine) -> None:
    await create(
        engine,
        req("auth:p1", RECV, ALICE, 800, code=TransferCode.CARD_AUTHORIZATION, pending=True),
    )
    row = await resolve(engine, "cap:p1", "auth:p1", post=True, amount=600)
    assert row.amount_minor == 600
    a, r = await bal(engine, ALICE), await bal(engine, RECV)
    assert (a.credits_pending, a.credits_posted, a.available_minor) == (0, 600, 600)
    assert (r.debits_pending, r.debits_posted) == (0, 600)
    assert await run_check(engine) == []


async def test_partial_post_of_a_wallet_hold(engine: AsyncEngine) -> None:
    await fund(engine, ALICE, 100, "p1")
    await create(engine, req("hold", ALICE, RECV, 80, code=TransferCode.REFUND, pending=True))
    await resolve(engine, "hold_post", "hold", post=True, amount=50)
    a = await bal(engine, ALICE)
    assert (a.debits_pending, a.debits_posted, a.available_minor) == (0, 50, 50)
    assert await run_check(engine) == []


async def test_void_releases_the_hold(engine: AsyncEngine) -> None:
    await fund(engine, ALICE, 100, "p1")
    await create(engine, req("hold", ALICE, RECV, 80, code=TransferCode.REFUND, pending=True))
    row = await resolve(engine, "hold_void", "hold", post=False)
    assert (row.kind, row.amount_minor) == ("void_pending", 80)
    a = await bal(engine, ALICE)
    assert (a.debits_pending, a.debits_posted, a.available_minor) == (0, 0, 100)
    async with engine.connect() as conn:
        hold = await service.find_transfer(conn, "hold")
        assert hold is not None and hold.pending_state == "voided"
    assert await run_check(engine) == []


async def test_void_ignores_an_amount(engine: AsyncEngine) -> None:
    await create(
        engine,
        req("auth:p1", RECV, ALICE, 500, code=TransferCode.CARD_AUTHORIZATION, pending=True),
    )
    row = await resolve(engine, "void:p1", "auth:p1", post=False, amount=1)
    assert row.amount_minor == 500
    assert (await bal(engine, ALICE)).credits_pending == 0
    assert await run_check(engine) == []


@pytest.mark.parametrize(("first", "second"), [(True, True), (True, False), (False, True)])
async def test_a_resolved_pending_cannot_be_resolved_again(
    engine: AsyncEngine, first: bool, second: bool
) -> None:
    await fund(engine, ALICE, 100, "p1")
    await create(engine, req("hold", ALICE, RECV, 80, code=TransferCode.REFUND, pending=True))
    await resolve(engine, "r1", "hold", post=first, amount=30 if first else None)
    before = await snapshot(engine)
    with pytest.raises(PendingNotOpen) as exc:
        await resolve(engine, "r2", "hold", post=second)
    assert_code(exc, "ledger.pending_not_open")
    assert await snapshot(engine) == before
    assert await run_check(engine) == []


async def test_replaying_a_post_is_a_no_op(engine: AsyncEngine) -> None:
    await create(
        engine,
        req("auth:p1", RECV, ALICE, 500, code=TransferCode.CARD_AUTHORIZATION, pending=True),
    )
    first = await resolve(engine, "cap:p1", "auth:p1", post=True, amount=400)
    before = await snapshot(engine)
    again = await resolve(engine, "cap:p1", "auth:p1", post=True, amount=400)
    assert again.seq == first.seq
    assert await snapshot(engine) == before
    with pytest.raises(TransferIdConflict):
        await resolve(engine, "cap:p1", "auth:p1", post=True, amount=300)
    with pytest.raises(TransferIdConflict):
        await resolve(engine, "cap:p1", "auth:p1", post=False)
    assert await snapshot(engine) == before
    assert await run_check(engine) == []


async def test_a_refused_resolve_leaves_no_row_when_the_caller_goes_on(
    engine: AsyncEngine,
) -> None:
    """Like the ledger's own consumer does for a late cancel: catch PendingNotOpen and commit.
    The void that did not happen must not be recorded as a transfer."""
    await fund(engine, ALICE, 100, "p1")
    async with engine.begin() as conn:
        with pytest.raises(PendingNotOpen):
            await service.resolve_pending(conn, "void:p1", "auth:p1", NOW, post=False)
    async with engine.connect() as conn:
        assert await service.find_transfer(conn, "void:p1") is None
    assert await run_check(engine) == []


@pytest.mark.parametrize("amount", [0, -1, 501])
async def test_post_amount_must_be_within_the_pending_amount(
    engine: AsyncEngine, amount: int
) -> None:
    await create(
        engine,
        req("auth:p1", RECV, ALICE, 500, code=TransferCode.CARD_AUTHORIZATION, pending=True),
    )
    before = await snapshot(engine)
    with pytest.raises(InvalidTransfer) as exc:
        await resolve(engine, "cap:p1", "auth:p1", post=True, amount=amount)
    assert_code(exc, "ledger.invalid_transfer")
    assert await snapshot(engine) == before


async def test_only_pending_transfers_can_be_resolved(engine: AsyncEngine) -> None:
    await fund(engine, ALICE, 100, "p1")
    for target in ("cap:p1", "no-such-transfer"):
        with pytest.raises(TransferNotFound) as exc:
            await resolve(engine, f"r:{target}", target, post=True)
        assert_code(exc, "ledger.transfer_not_found")
    assert await run_check(engine) == []


# -- invalid transfers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("debit", "credit", "amount", "currency"),
    [
        (ALICE, BOB, 0, USD),
        (ALICE, BOB, -10, USD),
        (ALICE, BOB, MAX_AMOUNT_MINOR + 1, USD),
        (ALICE, wallet_account_id("bob", "EUR"), 10, USD),
        (wallet_account_id("alice", "EUR"), BOB, 10, USD),
        (ALICE, BOB, 10, "EUR"),
        (ALICE, ALICE, 10, USD),
        (RECV, RECV, 10, USD),
        ("acct_1", BOB, 10, USD),
        (ALICE, "sys_unknown_USD", 10, USD),
        (ALICE, "wal__USD", 10, USD),
    ],
    ids=[
        "zero",
        "negative",
        "too-big",
        "credit-currency",
        "debit-currency",
        "request-currency",
        "same-wallet",
        "same-system",
        "bad-debit-id",
        "bad-system-id",
        "empty-owner",
    ],
)
async def test_invalid_transfers_are_refused_before_anything_is_written(
    engine: AsyncEngine, debit: str, credit: str, amount: int, currency: str
) -> None:
    await fund(engine, ALICE, 100, "p1")
    before = await snapshot(engine)
    with pytest.raises(InvalidTransfer) as exc:
        await create(engine, req("bad", debit, credit, amount, currency=currency))
    assert_code(exc, "ledger.invalid_transfer")
    assert await snapshot(engine) == before
    assert await run_check(engine) == []


async def test_the_largest_amount_is_accepted(engine: AsyncEngine) -> None:
    await create(engine, req("big", RECV, ALICE, MAX_AMOUNT_MINOR, code=TransferCode.CARD_CAPTURE))
    assert (await bal(engine, ALICE)).available_minor == MAX_AMOUNT_MINOR
    assert await run_check(engine) == []


async def test_currencies_are_separate_ledgers(engine: AsyncEngine) -> None:
    eur_alice, eur_recv = (
        wallet_account_id("alice", "EUR"),
        system_account_id("psp_receivable", "EUR"),
    )
    await fund(engine, ALICE, 100, "p1")
    await create(engine, req("e1", eur_recv, eur_alice, 7, currency="EUR"))
    with pytest.raises(InsufficientFunds):
        await create(
            engine, req("e2", eur_alice, wallet_account_id("bob", "EUR"), 8, currency="EUR")
        )
    async with engine.connect() as conn:
        got = {b.currency: b.available_minor for b in await service.wallets(conn, "alice")}
    assert got == {"EUR": 7, USD: 100}
    assert await run_check(engine) == []


# -- stored balances: a read does not grow with history -------------------------------------


async def test_balance_read_is_bounded_whatever_the_history(engine: AsyncEngine) -> None:
    n = 500  # 400 card captures into the wallet, 100 transfers out of it
    async with engine.begin() as conn:
        for i in range(n):
            if i % 5 != 4:
                t = req(f"in{i}", RECV, ALICE, 3 + i % 7, code=TransferCode.CARD_CAPTURE)
            else:
                t = req(f"out{i}", ALICE, BOB, 1)
            await service.create_transfer(conn, t, NOW)
    expected_in = sum(3 + i % 7 for i in range(n) if i % 5 != 4)
    expected_out = n // 5
    assert await count_transfers(engine) == n

    statements: list[str] = []

    def record(_c: Any, _cur: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        a, r = await bal(engine, ALICE), await bal(engine, RECV)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)

    assert a.credits_posted == expected_in and a.debits_posted == expected_out
    assert a.available_minor == expected_in - expected_out
    assert r.debits_posted == expected_in
    # One statement per read, on the stored balances only: never a scan of the transfers.
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 2
    for s in reads:
        assert "ledger_balances" in s and "ledger_transfers" not in s
    # The stored rows are the sums: exactly 1 row for a wallet, 16 for a system account,
    # however many transfers touched them.
    assert await balance_rows(engine, ALICE) == 1
    assert await balance_rows(engine, RECV) == SYSTEM_SHARDS
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                select(func.sum(balances.c.debits_posted), func.count()).where(
                    balances.c.account_id == RECV
                )
            )
        ).one()
    assert (int(stored[0]), stored[1]) == (r.debits_posted, SYSTEM_SHARDS)
    assert await run_check(engine) == []


async def test_system_account_load_spreads_over_shards(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for i in range(200):
            await service.create_transfer(
                conn, req(f"in{i}", RECV, ALICE, 1, code=TransferCode.CARD_CAPTURE), NOW
            )
    async with engine.connect() as conn:
        used = (
            await conn.execute(
                select(func.count()).where(
                    balances.c.account_id == RECV, balances.c.debits_posted > 0
                )
            )
        ).scalar_one()
    assert 1 < used <= SYSTEM_SHARDS
    assert (await bal(engine, RECV)).debits_posted == 200


# -- the consistency check ------------------------------------------------------------------


async def _busy_ledger(engine: AsyncEngine) -> None:
    await fund(engine, ALICE, 1_000, "p1")
    await fund(engine, BOB, 500, "p2")
    await create(engine, req("t1", ALICE, BOB, 300))
    await create(engine, req("t2", BOB, ALICE, 50))
    await create(engine, req("s1", SETTLED, RECV, 1_500, code=TransferCode.SETTLEMENT))
    await create(engine, req("h1", ALICE, RECV, 100, code=TransferCode.REFUND, pending=True))
    await create(engine, req("h2", BOB, RECV, 20, code=TransferCode.REFUND, pending=True))
    await create(engine, req("h3", BOB, RECV, 30, code=TransferCode.REFUND, pending=True))
    await resolve(engine, "h1p", "h1", post=True, amount=60)
    await resolve(engine, "h2v", "h2", post=False)
    await create(
        engine,
        req("auth:p3", RECV, ALICE, 99, code=TransferCode.CARD_AUTHORIZATION, pending=True),
    )


async def test_check_is_clean_after_a_busy_history(engine: AsyncEngine) -> None:
    await _busy_ledger(engine)
    assert await run_check(engine) == []
    a, b = await bal(engine, ALICE), await bal(engine, BOB)
    # alice: 1000 - 300 + 50 - 60 posted; 99 incoming pending. bob: 500 + 300 - 50, 30 held.
    assert (a.posted_minor, a.pending_minor, a.available_minor) == (690, 99, 690)
    assert (b.posted_minor, b.debits_pending, b.available_minor) == (750, 30, 720)


@pytest.mark.parametrize(
    "column", ["debits_pending", "debits_posted", "credits_pending", "credits_posted"]
)
async def test_check_reports_a_corrupted_balance(engine: AsyncEngine, column: str) -> None:
    await _busy_ledger(engine)
    async with engine.begin() as conn:
        col = balances.c[column]
        await conn.execute(
            update(balances).where(balances.c.account_id == ALICE).values({column: col + 1})
        )
    problems = await run_check(engine)
    assert any(p.startswith(f"{ALICE}:") for p in problems), problems
    assert any(p.startswith("USD:") for p in problems), problems


async def test_check_reports_a_balanced_but_wrong_move(engine: AsyncEngine) -> None:
    """Moving 5 between two stored rows keeps debits == credits, but not the transfers' sums."""
    await _busy_ledger(engine)
    async with engine.begin() as conn:
        b = balances.c
        await conn.execute(
            update(balances)
            .where(b.account_id == ALICE)
            .values(credits_posted=b.credits_posted - 5)
        )
        await conn.execute(
            update(balances).where(b.account_id == BOB).values(credits_posted=b.credits_posted + 5)
        )
    problems = await run_check(engine)
    assert {p.split(":")[0] for p in problems} == {ALICE, BOB}


async def test_check_reports_a_deleted_transfer(engine: AsyncEngine) -> None:
    await _busy_ledger(engine)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM ledger_transfers WHERE id = 't2'"))
    problems = await run_check(engine)
    assert {p.split(":")[0] for p in problems} == {ALICE, BOB}


async def test_check_on_an_empty_ledger(engine: AsyncEngine) -> None:
    assert await run_check(engine) == []


# -- concurrency at the service level -------------------------------------------------------


async def _send(engine: AsyncEngine, r: service.TransferRequest) -> str:
    try:
        await create(engine, r)
    except AppError as exc:
        return exc.code
    return "ok"


async def test_concurrent_spends_of_one_wallet_never_overdraw(engine: AsyncEngine) -> None:
    await fund(engine, ALICE, 100, "p1")
    results = await asyncio.gather(
        *(_send(engine, req(f"c{i}", ALICE, BOB, 10)) for i in range(30))
    )
    assert results.count("ok") == 10
    assert results.count("ledger.insufficient_funds") == 20
    assert (await bal(engine, ALICE)).available_minor == 0
    assert (await bal(engine, BOB)).available_minor == 100
    assert await run_check(engine) == []


async def test_concurrent_transfers_in_both_directions_all_complete(engine: AsyncEngine) -> None:
    """A→B and B→A at once lock the same two rows in opposite orders: no deadlock error."""
    await fund(engine, ALICE, 1_000, "p1")
    await fund(engine, BOB, 1_000, "p2")
    reqs = [req(f"x{i}", *((ALICE, BOB) if i % 2 else (BOB, ALICE)), 1 + i % 3) for i in range(40)]
    results = await asyncio.gather(*(_send(engine, r) for r in reqs))
    assert results == ["ok"] * len(reqs)
    a, b = await bal(engine, ALICE), await bal(engine, BOB)
    assert a.available_minor + b.available_minor == 2_000
    assert await run_check(engine) == []


async def test_concurrent_replays_of_one_id_take_effect_once(engine: AsyncEngine) -> None:
    await fund(engine, ALICE, 100, "p1")
    results = await asyncio.gather(*(_send(engine, req("same", ALICE, BOB, 10)) for _ in range(20)))
    assert results == ["ok"] * 20
    assert (await bal(engine, BOB)).available_minor == 10
    assert await run_check(engine) == []
