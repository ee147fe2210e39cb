"""Transactional outbox and inbox.

A component writes its events into its own ``<component>_outbox`` table in the same transaction
as the state change; the relay publishes unpublished rows to the bus and marks them. A crash
between commit and publish leaves the row unpublished, so it goes out after restart; the bus
dedupes on the event id and every consumer dedupes again through its ``<component>_inbox``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
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
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pocketpay.kit.bus import Bus, Envelope
from pocketpay.kit.clock import Clock
from pocketpay.kit.db import seq_column
from pocketpay.kit.ids import new_id
from pocketpay.kit.metrics import OUTBOX_BACKLOG, OUTBOX_PUBLISHED, RELAY_LATENCY
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
) -> str:
    """Write one event into the outbox inside the caller's transaction; returns its id."""
    event_id = new_id("evt")
    await conn.execute(
        insert(outbox).values(
            event_id=event_id,
            type=event_type,
            occurred_at=occurred_at,
            data=data,
            trace=_trace_with_request_id(),
        )
    )
    return event_id


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
    """Record ``event_id`` in the inbox; False if it was processed before (skip the effect)."""
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(inbox).values(event_id=event_id, type=event_type, processed_at=now)
            )
    except IntegrityError:
        return False
    return True


class OutboxRelay:
    """Publishes a component's outbox to the bus, in order, and marks rows as published."""

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
    ) -> None:
        self._engine = engine
        self._outbox = outbox
        self._bus = bus
        self._clock = clock
        self._source = source
        self._poll = poll_seconds
        self._batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """Called after a commit that wrote events, so they go out without waiting a poll."""
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"relay-{self._source}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                sent = await self.publish_pending()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # bus or database down: keep the rows, try again
                log.warning("outbox.relay_failed", source=self._source, error=str(exc))
                sent = 0
            if sent >= self._batch:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll)

    async def publish_pending(self) -> int:
        """One relay pass: publish up to ``batch`` unpublished events. Returns how many.

        On PostgreSQL the rows are claimed with ``FOR UPDATE SKIP LOCKED``, so several
        processes of one component relay disjoint batches instead of publishing the same rows
        (the bus and the inboxes would drop the copies, but the work would be done twice).
        SQLite has one writer in one process: the clause is left out there."""
        t = self._outbox
        query = select(t).where(t.c.published_at.is_(None)).order_by(t.c.seq).limit(self._batch)
        if self._engine.dialect.name == "postgresql":
            async with self._engine.begin() as conn:
                rows = (await conn.execute(query.with_for_update(skip_locked=True))).all()
                done = await self._publish(rows)
                await self._mark(conn, done)
        else:
            # SQLite: one connection per process, which the embedded bus needs to publish,
            # so it is not held across the publish; there is no second relay to race with.
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            done = await self._publish(rows)
            async with self._engine.begin() as conn:
                await self._mark(conn, done)
        if not rows:
            OUTBOX_BACKLOG.labels(self._source).set(0)
        OUTBOX_PUBLISHED.labels(self._source).inc(len(done))
        if len(done) < len(rows):
            raise RuntimeError(f"published {len(done)} of {len(rows)} events; retrying the rest")
        return len(done)

    async def _mark(self, conn: AsyncConnection, done: list[int]) -> None:
        if done:
            t = self._outbox
            await conn.execute(
                update(t).where(t.c.seq.in_(done)).values(published_at=self._clock.now())
            )

    async def _publish(self, rows: Sequence[Any]) -> list[int]:
        """Publish in order; stop at the first failure and report what went out."""
        done: list[int] = []
        started = time.perf_counter()
        for row in rows:
            env = Envelope(
                id=row.event_id,
                type=row.type,
                occurred_at=row.occurred_at,
                data=row.data,
                trace=row.trace or {},
                source=self._source,
            )
            try:
                await self._bus.publish(env)
            except Exception as exc:
                log.warning("outbox.publish_failed", source=self._source, error=str(exc))
                break
            done.append(row.seq)
        RELAY_LATENCY.labels(self._source).observe(time.perf_counter() - started)
        return done

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
