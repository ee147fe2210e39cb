"""The event bus: one interface, two implementations.

* ``EmbeddedBus`` keeps the stream in a SQLite database (``bus_stream``), durable consumers as
  offsets (``bus_consumers``), exactly like a JetStream stream with durable consumers, so it
  survives a restart with nothing lost. It refuses any other database: on PostgreSQL,
  concurrent publishers commit out of ``seq`` order and an offset would skip the late row.
* ``NatsBus`` (``kit/bus_nats.py``) uses NATS JetStream (scale mode, PostgreSQL).

Both dedupe publishes on the envelope id and redeliver a failing message with a capped
exponential delay (``retry_delay_ms * 2**(attempt-1)``, at most ``retry_cap_ms``). After
``max_deliver`` failed attempts the envelope is written to ``bus_dead_letters``, and only once
that write committed is the message settled (acked, offset advanced). If the write fails (the
database is down) the message stays pending and is tried again with the same backoff, for as
long as it takes: an event is handled or dead-lettered, never dropped. Handlers must be
idempotent (components use their inbox tables). Any unreplayed dead letter is an alert (the
``dead_letters`` readiness check, see ``kit.health``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import structlog
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.clock import Clock, aware
from pocketpay.kit.db import ping, seq_column
from pocketpay.kit.failpoints import failpoint
from pocketpay.kit.ids import new_id
from pocketpay.kit.metrics import BUS_CONSUMED, BUS_DEAD_LETTERED, BUS_PUBLISHED
from pocketpay.kit.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

metadata = MetaData()

bus_stream = Table(
    "bus_stream",
    metadata,
    seq_column(),
    Column("msg_id", String(80), nullable=False, unique=True),
    Column("subject", String(100), nullable=False),
    Column("payload", Text, nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=False),
)

bus_consumers = Table(
    "bus_consumers",
    metadata,
    Column("durable", String(80), primary_key=True),
    Column("last_seq", BigInteger, nullable=False, default=0),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

bus_dead_letters = Table(
    "bus_dead_letters",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("durable", String(80), nullable=False),
    Column("event_id", String(80), nullable=False),
    Column("subject", String(100), nullable=False),
    Column("payload", Text, nullable=False),
    Column("error", Text, nullable=False),
    Column("deliveries", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("replayed_at", DateTime(timezone=True), nullable=True),
)


@dataclass(frozen=True)
class Envelope:
    """A past-tense fact: ``<component>.<noun>.<verb>`` with its data and trace context."""

    id: str
    type: str
    occurred_at: datetime
    data: dict[str, Any]
    trace: dict[str, str] = field(default_factory=dict)
    source: str = ""
    version: int = 1

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "type": self.type,
                "occurred_at": self.occurred_at.isoformat(),
                "data": self.data,
                "trace": self.trace,
                "source": self.source,
                "version": self.version,
            },
            separators=(",", ":"),
            default=str,
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Envelope:
        body = json.loads(raw)
        return cls(
            id=body["id"],
            type=body["type"],
            occurred_at=aware(datetime.fromisoformat(body["occurred_at"])),
            data=body["data"],
            trace=body.get("trace") or {},
            source=body.get("source", ""),
            version=int(body.get("version", 1)),
        )


Handler = Callable[[Envelope], Awaitable[None]]


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS-style matching: ``payments.>`` matches any subject below ``payments``."""
    p_parts, s_parts = pattern.split("."), subject.split(".")
    for i, part in enumerate(p_parts):
        if part == ">":
            return len(s_parts) > i
        if i >= len(s_parts) or (part != "*" and part != s_parts[i]):
            return False
    return len(p_parts) == len(s_parts)


class Bus(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, env: Envelope) -> None: ...

    def subscribe(
        self, durable: str, subjects: list[str], handler: Handler, *, ordered: bool = False
    ) -> None: ...

    async def ping(self) -> float: ...

    async def lag(self, durable: str) -> tuple[int, float]: ...

    async def dead_letter_count(self, component: str | None = None) -> int: ...


def retry_delay_seconds(attempt: int, delay_ms: int, cap_ms: int) -> float:
    """The wait after failed attempt ``attempt`` (1-based): ``delay * 2**(attempt-1)``, capped."""
    exponent = min(max(attempt, 1) - 1, 40)  # bounded: 2**40 ms is past any sane cap
    return float(min(delay_ms * (1 << exponent), cap_ms)) / 1000


