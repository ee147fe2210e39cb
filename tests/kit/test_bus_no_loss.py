"""Issue 6: the bus never drops an event silently.

* A handler that keeps failing while the dead-letter write fails too ("the database is down",
  the ``bus.dead_letter.before_write`` failpoint) is retried past ``max_deliver + 3`` (where
  JetStream used to give up) and, once the write works, ends in the dead-letter table: never
  lost. Same on ``EmbeddedBus``, whose offset does not move until then.
* NATS consumers have no server-side delivery limit, existing ones are brought to that, and
  the max-deliveries advisory is counted should it ever fire.
* The outbox relay dead-letters a poison row (the bus answers, other rows go out) and never a
  row held up by a bus outage; the backlog gauge is the real backlog.
* ``EmbeddedBus`` refuses a PostgreSQL engine.
Waits poll with ``eventually``; no sleeps.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import MetaData, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit import failpoints
from pocketpay.kit.bus import (
    EmbeddedBus,
    Envelope,
    list_dead_letters,
    metadata,
    replay_dead_letter,
    retry_delay_seconds,
)
from pocketpay.kit.bus_nats import NatsBus
from pocketpay.kit.clock import ManualClock, SystemClock
from pocketpay.kit.db import create_engine
from pocketpay.kit.ids import new_id
from pocketpay.kit.outbox import OutboxRelay, add_event, outbox_table
from tests.kit.services import NATS_URL, require_nats
from tests.support import eventually, reset_nats_stream

MAX_DELIVER = 3
DLQ_POINT = "bus.dead_letter.before_write"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}")
    async with eng.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield eng
    finally:
        failpoints.disarm()
        await eng.dispose()


def event(subject: str, **data: Any) -> Envelope:
    return Envelope(new_id("evt"), subject, datetime.now(UTC), data, source="test")


class AlwaysFails:
    def __init__(self) -> None:
        self.attempts = 0

    async def __call__(self, env: Envelope) -> None:
        self.attempts += 1
        raise RuntimeError(f"handler down #{self.attempts}")


def test_backoff_doubles_and_is_capped() -> None:
    assert [retry_delay_seconds(n, 200, 1000) for n in (1, 2, 3, 4, 99999)] == [
        0.2,
        0.4,
        0.8,
        1.0,
        1.0,
    ]


def test_embedded_bus_refuses_postgresql() -> None:
    pg = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")  # never connects
    with pytest.raises(ValueError, match="NATS"):
        EmbeddedBus(pg, SystemClock())


async def test_embedded_bus_keeps_an_event_through_a_dead_letter_outage(
    engine: AsyncEngine,
) -> None:
    handler = AlwaysFails()
    bus = EmbeddedBus(
        engine, SystemClock(), max_deliver=MAX_DELIVER, retry_delay_ms=1, retry_cap_ms=5
    )
    bus.subscribe("ledger", ["t.>"], handler)
    failpoints.arm(DLQ_POINT, "raise", count=None)  # every dead-letter write fails
    await bus.start()
    try:
        env = event("t.thing.happened")
        await bus.publish(env)
        await eventually(
            lambda: _true(handler.attempts > MAX_DELIVER + 3 and failpoints.hits(DLQ_POINT) >= 4)
        )
        assert await list_dead_letters(engine) == []
        assert (await bus.lag("ledger"))[0] == 1  # the offset did not move past it
        failpoints.disarm(DLQ_POINT)  # the database is back

        rows = await eventually(lambda: list_dead_letters(engine))
        assert [r.event_id for r in rows] == [env.id]
        assert rows[0].deliveries > MAX_DELIVER + 3
        assert await eventually(lambda: _lag_zero(bus, "ledger"))
    finally:
        await bus.close()


async def _true(value: bool) -> bool:
    return value


async def _lag_zero(bus: Any, durable: str) -> bool:
    return bool((await bus.lag(durable))[0] == 0)


# -- NATS ---------------------------------------------------------------------------------


@pytest.fixture
async def nats_stream() -> AsyncIterator[tuple[str, str]]:
    require_nats(NATS_URL)
    token = secrets.token_hex(4)
    stream, prefix = f"NOLOSS_{token.upper()}", f"nl{token}"
    try:
        yield stream, prefix
    finally:
        await reset_nats_stream(stream)


def nats_bus(engine: AsyncEngine, stream: str, prefix: str, **kw: Any) -> NatsBus:
    return NatsBus(
        NATS_URL,
        engine,
        SystemClock(),
        stream=stream,
        subjects=[f"{prefix}.>"],
        max_deliver=MAX_DELIVER,
        retry_delay_ms=2,
        retry_cap_ms=20,
        fetch_timeout_seconds=0.5,
        **kw,
    )


@pytest.mark.nats
async def test_nats_redelivers_past_the_old_limit_while_the_dead_letter_write_fails(
    engine: AsyncEngine, nats_stream: tuple[str, str]
) -> None:
    stream, prefix = nats_stream
    handler = AlwaysFails()
    bus = nats_bus(engine, stream, prefix)
    bus.subscribe("ledger", [f"{prefix}.>"], handler)
    failpoints.arm(DLQ_POINT, "raise", count=None)
    await bus.start()
    try:
        env = event(f"{prefix}.thing.happened")
        await bus.publish(env)
        # Before: JetStream stopped after max_deliver + 3 deliveries and the event was gone.
        await eventually(
            lambda: _true(handler.attempts > MAX_DELIVER + 6 and failpoints.hits(DLQ_POINT) >= 6)
        )
        assert await list_dead_letters(engine) == []
        assert (await bus.lag("ledger"))[0] == 1
        failpoints.disarm(DLQ_POINT)

        rows = await eventually(lambda: list_dead_letters(engine))
        assert [r.event_id for r in rows] == [env.id]
        assert rows[0].deliveries > MAX_DELIVER + 3
        await bus.drain(timeout=15)  # acked once the dead letter committed
    finally:
        await bus.close()


@pytest.mark.nats
async def test_nats_brings_an_existing_consumer_to_unlimited_deliveries(
    engine: AsyncEngine, nats_stream: tuple[str, str]
) -> None:
    from nats.js import api

    stream, prefix = nats_stream
    first = nats_bus(engine, stream, prefix)
    first.subscribe("ledger", [f"{prefix}.>"], AlwaysFails())
    await first.start()
    js = first._jetstream()
    # What an older version left behind: a bounded server-side max_deliver.
    await js.add_consumer(
        stream,
        config=api.ConsumerConfig(
            name="old",
            durable_name="old",
            ack_policy=api.AckPolicy.EXPLICIT,
            max_deliver=MAX_DELIVER + 3,
            filter_subject=f"{prefix}.>",
        ),
    )
    assert (await js.consumer_info(stream, "old")).config.max_deliver == MAX_DELIVER + 3
    await first.close()

    second = nats_bus(engine, stream, prefix)
    second.subscribe("old", [f"{prefix}.>"], AlwaysFails())
    await second.start()
    try:
        info = await second._jetstream().consumer_info(stream, "old")
        assert info.config.max_deliver == -1
    finally:
        await second.close()


@pytest.mark.nats
async def test_nats_max_deliveries_advisory_is_counted(
    engine: AsyncEngine, nats_stream: tuple[str, str]
) -> None:
    stream, prefix = nats_stream
    bus = nats_bus(engine, stream, prefix)
    bus.subscribe("advised", [f"{prefix}.>"], AlwaysFails())
    await bus.start()
    try:
        before = metric("pocketpay_bus_max_deliveries_advisories_total", consumer="advised")
        nc = bus._nc
        assert nc is not None
        await nc.publish(
            f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.advised",
            b'{"stream_seq": 7, "deliveries": 9}',
        )

        async def counted() -> bool:
            now = metric("pocketpay_bus_max_deliveries_advisories_total", consumer="advised")
            return now == before + 1

        await eventually(counted)
    finally:
        await bus.close()


# -- the outbox relay ---------------------------------------------------------------------

outbox_metadata = MetaData()
outbox = outbox_table(outbox_metadata, "relaytest")


class ScriptedBus:
    """A bus whose publish fails for ``poison`` ids, or for everything while ``down``."""

    def __init__(self) -> None:
        self.published: list[str] = []
        self.poison: set[str] = set()
        self.down = False
        self.down_error: type[Exception] = ConnectionError
        self.ping_fails = False

    async def publish(self, env: Envelope) -> None:
        if self.down:
            raise self.down_error("bus down")
        if env.id in self.poison:
            raise ValueError("maximum payload exceeded")
        self.published.append(env.id)

    async def ping(self) -> float:
        if self.down or self.ping_fails:
            raise ConnectionError("no answer")
        return 1.0


@pytest.fixture
async def outbox_engine(engine: AsyncEngine) -> AsyncEngine:
    async with engine.begin() as conn:
        await conn.run_sync(outbox_metadata.create_all)
    return engine


async def add_events(engine: AsyncEngine, n: int) -> list[str]:
    ids = []
    async with engine.begin() as conn:
        for i in range(n):
            ids.append(await add_event(conn, outbox, "t.thing.happened", {"n": i}, _now()))
    return ids


def _now() -> datetime:
    return datetime.now(UTC)


async def unpublished(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        q = select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
        return int((await conn.execute(q)).scalar_one())


def relay(engine: AsyncEngine, bus: Any, clock: Any = None, **kw: Any) -> OutboxRelay:
    kw.setdefault("publish_max_failures", 3)
    return OutboxRelay(engine, outbox, bus, clock or SystemClock(), source="relaytest", **kw)


async def passes(r: OutboxRelay, n: int) -> int:
    """Run ``n`` relay passes; how many raised."""
    failed = 0
    for _ in range(n):
        try:
            await r.publish_pending()
        except RuntimeError:
            failed += 1
    return failed


async def test_relay_dead_letters_a_poison_row_and_the_rest_go_out(
    outbox_engine: AsyncEngine,
) -> None:
    engine = outbox_engine
    first, poison, *rest = await add_events(engine, 4)
    bus = ScriptedBus()
    bus.poison.add(poison)
    r = relay(engine, bus)

    assert await passes(r, 2) == 2  # two failures: still only a failing row
    assert bus.published == [first]
    assert await list_dead_letters(engine) == []

    assert await passes(r, 1) == 0  # the third: poison, dead-lettered; the rest published
    assert bus.published == [first, *rest]
    assert await unpublished(engine) == 0
    [row] = await list_dead_letters(engine)
    assert (row.durable, row.event_id, row.deliveries) == ("relay:relaytest", poison, 3)
    assert "maximum payload" in row.error
    assert Envelope.from_json(row.payload).data == {"n": 1}

    bus.poison.clear()  # fixed (a bigger max_payload, say): the replay publishes it
    assert await replay_dead_letter(engine, bus, row.id, _now()) is True  # type: ignore[arg-type]
    assert bus.published == [first, *rest, poison]
    assert await list_dead_letters(engine) == []


@pytest.mark.parametrize("error", [ConnectionError, RuntimeError])
async def test_relay_never_dead_letters_during_a_bus_outage(
    outbox_engine: AsyncEngine, error: type[Exception]
) -> None:
    engine = outbox_engine
    ids = await add_events(engine, 3)
    bus = ScriptedBus()
    bus.down, bus.down_error = True, error  # every publish fails, the bus does not answer
    r = relay(engine, bus)

    assert await passes(r, 10) == 10  # well past publish_max_failures
    assert await list_dead_letters(engine) == []
    assert await unpublished(engine) == 3

    bus.down = False
    assert await passes(r, 1) == 0
    assert bus.published == ids
    assert await unpublished(engine) == 0
    assert await list_dead_letters(engine) == []


async def test_relay_keeps_a_row_failing_with_an_outage_error_even_if_ping_answers(
    outbox_engine: AsyncEngine,
) -> None:
    engine = outbox_engine
    await add_events(engine, 2)
    bus = ScriptedBus()
    bus.down, bus.down_error = True, TimeoutError
    bus.ping = _answering  # type: ignore[method-assign]
    assert await passes(relay(engine, bus), 8) == 8
    assert await list_dead_letters(engine) == []
    assert await unpublished(engine) == 2


async def _answering() -> float:
    return 1.0


async def test_relay_sets_the_backlog_gauge_to_the_real_backlog(
    outbox_engine: AsyncEngine,
) -> None:
    engine = outbox_engine
    await add_events(engine, 5)
    bus = ScriptedBus()
    clock = ManualClock()
    r = relay(engine, bus, clock, batch=2)

    def gauge() -> float:
        return metric("pocketpay_outbox_backlog", component="relaytest")

    bus.down = True
    await passes(r, 1)
    assert gauge() == 5  # a full batch: counted
    bus.down = False
    await r.publish_pending()
    assert gauge() == 3  # no second COUNT within 5 s: the last count minus what went out
    await r.publish_pending()
    assert gauge() == 1
    await add_events(engine, 3)  # rows the estimate cannot know of (real backlog: 4)
    clock.advance(5.0)
    await r.publish_pending()
    assert gauge() == 2  # a full batch, the last COUNT 5 s old: counted again
    await r.publish_pending()
    await r.publish_pending()
    assert gauge() == 0  # a batch that was not full: exact
    assert await unpublished(engine) == 0
