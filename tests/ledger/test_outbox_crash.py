"""A crash between commit and publish: the event still arrives, and takes effect exactly once.

An event is written to the ledger's outbox in a committed transaction; then the process
"dies" before the relay marks it published, in one of three ways: the relay never ran, the bus
refused the publish, or the relay task was cancelled after the bus took the message but
before the row was marked. A fresh engine, bus, relay and consumer on the same database (as
after a restart) must then deliver it, and the consumer's effect, a ledger transfer with an id
of its own (not idempotent by itself), must happen once: the bus dedupes a re-publish of the
same envelope, and the consumer's inbox dedupes a redelivery the bus cannot recognize.

Embedded bus on SQLite; NATS JetStream on PostgreSQL (a stream and subjects unique to the
test, deleted afterwards). Waits are events with timeouts, never sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.bus import Bus, EmbeddedBus, Envelope, bus_stream
from pocketpay.kit.bus_nats import NatsBus
from pocketpay.kit.clock import SystemClock
from pocketpay.kit.db import create_engine
from pocketpay.kit.ids import new_id
from pocketpay.kit.outbox import OutboxRelay, add_event, claim_inbox
from pocketpay.ledger import service
from pocketpay.ledger.chart import TransferCode, system_account_id, wallet_account_id
from pocketpay.ledger.models import inbox, outbox, transfers
from tests.kit.services import NATS_URL, require_nats
from tests.ledger.conftest import database_url
from tests.support import reset_nats_stream

WAIT = 20.0
DURABLE = "ledger-crash-test"
AMOUNT = 4_200
WALLET = wallet_account_id("crash", "USD")
CRASH_MODES = ["relay_never_ran", "publish_raised", "cancelled_after_publish"]


class Effects:
    """The consumer: claims the inbox, then credits a wallet with a transfer id of its own, so
    only the inbox stands between a redelivery and a double credit."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.clock = SystemClock()
        self.calls: list[str] = []
        self.applied: list[str] = []
        self.changed = asyncio.Event()

    async def __call__(self, env: Envelope) -> None:
        now = self.clock.now()
        async with self.engine.begin() as conn:
            if await claim_inbox(conn, inbox, env.id, env.type, now):
                await service.create_transfer(
                    conn,
                    service.TransferRequest(
                        new_id("crash"),
                        system_account_id("psp_receivable", "USD"),
                        WALLET,
                        int(env.data["amount_minor"]),
                        "USD",
                        TransferCode.CARD_CAPTURE,
                    ),
                    now,
                )
                self.applied.append(env.id)
        self.calls.append(env.id)
        self.changed.set()

    async def wait_calls(self, n: int) -> None:
        async def loop() -> None:
            while len(self.calls) < n:
                self.changed.clear()
                if len(self.calls) >= n:
                    return
                await self.changed.wait()

        await asyncio.wait_for(loop(), WAIT)


@dataclass
class Backend:
    """Builds the per-"process" objects: a new engine and bus each time, same database."""

    kind: str
    url: str
    subject_prefix: str
    stream: str
    engines: list[AsyncEngine] = field(default_factory=list)

    def engine(self) -> AsyncEngine:
        eng = create_engine(self.url)
        self.engines.append(eng)
        return eng

    def bus(self, engine: AsyncEngine) -> Any:
        clock = SystemClock()
        if self.kind == "sqlite":
            return EmbeddedBus(engine, clock, poll_seconds=0.05, retry_delay_ms=5)
        return NatsBus(
            NATS_URL,
            engine,
            clock,
            stream=self.stream,
            subjects=[f"{self.subject_prefix}.>"],
            retry_delay_ms=5,
            fetch_timeout_seconds=0.5,
        )

    @property
    def event_type(self) -> str:
        return f"{self.subject_prefix}.thing.happened"


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.nats])]
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    token = secrets.token_hex(4)
    b = Backend(
        request.param,
        await database_url(request.param, tmp_path),
        # The embedded bus routes by the envelope type; NATS needs subjects no other stream on
        # the server has, so each test gets its own first token and stream.
        f"crash{token}",
        f"CRASH_{token.upper()}",
    )
    if b.kind == "postgres":
        require_nats(NATS_URL)
        await reset_nats_stream(b.stream)
    try:
        yield b
    finally:
        for eng in b.engines:
            await eng.dispose()
        if b.kind == "postgres":
            await reset_nats_stream(b.stream)  # deletes it


