"""Direct ledger seeding for the benchmark: fund wallets and give a wallet a long history.

Everything goes through the ledger's own tables and keeps ``pocketpay check`` true: each
seeded transfer is a posted PSP-receivable -> wallet transfer, and the stored balances are
moved by exactly the seeded amounts.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.db import create_engine
from pocketpay.ledger import service
from pocketpay.ledger.chart import TransferCode, system_account_id, wallet_account_id
from pocketpay.ledger.check import run_check
from pocketpay.ledger.models import balance_history, balances, transfers
from pocketpay.payments.models import payments


def engine_for(db_url: str) -> AsyncEngine:
    return create_engine(db_url, pool_size=2)


async def fund_wallets(db_url: str, user_ids: list[str], amount: int, currency: str) -> None:
    """One posted card-capture-like transfer per wallet, all in one transaction."""
    engine = engine_for(db_url)
    now = datetime.now(UTC)
    source = system_account_id("psp_receivable", currency)
    try:
        async with engine.begin() as conn:
            for uid in user_ids:
                await service.create_transfer(
                    conn,
                    service.TransferRequest(
                        id=f"bench_fund:{uid}",
                        debit_account_id=source,
                        credit_account_id=wallet_account_id(uid, currency),
                        amount_minor=amount,
                        currency=currency,
                        code=TransferCode.CARD_CAPTURE,
                        user_data={"bench": "fund"},
                    ),
                    now,
                )
    finally:
        await engine.dispose()


async def seed_history(
    db_url: str,
    user_id: str,
    count: int,
    currency: str,
    chunk: int = 5000,
    now: datetime | None = None,
) -> float:
    """Give ``user_id``'s wallet ``count`` posted credits of 1 minor unit each, in bulk, one
    millisecond apart and ending now, with the wallet's running balance after each
    (``ledger_balance_history``, as the ledger writes it).

    Returns the seconds it took. The transfers rows are inserted with executemany; the two
    balance rows touched (the wallet's, one PSP-receivable shard) are moved by ``count``.
    """
    import time

    engine = engine_for(db_url)
    wallet = wallet_account_id(user_id, currency)
    source = system_account_id("psp_receivable", currency)
    now = now or datetime.now(UTC)
    start = time.perf_counter()
    try:
        async with engine.begin() as conn:
            await service.ensure_account(conn, wallet, now)
            await service.ensure_account(conn, source, now)
            for first in range(0, count, chunk):
                rows: list[dict[str, Any]] = [
                    {
                        "id": f"bench_hist:{user_id}:{i}",
                        "debit_account_id": source,
                        "credit_account_id": wallet,
                        "amount_minor": 1,
                        "currency": currency,
                        "code": int(TransferCode.CARD_CAPTURE),
                        "kind": "posted",
                        "pending_id": None,
                        "pending_state": None,
                        "debit_shard": 0,
                        "credit_shard": 0,
                        "user_data": {"payment_id": f"bench_{i}"},
                        "created_at": entry_time(now, count, i),
                    }
                    for i in range(first, min(first + chunk, count))
                ]
                await conn.execute(insert(transfers), rows)
                history = [
                    {
                        "account_id": wallet,
                        "transfer_id": r["id"],
                        "debits_pending": 0,
                        "debits_posted": 0,
                        "credits_pending": 0,
                        "credits_posted": first + k + 1,
                        "created_at": r["created_at"],
                    }
                    for k, r in enumerate(rows)
                ]
                await conn.execute(insert(balance_history), history)
            b = balances.c
            await conn.execute(
                update(balances)
                .where(b.account_id == wallet, b.shard == 0)
                .values(credits_posted=b.credits_posted + count)
            )
            await conn.execute(
                update(balances)
                .where(b.account_id == source, b.shard == 0)
                .values(debits_posted=b.debits_posted + count)
            )
        if engine.dialect.name == "postgresql":
            # What autovacuum would do shortly after such a load; reads then use fresh stats.
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("ANALYZE ledger_transfers"))
                await conn.execute(text("ANALYZE ledger_balance_history"))
    finally:
        await engine.dispose()
    return time.perf_counter() - start


def entry_time(now: datetime, count: int, i: int) -> datetime:
    """When ``seed_history``'s entry ``i`` of ``count`` was made: 1 ms apart, the last now."""
    return now - timedelta(milliseconds=count - 1 - i)


async def ledger_check(db_url: str) -> list[str]:
    engine = engine_for(db_url)
    try:
        return await run_check(engine)
    finally:
        await engine.dispose()


def _aware(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def create_to_posted(db_url: str) -> dict[str, float]:
    """Per payment: seconds from its creation to the ledger posting its capture (wallet
    credited), from the rows' own timestamps. Keys are payment ids."""
    engine = engine_for(db_url)
    try:
        async with engine.connect() as conn:
            created = {
                r.id: _aware(r.created_at)
                for r in await conn.execute(select(payments.c.id, payments.c.created_at))
            }
            posted = {
                r.id.split(":", 1)[1]: _aware(r.created_at)
                for r in await conn.execute(
                    select(transfers.c.id, transfers.c.created_at).where(
                        transfers.c.id.like("pay_cap:%")
                    )
                )
            }
    finally:
        await engine.dispose()
    return {pid: (posted[pid] - at).total_seconds() for pid, at in created.items() if pid in posted}


async def payment_statuses(db_url: str) -> dict[str, int]:
    from sqlalchemy import func

    engine = engine_for(db_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(payments.c.status, func.count()).group_by(payments.c.status)
            )
            return {str(s): int(n) for s, n in rows}
    finally:
        await engine.dispose()


async def count_posted_captures(engine: AsyncEngine) -> int:
    """How many captures the ledger has posted. On SQLite this reads with the standard
    library (a plain read transaction): the app's engine would take the write lock."""
    if engine.dialect.name == "sqlite":
        import asyncio
        import sqlite3

        path = str(engine.url.database)

        def count() -> int:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                q = "SELECT count(*) FROM ledger_transfers WHERE id LIKE 'pay_cap:%'"
                return int(db.execute(q).fetchone()[0])

        return await asyncio.to_thread(count)
    from sqlalchemy import func

    async with engine.connect() as conn:
        n = await conn.scalar(
            select(func.count()).select_from(transfers).where(transfers.c.id.like("pay_cap:%"))
        )
    return int(n or 0)


async def dead_letters(db_url: str) -> int:
    from sqlalchemy import func

    from pocketpay.kit.bus import bus_dead_letters

    engine = engine_for(db_url)
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(bus_dead_letters)) or 0)
    finally:
        await engine.dispose()


