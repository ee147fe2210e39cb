"""Billing time: the wall clock plus the test clock's offset.

Stripe's test clocks move time for billing objects only; here an admin moves all of billing
(``POST /api/v1/admin/test-clock/advance``) when the PSP is the sandbox and the setting
allows it. The offset lives in the database (``billing_clock``), so every process agrees;
each scheduler pass and request reads it again."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.billing.errors import TestClockBackwards
from pocketpay.billing.models import clock as clock_table
from pocketpay.kit.clock import Clock
from pocketpay.kit.db import insert_ignore, single_statements


class BillingClock:
    def __init__(self, engine: AsyncEngine, wall: Clock) -> None:
        self._engine = engine
        self._reads = single_statements(engine)
        self.wall = wall
        self.offset_seconds = 0.0

    def now(self) -> datetime:
        """Billing time as of the last ``refresh``."""
        return self.wall.now() + timedelta(seconds=self.offset_seconds)

    async def refresh(self) -> datetime:
        async with self._reads.connect() as conn:
            found = await conn.scalar(
                select(clock_table.c.offset_seconds).where(clock_table.c.id == 1)
            )
        self.offset_seconds = float(found or 0.0)
        return self.now()

    async def advance(self, seconds: float) -> datetime:
        if seconds <= 0:
            raise TestClockBackwards("Advance the test clock by a positive number of seconds.")
        async with self._engine.begin() as conn:
            await conn.execute(insert_ignore(conn, clock_table), {"id": 1, "offset_seconds": 0.0})
            await conn.execute(
                update(clock_table)
                .where(clock_table.c.id == 1)
                .values(offset_seconds=clock_table.c.offset_seconds + seconds)
            )
        return await self.refresh()