def dead_letter_values(
    durable: str, env: Envelope, error: str, deliveries: int, now: datetime
) -> dict[str, Any]:
    """A ``bus_dead_letters`` row for ``env`` (the payload is what a replay publishes)."""
    return {
        "id": new_id("dlq"),
        "durable": durable,
        "event_id": env.id,
        "subject": env.type,
        "payload": env.to_json(),
        "error": error[:2000],
        "deliveries": deliveries,
        "created_at": now,
    }


async def dead_letter(
    engine: AsyncEngine, durable: str, env: Envelope, error: str, deliveries: int, now: datetime
) -> None:
    """Write the dead letter in its own transaction; raises if it did not commit.

    Callers settle the message (ack, advance the offset) only after this returned."""
    await failpoint("bus.dead_letter.before_write")
    async with engine.begin() as conn:
        await conn.execute(
            insert(bus_dead_letters).values(
                **dead_letter_values(durable, env, error, deliveries, now)
            )
        )
    BUS_DEAD_LETTERED.labels(durable).inc()
    log.error("bus.dead_lettered", durable=durable, event_id=env.id, type=env.type, error=error)


def component_durables(component: str) -> Any:
    """The dead letters that belong to ``component``: its consumers are named ``<component>``
    or ``<component>-<role>`` (``payments-processor``), its relay ``relay:<component>``."""
    c = bus_dead_letters.c.durable
    return or_(c == component, c.like(f"{component}-%"), c == f"relay:{component}")


async def count_dead_letters(engine: AsyncEngine, component: str | None = None) -> int:
    """Dead letters not replayed yet (of ``component``'s consumers and relay, if given)."""
    q = select(func.count()).select_from(bus_dead_letters)
    q = q.where(bus_dead_letters.c.replayed_at.is_(None))
    if component is not None:
        q = q.where(component_durables(component))
    async with engine.connect() as conn:
        return int((await conn.execute(q)).scalar_one())


async def try_dead_letter(
    engine: AsyncEngine,
    durable: str,
    env: Envelope,
    error: str,
    deliveries: int,
    now: datetime,
    retry_in: float,
) -> bool:
    """Dead-letter ``env``; False (logged) if the write failed, e.g. the database is down:
    the caller must then keep the message and retry it after ``retry_in``, never drop it."""
    try:
        await dead_letter(engine, durable, env, error, deliveries, now)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error(
            "bus.dead_letter_failed",
            durable=durable,
            event_id=env.id,
            attempt=deliveries,
            retry_in=retry_in,
            error=f"{type(exc).__name__}: {exc}",
        )
        return False
    return True


async def list_dead_letters(engine: AsyncEngine, *, include_replayed: bool = False) -> list[Any]:
    q = select(bus_dead_letters).order_by(bus_dead_letters.c.created_at)
    if not include_replayed:
        q = q.where(bus_dead_letters.c.replayed_at.is_(None))
    async with engine.connect() as conn:
        return list((await conn.execute(q)).all())


