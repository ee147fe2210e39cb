"""Transactional outbox and inbox.

A component writes its events into its own ``<component>_outbox`` table in the same transaction
as the state change; the relay publishes unpublished rows to the bus and marks them. A crash
between commit and publish leaves the row unpublished, so it goes out after restart; the bus
dedupes on the event id and every consumer dedupes again through its ``<component>_inbox``.

The relay publishes in order and stops a pass at the first failed publish. A *poison* row (its
publish fails ``publish_max_failures`` passes in a row while the bus is otherwise healthy:
``bus.ping()`` answers and the error is not a ``ConnectionError``/``TimeoutError``/``OSError``)
is written to ``bus_dead_letters`` (durable ``relay:<source>``) and marked published in one
transaction, so the rows behind it go out; ``pocketpay dlq replay`` publishes it again. A bus
that is down never causes a dead letter: the rows wait. Every pass sets the
``pocketpay_outbox_backlog`` gauge (a count query at most every ``backlog_count_seconds``
while the relay is behind; otherwise what the pass itself saw).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pocketpay.kit.bus import Bus, Envelope, bus_dead_letters, dead_letter_values
from pocketpay.kit.clock import Clock
from pocketpay.kit.db import insert_ignore, seq_column
from pocketpay.kit.ids import new_id
from pocketpay.kit.jobs import PeriodicJob
from pocketpay.kit.metrics import (
    BUS_DEAD_LETTERED,
    OUTBOX_BACKLOG,
    OUTBOX_PUBLISHED,
    RELAY_LATENCY,
)
from pocketpay.kit.tracing import current_trace_context

log = structlog.get_logger(__name__)


def outbox_table(metadata: MetaData, component: str) -> Table:
    return Table(
        f"{component}_outbox",
        metadata,
        seq_column(),
        Column("event_id", String(40), nullable=False, unique=True),
        Column("type", String(100), nullable=False),
        Column("occurred_at", DateTime(timezone=True), nullable=False),
        Column("data", JSON, nullable=False),
        Column("trace", JSON, nullable=False),
        Column("published_at", DateTime(timezone=True), nullable=True, index=True),
    )


def inbox_table(metadata: MetaData, component: str) -> Table:
    return Table(
        f"{component}_inbox",
        metadata,
        Column("event_id", String(80), primary_key=True),
        Column("type", String(100), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False),
    )


async def add_event(
    conn: AsyncConnection,
    outbox: Table,
    event_type: str,
    data: dict[str, Any],
    occurred_at: datetime,
    *,
    event_id: str | None = None,
) -> str:
    """Write one event into the outbox inside the caller's transaction; returns its id.

    With ``event_id`` (derived from the effect's own id) a second write of the same event is
    ignored, so two racing re-runs of one idempotent operation publish it once."""
    stmt = _insert(outbox) if event_id is None else insert_ignore(conn, outbox)
    event_id = event_id or new_id("evt")
    await conn.execute(
        stmt,
        {
            "event_id": event_id,
            "type": event_type,
            "occurred_at": occurred_at,
            "data": data,
            "trace": _trace_with_request_id(),
        },
    )
    return event_id


@functools.cache
def _insert(table: Table) -> Any:
    return insert(table)


def _trace_with_request_id() -> dict[str, str]:
    """Trace context plus the request id, so a consumer's logs name the request that caused it."""
    carrier = current_trace_context()
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id:
        carrier["request_id"] = str(request_id)
    return carrier


async def claim_inbox(
    conn: AsyncConnection, inbox: Table, event_id: str, event_type: str, now: datetime
) -> bool:
    """Record ``event_id`` in the inbox; False if it was processed before (skip the effect).

    An insert-if-absent: a concurrent claim of the same id waits for the first one's
    transaction and then finds the row (no savepoint, no IntegrityError round trips)."""
    res = await conn.execute(
        insert_ignore(conn, inbox),
        {"event_id": event_id, "type": event_type, "processed_at": now},
    )
    return bool(res.rowcount == 1)


# Publish errors that say "the bus cannot be reached", never "this row is bad".
_OUTAGE_ERRORS = (ConnectionError, TimeoutError, OSError)


@dataclass
class _PassResult:
    done: list[int] = field(default_factory=list)  # seqs published
    failed: Any = None  # the row whose publish failed (the pass stopped there)
    error: BaseException | None = None


class OutboxRelay:
    """Publishes a component's outbox to the bus, in order, and marks rows as published."""

    backlog_count_seconds = 5.0  # at most one COUNT query per this while the relay is behind
    ping_timeout_seconds = 2.0

    def __init__(
        self,
        engine: AsyncEngine,
        outbox: Table,
        bus: Bus,
        clock: Clock,
        *,
        source: str,
        poll_seconds: float = 0.5,
        batch: int = 200,
        publish_max_failures: int = 10,
    ) -> None:
        assert publish_max_failures >= 1
        self._engine = engine
        self._outbox = outbox
        self._bus = bus
        self._clock = clock
        self._source = source
        self._batch = batch
        self._max_failures = publish_max_failures
        # Woken by notify() after a commit; otherwise a pass every poll_seconds.
        self._job = PeriodicJob(f"relay-{source}", self._pass, poll_seconds, max_back_to_back=100)
        # The head row that keeps failing, and how many passes in a row it failed.
        self._failing_seq: int | None = None
        self._failures = 0
        self._last_error = ""
        self._backlog = 0
        self._counted_at: float | None = None

    def notify(self) -> None:
        """Called after a commit that wrote events, so they go out without waiting a poll."""
        self._job.wake()

    async def start(self) -> None:
        await self._job.start()

    async def stop(self) -> None:
        await self._job.stop()

    async def _pass(self) -> bool:
        """One pass; True when a full batch went out (there may be more)."""
        try:
            return await self.publish_pending() >= self._batch
        except Exception as exc:  # bus or database down: keep the rows, try again
            log.warning("outbox.relay_failed", source=self._source, error=str(exc))
            return False

    async def publish_pending(self) -> int:
        """One relay pass: publish up to ``batch`` unpublished events. Returns how many.

        On PostgreSQL the rows are claimed with ``FOR UPDATE SKIP LOCKED``, so several
        processes of one component relay disjoint batches instead of publishing the same rows
        (the bus and the inboxes would drop the copies, but the work would be done twice).
        SQLite has one writer in one process: the clause is left out there. A failed publish
        ends the pass (raising, after the rows before it are marked), unless the row is
        dead-lettered as poison: then the pass goes on with the next row."""
        t = self._outbox
        query = select(t).where(t.c.published_at.is_(None)).order_by(t.c.seq).limit(self._batch)
        if self._engine.dialect.name == "postgresql":
            async with self._engine.begin() as conn:
                rows = (await conn.execute(query.with_for_update(skip_locked=True))).all()
                result = await self._publish(rows)
                await self._mark(conn, result)
        else:
            # SQLite: one connection per process, which the embedded bus needs to publish,
            # so it is not held across the publish; there is no second relay to race with.
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            result = await self._publish(rows)
            async with self._engine.begin() as conn:
                await self._mark(conn, result)
        handled = len(result.done) + (
            1 if result.failed is not None and result.error is None else 0
        )
        await self._set_backlog(len(rows), handled)
        OUTBOX_PUBLISHED.labels(self._source).inc(len(result.done))
        if result.error is not None:
            raise RuntimeError(
                f"published {len(result.done)} of {len(rows)} events; retrying the rest "
                f"({type(result.error).__name__}: {result.error})"
            )
        return len(result.done)

    async def _mark(self, conn: AsyncConnection, result: _PassResult) -> None:
        """Mark what went out; a poison row is dead-lettered and marked in this transaction."""
        t = self._outbox
        now = self._clock.now()
        if result.done:
            await conn.execute(update(t).where(t.c.seq.in_(result.done)).values(published_at=now))
        if result.failed is not None and result.error is None:
            row = result.failed
            await conn.execute(
                insert(bus_dead_letters).values(
                    **dead_letter_values(
                        f"relay:{self._source}",
                        self._envelope(row),
                        f"publish failed {self._failures} times: {self._last_error}",
                        self._failures,
                        now,
                    )
                )
            )
            await conn.execute(update(t).where(t.c.seq == row.seq).values(published_at=now))

    def _envelope(self, row: Any) -> Envelope:
        return Envelope(
            id=row.event_id,
            type=row.type,
            occurred_at=row.occurred_at,
            data=row.data,
            trace=row.trace or {},
            source=self._source,
        )

    async def _publish(self, rows: Sequence[Any]) -> _PassResult:
        """Publish in order; stop at the first failure, unless that row is poison (then it is
        reported with ``error`` None, to be dead-lettered, and the rest are published)."""
        result = _PassResult()
        started = time.perf_counter()
        for row in rows:
            try:
                await self._bus.publish(self._envelope(row))
            except Exception as exc:
                log.warning(
                    "outbox.publish_failed",
                    source=self._source,
                    event_id=row.event_id,
                    error=f"{type(exc).__name__}: {exc}",
                )
                if result.failed is None and await self._is_poison(row.seq, exc):
                    result.failed = row
                    continue
                result.error = exc
                break
            result.done.append(row.seq)
            if row.seq == self._failing_seq:
                self._failing_seq, self._failures = None, 0
        RELAY_LATENCY.labels(self._source).observe(time.perf_counter() - started)
        if result.failed is not None and result.error is None:
            BUS_DEAD_LETTERED.labels(f"relay:{self._source}").inc()
            log.error(
                "outbox.dead_lettered",
                source=self._source,
                event_id=result.failed.event_id,
                type=result.failed.type,
                failures=self._failures,
                error=self._last_error,
            )
        return result

    async def _is_poison(self, seq: int, exc: Exception) -> bool:
        """Count the failure; True once this row failed ``publish_max_failures`` times in a
        row while the bus itself is healthy (an outage never makes a row poison)."""
        if seq != self._failing_seq or isinstance(exc, _OUTAGE_ERRORS):
            self._failing_seq, self._failures = seq, 0
        if isinstance(exc, _OUTAGE_ERRORS):
            return False  # the bus is unreachable: says nothing about the row
        self._failures += 1
        self._last_error = f"{type(exc).__name__}: {exc}"[:1000]
        if self._failures < self._max_failures:
            return False
        try:
            async with asyncio.timeout(self.ping_timeout_seconds):
                await self._bus.ping()
        except asyncio.CancelledError:
            raise
        except Exception:
            return False  # the bus is not answering: an outage, not a bad row
        return True

    async def _set_backlog(self, fetched: int, handled: int) -> None:
        """What is still unpublished: exact when the pass saw every pending row (a batch that
        was not full), else a COUNT at most every ``backlog_count_seconds``."""
        now = self._clock.monotonic()
        if fetched < self._batch:
            self._backlog = fetched - handled
        elif self._counted_at is None or now - self._counted_at >= self.backlog_count_seconds:
            self._counted_at = now
            self._backlog = (await outbox_backlog(self._engine, self._outbox, self._clock.now))[0]
        else:
            self._backlog = max(self._backlog - handled, fetched - handled)
        OUTBOX_BACKLOG.labels(self._source).set(self._backlog)

    async def backlog(self) -> tuple[int, float]:
        """(unpublished count, age in seconds of the oldest unpublished event)."""
        return await outbox_backlog(self._engine, self._outbox, self._clock.now)


async def outbox_backlog(
    engine: AsyncEngine, outbox: Table, now: Callable[[], datetime]
) -> tuple[int, float]:
    from sqlalchemy import func

    t = outbox
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(func.count(), func.min(t.c.occurred_at)).where(t.c.published_at.is_(None))
            )
        ).one()
    count, oldest = int(row[0]), row[1]
    age = 0.0
    if oldest is not None:
        if oldest.tzinfo is None:
            from datetime import UTC

            oldest = oldest.replace(tzinfo=UTC)
        age = max(0.0, (now() - oldest).total_seconds())
    return count, age


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), default=str)
