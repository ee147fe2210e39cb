"""The issue's yardstick: a minimal FastAPI endpoint that does only the three inserts of a
payment create (idempotency key row, payment row, outbox event row) in one transaction, and a
read that returns a small JSON from one SELECT.

It runs exactly as PocketPay does (``uvicorn.run`` in one process, uvloop/httptools as
installed, ``log_level="warning"``, no access log), as a subprocess on a fresh database, and
the benchmark drives it with the same load generator, clients, warm-up and window as the
PocketPay phase it stands beside. PocketPay / reference is then a ratio measured in one run
on one machine state, which survives the machine's speed drifting hour to hour.

  POST /api/v1/payments  Authorization + Idempotency-Key + JSON body -> 3 INSERTs + COMMIT ->
                         202 {id, amount_minor, currency, status, created_at}
  GET  /api/v1/wallets   one SELECT of the caller's balance row -> 200 {"data": [...]}

PostgreSQL: an asyncpg pool (DDL as bench/ceiling.py). SQLite (the embedded reference): one
aiosqlite connection (WAL, synchronous=NORMAL), as PocketPay's embedded mode has one pooled
connection; a lock serializes its transactions.

``python -m bench.reference_app --port P --db postgresql://...|sqlite:///path``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Protocol

from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

PG_DDL = [
    """CREATE TABLE idem (owner_id text, key text, fingerprint text, status text,
       created_at timestamptz, PRIMARY KEY (owner_id, key))""",
    """CREATE TABLE pay (id text PRIMARY KEY, owner_id text, amount_minor bigint,
       currency text, status text, metadata jsonb, created_at timestamptz)""",
    """CREATE TABLE outbox (seq bigserial PRIMARY KEY, event_id text UNIQUE, type text,
       data jsonb, occurred_at timestamptz, published_at timestamptz)""",
    "CREATE INDEX ON outbox (published_at)",
    """CREATE TABLE balances (owner_id text, currency text, credits_posted bigint,
       debits_posted bigint, PRIMARY KEY (owner_id, currency))""",
]
SQLITE_DDL = [
    """CREATE TABLE idem (owner_id TEXT, key TEXT, fingerprint TEXT, status TEXT,
       created_at TEXT, PRIMARY KEY (owner_id, key))""",
    """CREATE TABLE pay (id TEXT PRIMARY KEY, owner_id TEXT, amount_minor INTEGER,
       currency TEXT, status TEXT, metadata TEXT, created_at TEXT)""",
    """CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE,
       type TEXT, data TEXT, occurred_at TEXT, published_at TEXT)""",
    "CREATE INDEX outbox_published ON outbox (published_at)",
    """CREATE TABLE balances (owner_id TEXT, currency TEXT, credits_posted INTEGER,
       debits_posted INTEGER, PRIMARY KEY (owner_id, currency))""",
]
# The read reference's one user: its bearer token is its owner id (no JWT: the reference is
# the floor of the work a read must do, not an auth scheme).
READ_OWNER = "usr_reference"


class Store(Protocol):
    async def create(
        self, owner: str, key: str, amount_minor: int, currency: str
    ) -> dict[str, Any]: ...

    async def wallets(self, owner: str) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


def _payment(pid: str, amount_minor: int, currency: str, now: datetime) -> dict[str, Any]:
    return {
        "id": pid,
        "amount_minor": amount_minor,
        "currency": currency,
        "status": "created",
        "created_at": now.isoformat(),
    }


class PgStore:
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, dsn: str) -> PgStore:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            for stmt in PG_DDL:
                await conn.execute(stmt)
            await conn.execute("INSERT INTO balances VALUES ($1, 'USD', 0, 0)", READ_OWNER)
        finally:
            await conn.close()
        # PocketPay's engine: pool_size 10 + overflow 10 (kit/db); the same here.
        return cls(await asyncpg.create_pool(dsn, min_size=10, max_size=20))

    async def create(
        self, owner: str, key: str, amount_minor: int, currency: str
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        pid = "pay_" + uuid.uuid4().hex
        body = _payment(pid, amount_minor, currency, now)
        async with self.pool.acquire() as c, c.transaction():
            await c.execute(
                "INSERT INTO idem VALUES ($1, $2, $3, 'in_progress', $4)", owner, key, "f", now
            )
            await c.execute(
                "INSERT INTO pay VALUES ($1, $2, $3, $4, 'created', '{}', $5)",
                pid,
                owner,
                amount_minor,
                currency,
                now,
            )
            await c.execute(
                "INSERT INTO outbox (event_id, type, data, occurred_at) VALUES ($1, $2, $3, $4)",
                "evt_" + uuid.uuid4().hex,
                "payments.payment.created",
                json.dumps(body),
                now,
            )
        return body

    async def wallets(self, owner: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT currency, credits_posted, debits_posted FROM balances WHERE owner_id = $1",
            owner,
        )
        return [dict(r) for r in rows]

    async def close(self) -> None:
        await self.pool.close()


class SqliteStore:
    def __init__(self, db: Any) -> None:
        self.db = db
        self.lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> SqliteStore:
        import aiosqlite

        db = await aiosqlite.connect(path)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        for stmt in SQLITE_DDL:
            await db.execute(stmt)
        await db.execute("INSERT INTO balances VALUES (?, 'USD', 0, 0)", (READ_OWNER,))
        await db.commit()
        return cls(db)

    async def create(
        self, owner: str, key: str, amount_minor: int, currency: str
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        pid = "pay_" + uuid.uuid4().hex
        body = _payment(pid, amount_minor, currency, now)
        at = now.isoformat()
        async with self.lock:
            try:
                await self.db.execute(
                    "INSERT INTO idem VALUES (?, ?, ?, 'in_progress', ?)", (owner, key, "f", at)
                )
                await self.db.execute(
                    "INSERT INTO pay VALUES (?, ?, ?, ?, 'created', '{}', ?)",
                    (pid, owner, amount_minor, currency, at),
                )
                await self.db.execute(
                    "INSERT INTO outbox (event_id, type, data, occurred_at) VALUES (?, ?, ?, ?)",
                    ("evt_" + uuid.uuid4().hex, "payments.payment.created", json.dumps(body), at),
                )
                await self.db.commit()
            except BaseException:
                await self.db.rollback()
                raise
        return body

    async def wallets(self, owner: str) -> list[dict[str, Any]]:
        async with self.lock:
            cur = await self.db.execute(
                "SELECT currency, credits_posted, debits_posted FROM balances WHERE owner_id = ?",
                (owner,),
            )
            rows = await cur.fetchall()
        return [{"currency": c, "credits_posted": cr, "debits_posted": dr} for c, cr, dr in rows]

    async def close(self) -> None:
        await self.db.close()


async def open_store(db: str) -> Store:
    if db.startswith("sqlite:///"):
        return await SqliteStore.open(db.removeprefix("sqlite:///"))
    return await PgStore.open(db)


class PaymentIn(BaseModel):
    """The create body, validated as PocketPay's is (a pydantic model)."""

    amount_minor: int = Field(gt=0)
    currency: str = Field(min_length=3, max_length=3)
    payment_method: str = "pm_card_visa"
    capture_method: str = "automatic"