async def replay_dead_letter(engine: AsyncEngine, bus: Bus, dlq_id: str, now: datetime) -> bool:
    """Publish a dead letter again (same event id, so consumers that had it skip it)."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(bus_dead_letters).where(bus_dead_letters.c.id == dlq_id))
        ).first()
    if row is None or row.replayed_at is not None:
        return False
    env = Envelope.from_json(row.payload)
    await bus.publish(_replay_copy(env, dlq_id))
    async with engine.begin() as conn:
        await conn.execute(
            update(bus_dead_letters).where(bus_dead_letters.c.id == dlq_id).values(replayed_at=now)
        )
    return True


def _replay_copy(env: Envelope, dlq_id: str) -> Envelope:
    # The bus dedupes on msg id; a replay is a new message carrying the same event id in data,
    # so the trace stays and consumers' inboxes still recognize the event.
    return Envelope(
        id=env.id,
        type=env.type,
        occurred_at=env.occurred_at,
        data=env.data,
        trace={**env.trace, "replay_of": dlq_id},
        source=env.source,
        version=env.version,
    )


def msg_id_for(env: Envelope) -> str:
    replay = env.trace.get("replay_of")
    return f"{env.id}:{replay}" if replay else env.id


@dataclass
class _Subscription:
    durable: str
    subjects: list[str]
    handler: Handler
    task: asyncio.Task[None] | None = None
    # drain() and the consume task must not deliver the same rows concurrently.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class EmbeddedBus:
    """A durable bus inside the process, stored in the SQLite database next to the outboxes.

    SQLite only: the process has one connection and serializes its transactions, so rows
    enter ``bus_stream`` in ``seq`` order and a consumer's offset never skips one. On
    PostgreSQL two publishers commit out of ``seq`` order (a consumer that already read the
    higher ``seq`` would never see the lower one): use ``NatsBus`` there.

    A subscription's messages are handled one at a time, in ``seq`` order (``NatsBus`` handles
    ``consumer_concurrency`` at once). Deliberately: every handler's database work goes through
    the one pooled SQLite connection, so consumers that only write (ledger, notifications)
    would gain nothing, and the PSP the payments consumer waits for is, in embedded mode,
    normally the sandbox running in this same event loop. Concurrency here would cost the
    in-order delivery and an offset that may only advance past a contiguous run of handled
    messages, for no measured gain.
    """

    close_grace_seconds = 5.0  # how long close() lets a running pass finish

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        *,
        max_deliver: int = 5,
        retry_delay_ms: int = 200,
        retry_cap_ms: int = 30_000,
        poll_seconds: float = 0.5,
        batch: int = 200,
    ) -> None:
        if engine.dialect.name != "sqlite":
            raise ValueError(
                f"EmbeddedBus needs a SQLite database, not {engine.dialect.name}: its offsets "
                "would skip events that commit out of order. Use NATS JetStream with "
                "PostgreSQL (bus_url = nats://..., POCKETPAY_BUS_URL)."
            )
        if max_deliver < 1:
            raise ValueError("max_deliver must be at least 1")
        self._engine = engine
        self._clock = clock
        self._max_deliver = max_deliver
        self._retry_delay_ms = retry_delay_ms
        self._retry_cap_ms = retry_cap_ms
        self._poll = poll_seconds
        self._batch = batch
        self._subs: list[_Subscription] = []
        self._wake: dict[str, asyncio.Event] = {}
        self._started = False

    async def start(self) -> None:
        for sub in self._subs:
            await self._ensure_consumer(sub.durable)
            sub.task = asyncio.create_task(self._consume(sub), name=f"bus-{sub.durable}")
        self._started = True

    async def close(self) -> None:
        deadline = asyncio.get_running_loop().time() + self.close_grace_seconds
        for sub in self._subs:
            if sub.task:
                # Cancel the consumer between passes (it holds sub.lock during one): cancelled
                # inside a database call, the SQLite connection is dropped with its write lock
                # held, and the next write waits busy_timeout, then fails. A pass (handlers)
                # still running after the grace period is cancelled anyway.
                locked = False
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        locked = await sub.lock.acquire()
                await cancel_and_wait(sub.task)
                if locked:
                    sub.lock.release()
        self._started = False

    async def publish(self, env: Envelope) -> None:
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(bus_stream).values(
                        msg_id=msg_id_for(env),
                        subject=env.type,
                        payload=env.to_json(),
                        published_at=self._clock.now(),
                    )
                )
        except IntegrityError:
            return  # duplicate publish (relay retried after a crash): already in the stream
        BUS_PUBLISHED.labels(env.type.split(".")[0]).inc()
        for ev in self._wake.values():
            ev.set()

    def subscribe(
        self, durable: str, subjects: list[str], handler: Handler, *, ordered: bool = False
    ) -> None:
        """Every subscription here is ordered (one message at a time, in ``seq`` order)."""
        del ordered
        self._subs.append(_Subscription(durable, subjects, handler))
        self._wake[durable] = asyncio.Event()

    async def ping(self) -> float:
        return await ping(self._engine)

    async def dead_letter_count(self, component: str | None = None) -> int:
        """Unreplayed dead letters (of ``component``'s consumers and relay, if given)."""
        return await count_dead_letters(self._engine, component)

    async def lag(self, durable: str) -> tuple[int, float]:
        """(messages not yet consumed by ``durable``, age in seconds of the oldest of them)."""
        sub = next((s for s in self._subs if s.durable == durable), None)
        async with self._engine.connect() as conn:
            last = (
                await conn.execute(
                    select(bus_consumers.c.last_seq).where(bus_consumers.c.durable == durable)
                )
            ).scalar()
            rows = (
                await conn.execute(
                    select(bus_stream.c.subject, bus_stream.c.published_at).where(
                        bus_stream.c.seq > (last or 0)
                    )
                )
            ).all()
        pending = [
            r
            for r in rows
            if sub is None or any(subject_matches(p, r.subject) for p in sub.subjects)
        ]
        if not pending:
            return 0, 0.0
        oldest = min(aware(r.published_at) for r in pending)
        return len(pending), max(0.0, (self._clock.now() - oldest).total_seconds())

    async def _ensure_consumer(self, durable: str) -> None:
        with contextlib.suppress(IntegrityError):
            async with self._engine.begin() as conn:
                exists = (
                    await conn.execute(
                        select(func.count()).where(bus_consumers.c.durable == durable)
                    )
                ).scalar()
                if not exists:
                    await conn.execute(
                        insert(bus_consumers).values(
                            durable=durable, last_seq=0, updated_at=self._clock.now()
                        )
                    )

    async def _consume(self, sub: _Subscription) -> None:
        wake = self._wake[sub.durable]
        while True:
            # Cleared before the pass, so a publish during the pass is not a lost wake-up.
            wake.clear()
            try:
                n = await self.drain_once(sub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("bus.consume_failed", durable=sub.durable, error=str(exc))
                n = 0
            if n >= self._batch:
                continue
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancel of
            # close() when a publish wakes us at the same moment; the loop then blocks on
            # the lock close() holds, and close() waits for it for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await wake.wait()

    async def drain(self) -> None:
        """Deliver everything pending to every subscriber (tests and shutdown use this)."""
        for _ in range(1000):
            total = 0
            for sub in self._subs:
                total += await self.drain_once(sub)
            if total == 0:
                return

    async def drain_once(self, sub: _Subscription) -> int:
        async with sub.lock:
            return await self._drain_once(sub)

    async def _drain_once(self, sub: _Subscription) -> int:
        async with self._engine.connect() as conn:
            last = (
                await conn.execute(
                    select(bus_consumers.c.last_seq).where(bus_consumers.c.durable == sub.durable)
                )
            ).scalar() or 0
            rows = (
                await conn.execute(
                    select(bus_stream)
                    .where(bus_stream.c.seq > last)
                    .order_by(bus_stream.c.seq)
                    .limit(self._batch)
                )
            ).all()
        acked = last
        for row in rows:
            if any(subject_matches(p, row.subject) for p in sub.subjects):
                await self._deliver(sub, Envelope.from_json(row.payload))
                acked = await self._ack(sub.durable, row.seq)
        if rows and acked != rows[-1].seq:
            # Messages of other subjects are skipped without an offset write each.
            await self._ack(sub.durable, rows[-1].seq)
        return len(rows)

    async def _ack(self, durable: str, seq: int) -> int:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(bus_consumers)
                .where(bus_consumers.c.durable == durable)
                .values(last_seq=seq, updated_at=self._clock.now())
            )
        return seq

    async def _deliver(self, sub: _Subscription, env: Envelope) -> None:
        """Handle ``env``; after ``max_deliver`` failures dead-letter it. Returns only once the
        envelope was handled or its dead letter committed, so the caller may advance the
        offset; until then it retries with the capped backoff (the database may be down)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                await sub.handler(env)
                BUS_CONSUMED.labels(sub.durable).inc()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            delay = retry_delay_seconds(attempt, self._retry_delay_ms, self._retry_cap_ms)
            log.warning(
                "bus.handler_failed",
                durable=sub.durable,
                event_id=env.id,
                attempt=attempt,
                error=error,
            )
            if attempt >= self._max_deliver and await try_dead_letter(
                self._engine, sub.durable, env, error, attempt, self._clock.now(), delay
            ):
                return
            await asyncio.sleep(delay)