class ExplodingBus:
    """Wraps a bus. ``raise_before``: the publish fails (broker down). Otherwise the message
    is published, then ``published`` is set and the call hangs until the relay is cancelled:
    the process dies after the bus took the message but before the row was marked."""

    def __init__(self, inner: Any, *, raise_before: bool) -> None:
        self.inner = inner
        self.raise_before = raise_before
        self.published = asyncio.Event()

    async def publish(self, env: Envelope) -> None:
        if self.raise_before:
            raise ConnectionError("bus down")
        await self.inner.publish(env)
        self.published.set()
        await asyncio.Event().wait()  # until cancelled


@asynccontextmanager
async def started(bus: Any) -> AsyncIterator[Any]:
    await bus.start()
    try:
        yield bus
    finally:
        await bus.close()


async def unpublished(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        q = select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
        return int((await conn.execute(q)).scalar_one())


async def count(engine: AsyncEngine, table: Any, where: Callable[[Any], Any] | None = None) -> int:
    q = select(func.count()).select_from(table)
    if where is not None:
        q = q.where(where(table.c))
    async with engine.connect() as conn:
        return int((await conn.execute(q)).scalar_one())


async def first_life(b: Backend, mode: str) -> str:
    """Commit an event to the outbox, then die before it is marked published."""
    engine = b.engine()
    async with engine.begin() as conn:
        event_id = await add_event(
            conn, outbox, b.event_type, {"amount_minor": AMOUNT}, SystemClock().now()
        )
    if mode == "relay_never_ran":
        pass
    elif mode == "publish_raised":
        relay = OutboxRelay(
            engine,
            outbox,
            cast(Bus, ExplodingBus(None, raise_before=True)),
            SystemClock(),
            source="ledger",
        )
        # The pass fails (how it reports that is the relay's business); the row must stay.
        with contextlib.suppress(Exception):
            await relay.publish_pending()
    else:
        bus = b.bus(engine)  # publishing needs no subscription
        async with started(bus):
            exploding = ExplodingBus(bus, raise_before=False)
            relay = OutboxRelay(
                engine, outbox, cast(Bus, exploding), SystemClock(), source="ledger"
            )
            await relay.start()
            relay.notify()
            await asyncio.wait_for(exploding.published.wait(), WAIT)
            await relay.stop()  # the crash: cancelled between publish and mark
    assert await unpublished(engine) == 1
    await engine.dispose()
    return event_id


async def settled_bus(bus: Any) -> None:
    await asyncio.wait_for(bus.drain(), WAIT)


async def wallet_credit(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return (await service.balance(conn, WALLET)).available_minor


@pytest.mark.parametrize("mode", CRASH_MODES)
async def test_event_arrives_exactly_once_after_a_crash(backend: Backend, mode: str) -> None:
    event_id = await first_life(backend, mode)

    # The restart: new engine, bus, relay and consumer on the same database.
    engine = backend.engine()
    effects = Effects(engine)
    bus: Bus = backend.bus(engine)
    bus.subscribe(DURABLE, [f"{backend.subject_prefix}.>"], effects)
    relay = OutboxRelay(engine, outbox, bus, SystemClock(), source="ledger", poll_seconds=0.05)
    async with started(bus):
        await relay.start()
        try:
            relay.notify()
            await effects.wait_calls(1)
        finally:
            await relay.stop()
        # In the cancelled mode the bus had the message before the restart, so the consumer
        # may have it before the new relay got to the row: finish the relay's pass, which
        # publishes the envelope again (the bus must dedupe it), and settle the bus.
        await relay.publish_pending()
        await settled_bus(bus)
        assert effects.calls == [event_id]
        assert effects.applied == [event_id]
        assert await unpublished(engine) == 0
        if backend.kind == "sqlite":
            # Published twice in the cancelled mode, stored once: the bus deduped on the id.
            assert await count(engine, bus_stream) == 1

        # Redelivery: the same envelope again (the bus dedupes it) and a copy the bus cannot
        # recognize (a dead-letter replay carries a new message id): the inbox dedupes that.
        async with engine.connect() as conn:
            row = (await conn.execute(select(outbox).where(outbox.c.event_id == event_id))).one()
        env = Envelope(row.event_id, row.type, row.occurred_at, row.data, row.trace, "ledger")
        await bus.publish(env)
        await bus.publish(env)
        replayed = Envelope(
            env.id, env.type, env.occurred_at, env.data, {"replay_of": "dlq_test"}, "ledger"
        )
        await bus.publish(replayed)
        await effects.wait_calls(2)
        await settled_bus(bus)

    assert effects.calls == [event_id, event_id]  # the second is the replay copy
    assert effects.applied == [event_id]  # the effect happened once
    await effects(env)  # and a direct duplicate call is a no-op too
    assert effects.applied == [event_id]
    assert await wallet_credit(engine) == AMOUNT
    assert await count(engine, transfers) == 1
    assert await count(engine, inbox, lambda c: c.event_id == event_id) == 1
