"""Idempotency keys are kept 24 hours, then purged by the gateway's job."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import insert, select

from pocketpay.gateway.models import idempotency_keys
from tests.support import Stack


async def test_keys_older_than_a_day_are_purged(stack: Stack) -> None:
    now = stack.runtime.clock.now()
    k = idempotency_keys.c
    async with stack.runtime.engine.begin() as conn:
        for key, age_hours in (("old", 25), ("fresh", 23)):
            await conn.execute(
                insert(idempotency_keys).values(
                    owner_id="usr_purge",
                    key=key,
                    fingerprint="f",
                    status="done",
                    response_status=201,
                    response_body={},
                    created_at=now - timedelta(hours=age_hours),
                )
            )
    store = stack.runtime.components["gateway"].state["idempotency"]
    # The gateway's own purge job may run first (its first pass is at start-up): either way
    # the old key goes, the fresh one stays, and a second purge finds nothing.
    await store.purge()
    assert await store.purge() == 0
    async with stack.runtime.engine.connect() as conn:
        left = (await conn.execute(select(k.key).where(k.owner_id == "usr_purge"))).scalars()
        assert list(left) == ["fresh"]
