"""One contract, two buses: every test here runs on ``EmbeddedBus`` and on ``NatsBus``.

The embedded bus uses a temporary SQLite file; the NATS bus uses the real server with a stream
and subjects unique to the test (deleted afterwards). Both keep dead letters in the database.
Waiting is ``drain()`` (everything pending handled and settled) or an ``asyncio.Event`` with a
timeout, never a sleep.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.bus import (
    EmbeddedBus,
    Envelope,
    list_dead_letters,
    metadata,
    replay_dead_letter,
)
from pocketpay.kit.bus_nats import NatsBus
from pocketpay.kit.clock import SystemClock
from pocketpay.kit.db import create_engine
from pocketpay.kit.ids import new_id
from tests.kit.services import NATS_URL, require_nats

WAIT = 20.0  # seconds: generous upper bound for any single wait
MAX_DELIVER = 3


@dataclass
class Harness:
    kind: str
    engine: AsyncEngine
    prefix: str  # unique first subject token for this test
    factory: Callable[..., Any]
    buses: list[Any] = field(default_factory=list)

    def bus(self, **kw: Any) -> Any:
        bus = self.factory(**kw)
        self.buses.append(bus)
        return bus

    def subject(self, rest: str) -> str:
        return f"{self.prefix}.{rest}"

    def event(self, rest: str, **data: Any) -> Envelope:
        return Envelope(
            id=new_id("evt"),
            type=self.subject(rest),
            occurred_at=datetime.now(UTC),
            data=data,
            source="test",
        )

    async def drain(self, *buses: Any) -> None:
        for bus in buses:
            await asyncio.wait_for(bus.drain(), WAIT)


class Recorder:
    """A handler that records envelopes; it can fail on purpose."""

    def __init__(self, fail: Callable[[Envelope, int], bool] | None = None) -> None:
        self.seen: list[Envelope] = []  # successful deliveries
        self.attempts: dict[str, int] = {}  # every call, by event id
        self.fail = fail

    async def __call__(self, env: Envelope) -> None:
        n = self.attempts[env.id] = self.attempts.get(env.id, 0) + 1
        if self.fail is not None and self.fail(env, n):
            raise RuntimeError(f"boom #{n} on {env.id}")
        self.seen.append(env)

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.seen]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _delete_stream(url: str, stream: str) -> None:
    import nats

    nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
    try:
        await nc.jetstream().delete_stream(stream)
    except Exception:
        pass
    finally:
        await nc.close()


@pytest.fixture(params=["embedded", pytest.param("nats", marks=pytest.mark.nats)])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    kind: str = request.param
    url = require_nats(NATS_URL) if kind == "nats" else ""
    token = secrets.token_hex(4)
    prefix = f"t{token}"
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    clock = SystemClock()
    stream = f"TEST_{token.upper()}"

    def factory(**kw: Any) -> Any:
        kw.setdefault("max_deliver", MAX_DELIVER)
        kw.setdefault("retry_delay_ms", 5)
        if kind == "embedded":
            grace = kw.pop("close_grace_seconds", None)
            bus = EmbeddedBus(engine, clock, poll_seconds=0.05, **kw)
            if grace is not None:
                bus.close_grace_seconds = grace
            return bus
        return NatsBus(
            url,
            engine,
            clock,
            stream=stream,
            subjects=[f"{prefix}.>"],
            fetch_timeout_seconds=0.5,
            **kw,
        )

    h = Harness(kind, engine, prefix, factory)
    try:
        yield h
    finally:
        for bus in h.buses:
            await bus.close()
        if kind == "nats":
            await _delete_stream(url, stream)
        await engine.dispose()


async def started(
    bus: Any, subs: list[tuple[str, list[str], Callable[[Envelope], Awaitable[None]]]]
) -> Any:
    for durable, subjects, handler in subs:
        bus.subscribe(durable, subjects, handler)
    await bus.start()
    return bus


async def test_publish_consume_delivers_each_event_once_per_durable(harness: Harness) -> None:
    h = harness
    billing, audit = Recorder(), Recorder()
    bus = await started(
        h.bus(),
        [
            ("billing", [h.subject("payments.>")], billing),
            ("audit", [h.subject("payments.>")], audit),
        ],
    )
    consumed_before = metric("pocketpay_bus_consumed_total", consumer="billing")
    events = [h.event("payments.payment.captured", n=i) for i in range(5)]
    for env in events:
        await bus.publish(env)
    await h.drain(bus)

    assert billing.ids == [e.id for e in events]  # once each, in publish order
    assert metric("pocketpay_bus_published_total", component=h.prefix) == 5
    assert metric("pocketpay_bus_consumed_total", consumer="billing") - consumed_before == 5
    assert audit.ids == [e.id for e in events]  # another durable gets its own copy
    got = billing.seen[2]
    assert (got.type, got.data, got.source) == (events[2].type, {"n": 2}, "test")
    assert got.occurred_at == events[2].occurred_at


async def test_duplicate_publish_is_delivered_once(harness: Harness) -> None:
    h = harness
    rec = Recorder()
    bus = await started(h.bus(), [("c", [h.subject("ledger.>")], rec)])
    first, second = h.event("ledger.transfer.posted"), h.event("ledger.transfer.posted")
    for env in (first, first, second, first, second):
        await bus.publish(env)
    await h.drain(bus)

    assert rec.ids == [first.id, second.id]
    assert metric("pocketpay_bus_published_total", component=h.prefix) == 2  # duplicates: not


async def test_subject_filtering(harness: Harness) -> None:
    h = harness
    payments, ledger_billing, created = Recorder(), Recorder(), Recorder()
    bus = await started(
        h.bus(),
        [
            ("payments-only", [h.subject("payments.>")], payments),
            ("ledger-and-billing", [h.subject("ledger.>"), h.subject("billing.>")], ledger_billing),
            ("created-anywhere", [h.subject("*.*.created")], created),
        ],
    )
    evs = {
        name: h.event(name)
        for name in (
            "payments.payment.created",
            "ledger.account.created",
            "notifications.email.sent",
            "billing.invoice.paid",
            "payments.refund.succeeded",
        )
    }
    for env in evs.values():
        await bus.publish(env)
    await h.drain(bus)

    def types(rec: Recorder) -> list[str]:
        return [e.type.removeprefix(f"{h.prefix}.") for e in rec.seen]

    assert types(payments) == ["payments.payment.created", "payments.refund.succeeded"]
    assert types(ledger_billing) == ["ledger.account.created", "billing.invoice.paid"]
    assert types(created) == ["payments.payment.created", "ledger.account.created"]


async def test_failing_handler_is_redelivered_then_succeeds(harness: Harness) -> None:
    h = harness
    rec = Recorder(fail=lambda env, n: n <= 2)  # fails twice, succeeds on the third delivery
    bus = await started(h.bus(), [("c", [h.subject("payments.>")], rec)])
    env = h.event("payments.payment.captured")
    await bus.publish(env)
    await h.drain(bus)

    assert rec.attempts == {env.id: 3}
    assert rec.ids == [env.id]
    assert await list_dead_letters(h.engine) == []


async def test_always_failing_event_is_dead_lettered_and_replayable(harness: Harness) -> None:
    h = harness
    poisoned = True
    rec = Recorder(fail=lambda env, n: poisoned and env.data.get("poison", False))
    bus = await started(h.bus(), [("ledger-consumer", [h.subject("payments.>")], rec)])
    poison = h.event("payments.payment.captured", poison=True)
    after = h.event("payments.payment.captured", poison=False)
    await bus.publish(poison)
    await bus.publish(after)
    await h.drain(bus)

    assert rec.attempts[poison.id] == MAX_DELIVER
    assert rec.ids == [after.id]  # the bad one did not block the rest
    rows = await list_dead_letters(h.engine)
    assert len(rows) == 1
    row = rows[0]
    assert (row.durable, row.event_id, row.subject) == ("ledger-consumer", poison.id, poison.type)
    assert row.deliveries == MAX_DELIVER
    assert "boom" in row.error and row.replayed_at is None
    assert Envelope.from_json(row.payload).data == {"poison": True}

    later = h.event("payments.payment.refunded")
    await bus.publish(later)
    await h.drain(bus)
    assert rec.ids == [after.id, later.id]  # events still flow after a dead letter

    # Fixed: replay delivers the same event (same id) again, once.
    poisoned = False
    assert await replay_dead_letter(h.engine, bus, row.id, datetime.now(UTC)) is True
    await h.drain(bus)
    assert rec.ids == [after.id, later.id, poison.id]
    assert rec.seen[-1].trace.get("replay_of") == row.id
    assert await list_dead_letters(h.engine) == []
    replayed = await list_dead_letters(h.engine, include_replayed=True)
    assert [r.id for r in replayed] == [row.id] and replayed[0].replayed_at is not None
    assert await replay_dead_letter(h.engine, bus, row.id, datetime.now(UTC)) is False


async def test_durable_state_survives_close_and_start(harness: Harness) -> None:
    h = harness
    rec = Recorder()
    bus = await started(h.bus(), [("payments-ledger", [h.subject("ledger.>")], rec)])
    e1 = h.event("ledger.transfer.posted", n=1)
    await bus.publish(e1)
    await h.drain(bus)
    await bus.close()

    # Published while the consumer is down, by another bus instance (another process).
    publisher = h.bus()
    await publisher.start()
    e2, e3 = h.event("ledger.transfer.posted", n=2), h.event("ledger.transfer.posted", n=3)
    await publisher.publish(e2)
    await publisher.publish(e3)
    await publisher.close()

    await bus.start()
    await h.drain(bus)
    assert rec.ids == [e1.id, e2.id, e3.id]
    await bus.close()

    # A fresh instance with the same durable name carries on where the old one stopped.
    rec2 = Recorder()
    bus2 = await started(h.bus(), [("payments-ledger", [h.subject("ledger.>")], rec2)])
    e4 = h.event("ledger.transfer.posted", n=4)
    await bus2.publish(e4)
    await h.drain(bus2)
    assert rec2.ids == [e4.id]
    assert rec.ids == [e1.id, e2.id, e3.id]


async def test_close_lets_a_running_handler_finish(harness: Harness) -> None:
    h = harness
    gate, entered = asyncio.Event(), asyncio.Event()
    calls: list[str] = []

    async def handler(env: Envelope) -> None:
        calls.append(env.id)
        entered.set()
        await gate.wait()

    bus = await started(h.bus(), [("c", [h.subject("payments.>")], handler)])
    env = h.event("payments.payment.created")
    await bus.publish(env)
    await asyncio.wait_for(entered.wait(), WAIT)
    closing = asyncio.create_task(bus.close())
    for _ in range(5):
        await asyncio.sleep(0)  # let close() start waiting (scheduling only, no timing)
    assert not closing.done()
    gate.set()
    await asyncio.wait_for(closing, WAIT)

    await bus.start()  # the event was settled before close() returned: not delivered again
    await h.drain(bus)
    assert calls == [env.id]


async def test_event_interrupted_by_close_is_delivered_after_restart(harness: Harness) -> None:
    h = harness
    gate = asyncio.Event()
    block = True
    calls: list[str] = []
    entered = asyncio.Event()
    done: list[str] = []

    async def handler(env: Envelope) -> None:
        calls.append(env.id)
        entered.set()
        if block:
            await gate.wait()  # never set: close() interrupts it after its grace period
        done.append(env.id)

    bus = await started(h.bus(close_grace_seconds=0.2), [("c", [h.subject("payments.>")], handler)])
    env = h.event("payments.payment.created")
    await bus.publish(env)
    await asyncio.wait_for(entered.wait(), WAIT)
    await bus.close()
    assert done == []

    block = False
    await bus.start()
    await h.drain(bus)  # well under ack_wait: an interrupted message is handed back at close
    assert done == [env.id]
    assert calls == [env.id, env.id]


async def test_lag_counts_unconsumed_events(harness: Harness) -> None:
    h = harness
    gate, entered = asyncio.Event(), asyncio.Event()

    async def slow(env: Envelope) -> None:
        entered.set()
        await gate.wait()

    bus = await started(h.bus(), [("slow", [h.subject("payments.>")], slow)])
    assert await bus.lag("slow") == (0, 0.0)
    for i in range(3):
        await bus.publish(h.event("payments.payment.created", n=i))
    await asyncio.wait_for(entered.wait(), WAIT)

    pending, age = await bus.lag("slow")
    assert pending == 3  # the one being handled counts until it is done
    assert 0.0 <= age < WAIT

    gate.set()
    await h.drain(bus)
    assert await bus.lag("slow") == (0, 0.0)


async def test_ping(harness: Harness) -> None:
    bus = harness.bus()
    await bus.start()
    ms = await bus.ping()
    assert isinstance(ms, float) and ms >= 0.0


# -- NatsBus only -------------------------------------------------------------------------


@pytest.fixture
async def nats_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    url = require_nats(NATS_URL)
    token = secrets.token_hex(4)
    prefix, stream = f"t{token}", f"TEST_{token.upper()}"
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)

    def factory(**kw: Any) -> NatsBus:
        kw.setdefault("max_deliver", MAX_DELIVER)
        kw.setdefault("retry_delay_ms", 5)
        kw.setdefault("fetch_timeout_seconds", 0.5)
        return NatsBus(url, engine, SystemClock(), stream=stream, subjects=[f"{prefix}.>"], **kw)

    h = Harness("nats", engine, prefix, factory)
    try:
        yield h
    finally:
        for bus in h.buses:
            await bus.close()
        await _delete_stream(url, stream)
        await engine.dispose()


@pytest.mark.nats
async def test_nats_processes_sharing_a_durable_share_the_work(nats_harness: Harness) -> None:
    h = nats_harness
    a, b = Recorder(), Recorder()
    bus_a = await started(h.bus(batch=1), [("ledger", [h.subject("payments.>")], a)])
    bus_b = await started(h.bus(batch=1), [("ledger", [h.subject("payments.>")], b)])
    events = [h.event("payments.payment.captured", n=i) for i in range(40)]
    for i, env in enumerate(events):
        await (bus_a if i % 2 else bus_b).publish(env)
    await h.drain(bus_a, bus_b)

    both = a.ids + b.ids
    assert sorted(both) == sorted(e.id for e in events)  # each exactly once across the two
    assert a.attempts.keys().isdisjoint(b.attempts.keys())


@pytest.mark.nats
async def test_nats_stream_and_consumer_config(nats_harness: Harness) -> None:
    h = nats_harness
    bus = await started(h.bus(ack_wait_seconds=7.0), [("c", [h.subject("ledger.>")], Recorder())])
    js = bus._jetstream()
    stream = (await js.stream_info(bus._stream)).config
    assert stream.subjects == [f"{h.prefix}.>"]
    assert stream.duplicate_window == 120.0
    assert stream.storage == "file"
    consumer = (await js.consumer_info(bus._stream, "c")).config
    assert consumer.durable_name == "c"
    assert consumer.ack_policy == "explicit"
    assert consumer.ack_wait == 7.0
    assert consumer.filter_subject == h.subject("ledger.>")
    assert consumer.max_deliver == -1  # unlimited: the bus, not the server, gives up

    # Another process that brings a new subject prefix widens the stream, never narrows it.
    wider = NatsBus(
        NATS_URL,
        h.engine,
        SystemClock(),
        stream=bus._stream,
        subjects=[f"{h.prefix}.>", f"x{h.prefix}.>"],
    )
    h.buses.append(wider)
    await wider.start()
    assert sorted((await js.stream_info(bus._stream)).config.subjects or []) == sorted(
        [f"{h.prefix}.>", f"x{h.prefix}.>"]
    )


@pytest.mark.nats
async def test_nats_ping_raises_when_not_connected(nats_harness: Harness) -> None:
    bus = nats_harness.bus()
    with pytest.raises(ConnectionError):
        await bus.ping()
    await bus.start()
    assert await bus.ping() >= 0.0
    await bus.close()
    with pytest.raises(ConnectionError):
        await bus.ping()


async def test_nats_start_fails_fast_when_unreachable(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}")
    bus = NatsBus("nats://127.0.0.1:1", engine, SystemClock(), connect_timeout_seconds=1.0)
    with pytest.raises(ConnectionError, match="NATS not reachable"):
        await asyncio.wait_for(bus.start(), WAIT)
    await bus.close()
    await engine.dispose()


def test_nats_subscribe_rejects_subjects_outside_the_stream(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}")

    async def handler(env: Envelope) -> None:
        return None

    bus = NatsBus(NATS_URL, engine, SystemClock())  # default subjects: component prefixes
    bus.subscribe("ok", ["payments.>", "ledger.transfer.*"], handler)
    with pytest.raises(ValueError, match="not in stream"):
        bus.subscribe("bad", ["monitor.>"], handler)
    with pytest.raises(ValueError, match="already subscribed"):
        bus.subscribe("ok", ["payments.>"], handler)


@pytest.mark.parametrize(
    ("pattern", "stream_subject", "inside"),
    [
        ("payments.>", "payments.>", True),
        ("payments.payment.*", "payments.>", True),
        ("payments.payment.created", "payments.*.created", True),
        ("payments.*.created", "payments.payment.created", False),
        ("payments.>", "payments.*", False),
        ("payments", "payments.>", False),
        (">", "payments.>", False),
        ("ledger.>", "payments.>", False),
    ],
)
def test_subject_within(pattern: str, stream_subject: str, inside: bool) -> None:
    from pocketpay.kit.bus_nats import subject_within

    assert subject_within(pattern, stream_subject) is inside


@pytest.mark.nats
async def test_nats_idle_consumer_gets_a_new_event_long_before_the_fetch_timeout(
    nats_harness: Harness,
) -> None:
    h = nats_harness
    got = asyncio.Event()

    async def handler(env: Envelope) -> None:
        got.set()

    bus = await started(
        h.bus(fetch_timeout_seconds=60.0), [("c", [h.subject("ledger.>")], handler)]
    )
    await bus.ping()  # the consumer is now (very likely) parked in a lingering pull request
    await bus.publish(h.event("ledger.transfer.posted"))
    await asyncio.wait_for(got.wait(), 10.0)  # not after the 60 s the pull request may last


@pytest.mark.nats
async def test_nats_close_returns_even_if_a_handler_swallows_the_cancellation(
    nats_harness: Harness,
) -> None:
    h = nats_harness
    entered, swallowed = asyncio.Event(), asyncio.Event()

    async def stubborn(env: Envelope) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()  # and carries on as if nothing happened

    bus = await started(h.bus(close_grace_seconds=0.1), [("c", [h.subject("ledger.>")], stubborn)])
    await bus.publish(h.event("ledger.transfer.posted"))
    await asyncio.wait_for(entered.wait(), WAIT)
    await asyncio.wait_for(bus.close(), WAIT)
    assert swallowed.is_set()
