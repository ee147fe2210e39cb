"""The sandbox's own database: every object and idempotency key survives a restart.

The sandbox plays the outside world, so this is not PocketPay's database and not part of its
Alembic history: the two tables are created with ``metadata.create_all`` when the sandbox
starts (``sqlite+aiosqlite:///<var_dir>/sandbox.db`` by default, any SQLAlchemy async URL
works). Objects are stored as their dataclass fields in JSON, keyed by id, with the columns
an operator filters on (``kind``, ``created``, the ``payment_id`` and ``refund_id`` metadata
our code sets, the refund's ``payment_intent``); ``seq`` keeps insertion order, which is the
order of Stripe's lists (newest first).

The ``Store`` works on memory loaded from here at start; each API operation's changes (the
objects it touched and its idempotency key) are written in one transaction before the answer
goes out. One sandbox process per database: its in-process lock is what serializes writers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pocketpay.kit.db import create_engine
from pocketpay.sandbox.idempotency import StoredResponse
from pocketpay.sandbox.models import (
    BalanceTransaction,
    BankAccount,
    Charge,
    Customer,
    Dispute,
    PaymentIntent,
    PaymentMethod,
    Payout,
    Refund,
    SandboxObject,
)

metadata = MetaData()

objects = Table(
    "sandbox_objects",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("kind", String(24), nullable=False),
    Column("created", BigInteger, nullable=False, index=True),
    Column("payment_id", String(64), nullable=True, index=True),  # metadata.payment_id
    Column("refund_id", String(64), nullable=True),  # metadata.refund_id
    Column("payment_intent", String(64), nullable=True, index=True),  # of a refund or charge
    Column("body", JSON, nullable=False),
)

idempotency_keys = Table(
    "sandbox_idempotency_keys",
    metadata,
    Column("api_key", String(200), nullable=False),
    Column("key", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("body", JSON, nullable=False),
    Column("stored_at", Float, nullable=False, index=True),
    PrimaryKeyConstraint("api_key", "key"),
)

KINDS: dict[str, type[SandboxObject]] = {
    "payment_intent": PaymentIntent,
    "charge": Charge,
    "refund": Refund,
    "balance_transaction": BalanceTransaction,
    "customer": Customer,
    "payment_method": PaymentMethod,
    "dispute": Dispute,
    "bank_account": BankAccount,
    "payout": Payout,
}
_KIND_OF = {cls: kind for kind, cls in KINDS.items()}


def default_url(var_dir: str = "var") -> str:
    return f"sqlite+aiosqlite:///{var_dir}/sandbox.db"


def _row(obj: SandboxObject) -> dict[str, Any]:
    meta: dict[str, str] = getattr(obj, "metadata", {})
    return {
        "id": obj.id,
        "kind": _KIND_OF[type(obj)],
        "created": obj.created,
        "payment_id": meta.get("payment_id"),
        "refund_id": meta.get("refund_id"),
        "payment_intent": getattr(obj, "payment_intent", None),
        "body": dataclasses.asdict(obj),
    }


class SandboxDB:
    """Load everything at start, save one operation's changes in one transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: AsyncEngine = create_engine(url, pool_size=2)
        self._created = False

    async def create_tables(self) -> None:
        if not self._created:
            async with self.engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
            self._created = True

    async def load_objects(self) -> list[SandboxObject]:
        """Every stored object, oldest first."""
        await self.create_tables()
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(objects.c.kind, objects.c.body).order_by(objects.c.seq)
            )
            return [KINDS[kind](**body) for kind, body in rows]

    async def load_keys(self, since: float) -> list[tuple[str, str, StoredResponse]]:
        """Idempotency keys stored at or after ``since``, oldest first."""
        await self.create_tables()
        k = idempotency_keys.c
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(k.api_key, k.key, k.fingerprint, k.status, k.body, k.stored_at)
                .where(k.stored_at >= since)
                .order_by(k.stored_at)
            )
            return [(r[0], r[1], StoredResponse(r[2], r[3], r[4], r[5])) for r in rows]

    async def save(
        self,
        changed: Iterable[SandboxObject],
        key: tuple[str, str, StoredResponse] | None = None,
        expire_before: float | None = None,
    ) -> None:
        """Write the objects (insert or update by id) and the idempotency key atomically."""
        await self.create_tables()
        async with self.engine.begin() as conn:
            await self._upsert_objects(conn, [_row(o) for o in changed])
            if key is not None:
                await self._put_key(conn, *key)
            if expire_before is not None:
                await conn.execute(
                    delete(idempotency_keys).where(idempotency_keys.c.stored_at < expire_before)
                )

    async def _upsert_objects(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        ids = [r["id"] for r in rows]
        existing = set(
            (await conn.execute(select(objects.c.id).where(objects.c.id.in_(ids)))).scalars()
        )
        for row in rows:
            if row["id"] in existing:
                await conn.execute(update(objects).where(objects.c.id == row["id"]).values(**row))
            else:
                await conn.execute(insert(objects).values(**row))

    async def _put_key(
        self, conn: AsyncConnection, api_key: str, key: str, stored: StoredResponse
    ) -> None:
        k = idempotency_keys.c
        await conn.execute(delete(idempotency_keys).where(k.api_key == api_key, k.key == key))
        await conn.execute(
            insert(idempotency_keys).values(
                api_key=api_key,
                key=key,
                fingerprint=stored.fingerprint,
                status=stored.status,
                body=stored.body,
                stored_at=stored.stored_at,
            )
        )

    async def aclose(self) -> None:
        await self.engine.dispose()
