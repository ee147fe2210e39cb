"""Issue 7: ``NatsBus`` handles up to ``consumer_concurrency`` messages of a batch at once.

* N slow handlers overlap (an event set when N are inside at once, never a timing), and never
  more than N run; with 1 the batch is handled in stream order, one at a time.
* Each message is settled on its own: a failing one among concurrent successes is redelivered
  (or dead-lettered after ``max_deliver``), the others are handled once.
* ``close()`` in the middle of a batch starts no new handler, lets the running ones finish,
  hands the rest back: after a restart every message was handled exactly once. Past its grace
  it cancels the running handlers, whose messages come back.
* Waiting and running messages get "in progress" acks: a batch slower than ``ack_wait`` is
  not redelivered under its handlers.

Events are published before the consumer starts, so its first pull takes them in one batch.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.bus import Envelope, list_dead_letters, metadata
from pocketpay.kit.bus_nats import NatsBus
from pocketpay.kit.clock import SystemClock
from pocketpay.kit.db import create_engine
from pocketpay.kit.ids import new_id
from pocketpay.settings import BusSettings
from tests.kit.services import NATS_URL, require_nats
from tests.support import eventually, reset_nats_stream

pytestmark = pytest.mark.nats

WAIT = 20.0  # seconds: upper bound of any single wait
MAX_DELIVER = 3


class Env:
    def __init__(self, engine: AsyncEngine, stream: str, prefix: str) -> None:
        self.engine, self.stream, self.prefix = engine, stream, prefix
        self.buses: list[NatsBus] = []

    def bus(self, **kw: Any) -> NatsBus:
        kw.setdefault("max_deliver", MAX_DELIVER)
        kw.setdefault("retry_delay_ms", 5)
        kw.setdefault("retry_cap_ms", 20)
        kw.setdefault("fetch_timeout_seconds", 0.5)
        bus = NatsBus(
            NATS_URL,
            self.engine,
            SystemClock(),
            stream=self.stream,
            subjects=[f"{self.prefix}.>"],
            **kw,
        )
        self.buses.append(bus)
        return bus

    async def consumer(
        self, handler: Callable[[Envelope], Awaitable[None]], ordered: bool = False, **kw: Any
    ) -> NatsBus:
        bus = self.bus(**kw)
        bus.subscribe("c", [f"{self.prefix}.>"], handler, ordered=ordered)
        await bus.start()
        return bus

    async def publish(self, n: int) -> list[str]:
        """``n`` events, published by a bus without subscriptions (before the consumer)."""
        bus = self.bus()
        await bus.start()
        events = [
            Envelope(new_id("evt"), f"{self.prefix}.thing.happened", datetime.now(UTC), {"n": i})
            for i in range(n)
        ]
        for env in events:
            await bus.publish(env)
        await bus.close()
        return [e.id for e in events]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    require_nats(NATS_URL)
    token = secrets.token_hex(4)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    e = Env(engine, f"CONC_{token.upper()}", f"cc{token}")
    try:
        yield e
    finally:
        for bus in e.buses:
            await bus.close()
        await reset_nats_stream(e.stream)
        await engine.dispose()


class Gate:
    """A handler that blocks until released; counts how many run at once."""

    def __init__(self, full_at: int) -> None:
        self.full_at = full_at
        self.active = 0
        self.peak = 0
        self.full = asyncio.Event()  # set once ``full_at`` handlers are inside together
        self.release = asyncio.Event()
        self.entered: list[str] = []
        self.completed: Counter[str] = Counter()
        self.cancelled: list[str] = []

    async def __call__(self, env: Envelope) -> None:
        self.entered.append(env.id)
        self.active += 1
        self.peak = max(self.peak, self.active)
        if self.active >= self.full_at:
            self.full.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(env.id)
            raise
        finally:
            self.active -= 1
        self.completed[env.id] += 1


def test_concurrency_must_be_positive(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ValueError, match="consumer_concurrency"):
        NatsBus(NATS_URL, engine, SystemClock(), consumer_concurrency=0)


@pytest.mark.parametrize("n", [1, 4])
async def test_n_slow_handlers_overlap_and_never_more(env: Env, n: int) -> None:
    ids = await env.publish(3 * n)
    gate = Gate(full_at=n)
    bus = await env.consumer(gate, consumer_concurrency=n)

    await asyncio.wait_for(gate.full.wait(), WAIT)  # n handlers inside at once
    assert gate.active == n
    assert len(gate.entered) == n  # the next ones wait for a free slot
    gate.release.set()
    await asyncio.wait_for(bus.drain(), WAIT)

    assert gate.peak == n
    assert gate.completed == Counter(ids)  # each once
    if n == 1:
        assert gate.entered == ids  # one at a time: stream order


async def test_an_ordered_subscription_handles_one_at_a_time_in_stream_order(env: Env) -> None:
    ids = await env.publish(8)
    entered: list[str] = []
    active = peak = 0

    async def handler(e: Envelope) -> None:
        nonlocal active, peak
        entered.append(e.id)
        active += 1
        peak = max(peak, active)
        for _ in range(3):
            await asyncio.sleep(0)  # yields: concurrent handlers would overlap here
        active -= 1

    bus = await env.consumer(handler, ordered=True, consumer_concurrency=8)
    await eventually(lambda: _has(entered, len(ids)), timeout=WAIT)
    await asyncio.wait_for(bus.drain(), WAIT)
    assert peak == 1  # the bus-wide concurrency of 8 does not apply
    assert entered == ids


async def _has(items: list[str], n: int) -> bool:
    return len(items) >= n


async def test_a_failing_message_is_redelivered_the_others_are_not(env: Env) -> None:
    ids = await env.publish(6)
    once, always = ids[1], ids[4]  # fails its first attempt / every attempt (dead letter)
    barrier = asyncio.Barrier(len(ids))
    attempts: Counter[str] = Counter()
    succeeded: Counter[str] = Counter()

    async def handler(e: Envelope) -> None:
        attempts[e.id] += 1
        if attempts[e.id] == 1:
            # The first attempts all run together: the failures happen among successes.
            await asyncio.wait_for(barrier.wait(), WAIT)
        if e.id == always or (e.id == once and attempts[e.id] == 1):
            raise RuntimeError(f"no luck on attempt {attempts[e.id]}")
        succeeded[e.id] += 1

    bus = await env.consumer(handler, consumer_concurrency=len(ids))
    await eventually(lambda: _dead_letters(env.engine), timeout=WAIT)
    await asyncio.wait_for(bus.drain(), WAIT)

    assert attempts == Counter({i: 1 for i in ids} | {once: 2, always: MAX_DELIVER})
    assert succeeded == Counter(i for i in ids if i != always)
    [dead] = await list_dead_letters(env.engine)
    assert (dead.event_id, dead.deliveries) == (always, MAX_DELIVER)


async def _dead_letters(engine: AsyncEngine) -> list[Any]:
    return await list_dead_letters(engine)


async def test_close_mid_batch_loses_nothing_and_repeats_nothing(env: Env) -> None:
    ids = await env.publish(10)
    gate = Gate(full_at=3)
    bus = await env.consumer(gate, consumer_concurrency=3, close_grace_seconds=WAIT)
    await asyncio.wait_for(gate.full.wait(), WAIT)
    running = list(gate.entered)

    closing = asyncio.create_task(bus.close())
    await asyncio.sleep(0)  # a turn of the loop (not a timing): close() has asked to stop
    assert not closing.done()  # it waits for the running handlers
    gate.release.set()  # they finish (and are acked) within the grace
    await asyncio.wait_for(closing, WAIT)
    assert gate.entered == running  # no handler started once close() asked to stop
    assert gate.completed == Counter(running)

    # The rest was handed back: a new process gets it at once, and only it.
    again = await env.consumer(gate, consumer_concurrency=3)
    await eventually(lambda: _sum(gate.completed, len(ids)), timeout=WAIT)
    await asyncio.wait_for(again.drain(), WAIT)
    assert gate.completed == Counter(ids)  # every message handled exactly once
    assert Counter(gate.entered) == Counter(ids)
    assert gate.cancelled == []


async def _sum(counter: Counter[str], total: int) -> bool:
    return sum(counter.values()) >= total


async def test_close_past_its_grace_cancels_running_handlers_and_hands_them_back(
    env: Env,
) -> None:
    ids = await env.publish(5)
    stuck = Gate(full_at=2)  # never released
    bus = await env.consumer(stuck, consumer_concurrency=2, close_grace_seconds=0.2)
    await asyncio.wait_for(stuck.full.wait(), WAIT)
    running = list(stuck.entered)

    await asyncio.wait_for(bus.close(), WAIT)
    assert sorted(stuck.cancelled) == sorted(running)  # cancelled, awaited, nothing left
    assert stuck.active == 0 and not stuck.completed

    fine = Gate(full_at=1)
    fine.release.set()
    again = await env.consumer(fine, consumer_concurrency=2)
    await eventually(lambda: _sum(fine.completed, len(ids)), timeout=WAIT)
    await asyncio.wait_for(again.drain(), WAIT)
    assert fine.completed == Counter(ids)


async def test_a_batch_slower_than_ack_wait_is_kept_in_progress(env: Env) -> None:
    """Running and waiting messages alike get "in progress" acks: none is redelivered while
    the batch is handled (a redelivery would show as a second attempt)."""
    ack_wait = 1.0
    ids = await env.publish(4)
    gate = Gate(full_at=2)
    bus = await env.consumer(gate, consumer_concurrency=2, ack_wait_seconds=ack_wait)
    await asyncio.wait_for(gate.full.wait(), WAIT)
    await asyncio.sleep(2.5 * ack_wait)  # the point of this test: time passes past ack_wait
    gate.release.set()
    await asyncio.wait_for(bus.drain(), WAIT)
    assert Counter(gate.entered) == Counter(ids)  # no second attempt of any message


async def test_a_handler_ending_in_a_stray_cancellation_does_not_stop_the_consumer(
    env: Env,
) -> None:
    """A handler task that ends cancelled without close() asking (a library's internal
    cancellation leaking out) is looked at, its message handed back and handled again; the
    consumer keeps going."""
    ids = await env.publish(4)
    attempts: Counter[str] = Counter()

    async def handler(e: Envelope) -> None:
        attempts[e.id] += 1
        if e.id == ids[2] and attempts[e.id] == 1:
            raise asyncio.CancelledError  # nobody cancelled this task

    bus = await env.consumer(handler, consumer_concurrency=2)
    await eventually(lambda: _sum(attempts, len(ids) + 1), timeout=WAIT)
    await asyncio.wait_for(bus.drain(), WAIT)
    assert attempts == Counter({i: 1 for i in ids} | {ids[2]: 2})


def test_the_setting_defaults_to_16_and_refuses_0() -> None:
    assert BusSettings().consumer_concurrency == 16
    assert BusSettings(consumer_concurrency=1).consumer_concurrency == 1
    with pytest.raises(ValidationError):
        BusSettings(consumer_concurrency=0)