def create_app(db: str) -> FastAPI:
    state: dict[str, Store] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state["store"] = await open_store(db)
        try:
            yield
        finally:
            await state["store"].close()

    app = FastAPI(lifespan=lifespan)

    def owner_of(authorization: str | None) -> str:
        if not authorization or not authorization.startswith("Bearer "):
            raise HTTPException(401)
        return authorization.removeprefix("Bearer ")[-32:]

    @app.post("/api/v1/payments", status_code=202)
    async def create_payment(
        body: PaymentIn,
        authorization: str | None = Header(None),
        idempotency_key: str | None = Header(None),
    ) -> JSONResponse:
        if not idempotency_key:
            raise HTTPException(400)
        out = await state["store"].create(
            owner_of(authorization), idempotency_key, body.amount_minor, body.currency
        )
        return JSONResponse(out, status_code=202)

    @app.get("/api/v1/wallets")
    async def wallets(authorization: str | None = Header(None)) -> JSONResponse:
        owner_of(authorization)
        return JSONResponse({"data": await state["store"].wallets(READ_OWNER)})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser(prog="python -m bench.reference_app")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--db", required=True, help="postgresql://... or sqlite:///path")
    args = p.parse_args()
    # As pocketpay.cli._serve runs PocketPay.
    uvicorn.run(
        create_app(args.db),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
