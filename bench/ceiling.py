"""Reference ceilings, measured now on this machine (PostgreSQL mode only).

The issue quotes ceilings for "the same three inserts (idempotency key, payment, outbox event)
and a commit". Measuring them again next to the application figures tells how much of a gap
is the application and how much is the machine at the time (a shared 2-core machine swings).

  raw asyncpg            one transaction per payment: 3 INSERTs + COMMIT
  SQLAlchemy async Core  the same through SQLAlchemy's async engine (as the app does)
  asyncpg, 100 per tx    100 payments per transaction (executemany)
  hot row                every client UPDATEs the same balance row, one commit each
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from bench.load import latency_summary
from bench.server import _create_database, _drop_database

DDL = [
    """CREATE TABLE idem (owner_id text, key text, fingerprint text, status text,
       created_at timestamptz, PRIMARY KEY (owner_id, key))""",
    """CREATE TABLE pay (id text PRIMARY KEY, owner_id text, amount_minor bigint,
       currency text, status text, metadata jsonb, created_at timestamptz)""",
    """CREATE TABLE outbox (seq bigserial PRIMARY KEY, event_id text UNIQUE, type text,
       data jsonb, occurred_at timestamptz, published_at timestamptz)""",
    "CREATE INDEX ON outbox (published_at)",
    "CREATE TABLE hot (id int PRIMARY KEY, credits bigint)",
    "INSERT INTO hot VALUES (1, 0)",
]
INS_IDEM = "INSERT INTO idem VALUES ($1, $2, $3, 'in_progress', $4)"
INS_PAY = "INSERT INTO pay VALUES ($1, $2, 1000, 'USD', 'created', $3, $4)"
INS_OUT = "INSERT INTO outbox (event_id, type, data, occurred_at) VALUES ($1, $2, $3, $4)"


def _row() -> tuple[str, str]:
    return uuid.uuid4().hex, uuid.uuid4().hex


async def _loop(clients: int, seconds: float, op: Callable[[], Awaitable[int]]) -> dict[str, Any]:
    done = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            n = await op()  # not `done += await op()`: that reads `done` before awaiting
            done += n
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    lat = latency_summary(latencies)
    return {
        "rate_per_s": round(done / elapsed, 1),
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
    }


async def ceilings(admin_url: str, clients: int, seconds: float) -> dict[str, Any]:
    import asyncpg
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"pocketpay_bench_ceiling_{secrets.token_hex(3)}"
    await _create_database(admin_url, name)
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    out: dict[str, Any] = {}
    try:
        conn = await asyncpg.connect(url)
        for stmt in DDL:
            await conn.execute(stmt)
        await conn.close()
        pool = await asyncpg.create_pool(url, min_size=20, max_size=20)
        data = json.dumps({"payment_id": "pay_x", "amount_minor": 1000, "currency": "USD"})
        now = datetime.now(UTC)

        async def raw() -> int:
            a, b = _row()
            async with pool.acquire() as c, c.transaction():
                await c.execute(INS_IDEM, "usr_1", a, "f" * 64, now)
                await c.execute(INS_PAY, b, "usr_1", "{}", now)
                await c.execute(INS_OUT, a, "payments.payment.created", data, now)
            return 1

        async def batch() -> int:
            rows = [_row() for _ in range(100)]
            async with pool.acquire() as c, c.transaction():
                await c.executemany(INS_IDEM, [("usr_1", a, "f" * 64, now) for a, _ in rows])
                await c.executemany(INS_PAY, [(b, "usr_1", "{}", now) for _, b in rows])
                await c.executemany(
                    INS_OUT, [(a, "payments.payment.created", data, now) for a, _ in rows]
                )
            return 100

        async def hot() -> int:
            async with pool.acquire() as c:
                await c.execute("UPDATE hot SET credits = credits + 1 WHERE id = 1")
            return 1

        out["raw_asyncpg_3_inserts_commit"] = await _loop(clients, seconds, raw)
        out["asyncpg_100_per_transaction"] = await _loop(clients, seconds, batch)
        out["hot_row_update"] = await _loop(clients, seconds, hot)
        await pool.close()

        engine = create_async_engine(
            "postgresql+asyncpg://" + url.split("://", 1)[1], pool_size=10, max_overflow=10
        )
        s_idem = text("INSERT INTO idem VALUES (:o, :k, :f, 'in_progress', :t)")
        s_pay = text("INSERT INTO pay VALUES (:i, :o, 1000, 'USD', 'created', '{}', :t)")
        s_out = text(
            "INSERT INTO outbox (event_id, type, data, occurred_at) VALUES (:e, :y, :d, :t)"
        )

        async def sqla() -> int:
            a, b = _row()
            async with engine.begin() as c:
                await c.execute(s_idem, {"o": "usr_1", "k": a, "f": "f" * 64, "t": now})
                await c.execute(s_pay, {"i": b, "o": "usr_1", "t": now})
                await c.execute(
                    s_out, {"e": a, "y": "payments.payment.created", "d": data, "t": now}
                )
            return 1

        out["sqlalchemy_core_3_inserts_commit"] = await _loop(clients, seconds, sqla)
        await engine.dispose()
    finally:
        await _drop_database(admin_url, name)
    return out


def python_speed() -> float:
    """Nanoseconds per trivial Python call: how fast this CPU is right now (a desktop core
    does ~40-50 ns; contention or a slow virtual CPU shows up here)."""

    def f(x: int) -> int:
        return x + 1

    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        for i in range(300_000):
            f(i)
        best = min(best, (time.process_time() - t0) / 300_000 * 1e9)
    return round(best, 1)
