"""Issue 6: NATS redelivery through a real 30-second PostgreSQL outage loses nothing.

Events arrive while the consumer's database refuses every connection: the handler fails, the
dead-letter write fails too, and JetStream keeps redelivering (no server-side limit, capped
backoff) far past ``max_deliver + 3``, where it used to give up silently. When the database
is back, every event is applied exactly once. The outage is real (the database refuses
connections and its sessions are killed); its 30 s length is the fault, not a wait for a
result: results are polled."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Column, MetaData, String, Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.bus import Envelope, list_dead_letters
from pocketpay.kit.bus import metadata as bus_metadata
from pocketpay.kit.bus_nats import NatsBus
from pocketpay.kit.clock import SystemClock
from pocketpay.kit.db import create_engine, insert_ignore
from pocketpay.kit.ids import new_id
from tests.kit.services import NATS_URL, require_nats, require_postgres
from tests.support import eventually, pg_url, reset_nats_stream

pytestmark = [pytest.mark.postgres, pytest.mark.nats, pytest.mark.timeout(180)]

OUTAGE_SECONDS = 30.0
MAX_DELIVER = 3
EVENTS = 5

effects_meta = MetaData()
effects = Table("outage_effects", effects_meta, Column("event_id", String(80), primary_key=True))


async def _admin(sql: str) -> None:
    admin = create_engine(pg_url("postgres"))
    try:
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(sql))
    finally:
        await admin.dispose()


@pytest.fixture
async def outage_db() -> AsyncIterator[tuple[str, AsyncEngine]]:
    """A database of this test's own, so refusing its connections disturbs nobody else."""
    require_postgres(pg_url("postgres"))
    name = f"pp_outage_{os.getpid()}_{secrets.token_hex(3)}"
    await _admin(f"CREATE DATABASE {name}")
    engine = create_engine(pg_url(name))
    async with engine.begin() as conn:
        await conn.run_sync(bus_metadata.create_all)
        await conn.run_sync(effects_meta.create_all)
    try:
        yield name, engine
    finally:
        await engine.dispose()
        await _admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def _down(name: str) -> None:
    await _admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
    await _admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")


async def test_nats_redelivers_through_a_30_second_database_outage(
    outage_db: tuple[str, AsyncEngine],
) -> None:
    require_nats(NATS_URL)
    name, engine = outage_db
    token = secrets.token_hex(4)
    stream, prefix = f"OUTAGE_{token.upper()}", f"out{token}"
    deliveries: Counter[str] = Counter()

    async def apply(env: Envelope) -> None:  # an effect in the database, once per event id
        deliveries[env.id] += 1
        async with engine.begin() as conn:
            await conn.execute(insert_ignore(conn, effects).values(event_id=env.id))

    bus = NatsBus(
        NATS_URL,
        engine,
        SystemClock(),
        stream=stream,
        subjects=[f"{prefix}.>"],
        max_deliver=MAX_DELIVER,
        retry_delay_ms=50,
        retry_cap_ms=1000,
        fetch_timeout_seconds=0.5,
    )
    bus.subscribe("ledger", [f"{prefix}.>"], apply)
    await bus.start()
    try:
        await _down(name)
        sent = [
            Envelope(new_id("evt"), f"{prefix}.thing.happened", datetime.now(UTC), {"n": n})
            for n in range(EVENTS)
        ]
        for env in sent:
            await bus.publish(env)
        await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself
        # Where JetStream used to stop redelivering, it went on.
        assert min(deliveries[e.id] for e in sent) > MAX_DELIVER + 3, deliveries
        await _admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")

        async def all_applied() -> bool:
            async with engine.connect() as conn:
                n = await conn.scalar(select(func.count()).select_from(effects))
            return n == EVENTS

        await eventually(all_applied, timeout=60)
        async with engine.connect() as conn:
            done = set((await conn.execute(select(effects.c.event_id))).scalars())
        assert done == {e.id for e in sent}
        assert await list_dead_letters(engine) == []  # applied, not parked
    finally:
        await bus.close()
        await reset_nats_stream(stream)