async def seed_users(
    http: Any, db_url: str, jwt_secret: str, count: int, prefix: str
) -> list[dict[str, Any]]:
    """``count`` users with access tokens. One signs up through the API; the others are
    inserted with its password hash (argon2 costs ~0.1-0.5 s of CPU per signup here, and
    signups are not what the benchmark measures) and get tokens minted with the server's
    JWT secret, exactly as login would issue them."""
    import uuid

    from bench.load import signup
    from pocketpay.gateway.models import users
    from pocketpay.kit.ids import new_id
    from pocketpay.kit.tokens import Principal, TokenCodec
    from pocketpay.settings import AuthSettings

    first = (await signup(http, 1, prefix))[0]
    auth = AuthSettings()
    codec = TokenCodec(
        jwt_secret, issuer=auth.jwt_issuer, audience=auth.jwt_audience, ttl_seconds=3600
    )
    engine = engine_for(db_url)
    now = datetime.now(UTC)
    run = uuid.uuid4().hex[:8]
    rows = [
        {
            "id": new_id("usr"),
            "email": f"{prefix}{i}-{run}@bench.example.com",
            "name": f"Bench {i}",
            "role": "user",
            "created_at": now,
        }
        for i in range(1, count)
    ]
    try:
        async with engine.begin() as conn:
            pw_hash = await conn.scalar(
                select(users.c.password_hash).where(users.c.id == first["id"])
            )
            if rows:
                await conn.execute(insert(users), [r | {"password_hash": pw_hash} for r in rows])
    finally:
        await engine.dispose()
    out = [first]
    for r in rows:
        token = codec.issue(Principal(r["id"], "user", r["email"]), now)
        out.append(
            {"id": r["id"], "email": r["email"], "headers": {"Authorization": f"Bearer {token}"}}
        )
    return out


async def backlog_counts(engine: AsyncEngine) -> tuple[int, int]:
    """(payments created, captures the ledger has posted) right now: created minus posted is
    the pipeline's backlog. On SQLite it reads with the standard library, as
    ``count_posted_captures`` does."""
    created_q = f"SELECT count(*) FROM {payments.name}"
    posted_q = f"SELECT count(*) FROM {transfers.name} WHERE id LIKE 'pay_cap:%'"
    if engine.dialect.name == "sqlite":
        import asyncio
        import sqlite3

        path = str(engine.url.database)

        def counts() -> tuple[int, int]:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                return (
                    int(db.execute(created_q).fetchone()[0]),
                    int(db.execute(posted_q).fetchone()[0]),
                )

        return await asyncio.to_thread(counts)
    from sqlalchemy import func

    async with engine.connect() as conn:
        created = await conn.scalar(select(func.count()).select_from(payments))
        posted = await conn.scalar(
            select(func.count()).select_from(transfers).where(transfers.c.id.like("pay_cap:%"))
        )
    return int(created or 0), int(posted or 0)
