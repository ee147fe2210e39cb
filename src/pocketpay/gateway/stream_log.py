"""The per-user event log behind live updates (``gateway_stream_events``).

A gateway bus consumer (durable ``gateway-stream``) writes one row per (user, domain event)
for the users an event concerns, in one transaction; the unique (user_id, event_id) makes a
redelivered event insert nothing (the inbox). ``seq`` is the resume cursor every stream reads
after. Rows older than ``stream.retention_hours`` are purged; a cursor older than a user's
oldest kept row (or than the purge horizon) can no longer resume without a gap.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.gateway.models import stream_events, users
from pocketpay.kit.bus import Envelope
from pocketpay.kit.clock import Clock, aware
from pocketpay.kit.db import insert_ignore, single_statements

DURABLE = "gateway-stream"
SUBJECTS = ["payments.>", "ledger.>", "billing.>"]
PURGE_BATCH = 5000


def users_of(env: Envelope) -> list[str]:
    """The users an event concerns: its owner, or both sides of a transfer. Events naming
    nobody (system events, and the ledger's collections carry the owner too) concern no one."""
    d = env.data
    found = [d.get("owner_id"), d.get("sender_id"), d.get("recipient_id")]
    return sorted({u for u in found if isinstance(u, str) and u})


@dataclass(frozen=True)
class StreamEvent:
    seq: int
    event_id: str
    type: str
    occurred_at: datetime
    data: dict[str, Any]

    def body(self) -> dict[str, Any]:
        """What a client receives (SSE data; the WebSocket adds ``cursor``)."""
        return {
            "id": self.event_id,
            "type": self.type,
            "occurred_at": self.occurred_at.isoformat(),
            "data": self.data,
        }


_t = stream_events.c
_AFTER = (
    select(_t.seq, _t.event_id, _t.type, _t.occurred_at, _t.data)
    .where(_t.user_id == bindparam("w_user"), _t.seq > bindparam("w_after"))
    .order_by(_t.seq)
    .limit(bindparam("w_limit"))
)
_OWN = select(_t.seq).where(_t.user_id == bindparam("w_user"), _t.seq == bindparam("w_seq"))
_LOCK_USERS = (
    select(users.c.id)
    .where(users.c.id.in_(bindparam("w_users", expanding=True)))
    .order_by(users.c.id)
    .with_for_update(key_share=True)
)
_NEWEST = select(func.max(_t.seq)).where(_t.user_id == bindparam("w_user"))


class StreamLog:
    def __init__(self, engine: AsyncEngine, clock: Clock, retention_hours: float) -> None:
        self._engine = engine
        self._reads = single_statements(engine)
        self._clock = clock
        self.retention = timedelta(hours=retention_hours)

    async def append(self, env: Envelope) -> list[str]:
        """Log ``env`` for every user it concerns, in one transaction; returns the users that
        got a new row (none for a redelivered event or one concerning nobody)."""
        concerned = users_of(env)
        if not concerned:
            return []
        now = self._clock.now()
        added: list[str] = []
        async with self._engine.begin() as conn:
            # Lock the users' rows first: two transactions logging events of one user then
            # commit in the order they took their seqs, so a stream that read seq n never
            # sees a smaller seq of that user commit later (it would skip it).
            await conn.execute(_LOCK_USERS, {"w_users": concerned})
            stmt = insert_ignore(conn, stream_events)
            for user in concerned:
                row = {
                    "user_id": user,
                    "event_id": env.id,
                    "type": env.type,
                    "occurred_at": env.occurred_at,
                    "created_at": now,
                    "data": env.data,
                }
                if (await conn.execute(stmt, row)).rowcount == 1:
                    added.append(user)
        return added

    async def after(self, user_id: str, cursor: int, limit: int) -> list[StreamEvent]:
        params = {"w_user": user_id, "w_after": cursor, "w_limit": limit}
        async with self._reads.connect() as conn:
            rows = (await conn.execute(_AFTER, params)).all()
        return [StreamEvent(r.seq, r.event_id, r.type, aware(r.occurred_at), r.data) for r in rows]

    async def newest(self, user_id: str) -> int:
        """The user's last seq (0 if none): where a fresh stream starts."""
        async with self._reads.connect() as conn:
            value = (await conn.execute(_NEWEST, {"w_user": user_id})).scalar()
        return int(value or 0)

    async def resumable(self, user_id: str, cursor: int) -> bool:
        """Whether a stream can resume after ``cursor`` with nothing missing. A cursor came
        from a frame, so its row existed; rows leave the log only by the purge, oldest first:
        while the cursor's own row is kept, every later row of the user is too. 0 (a client
        that has seen nothing) resumes from the oldest kept row."""
        if cursor == 0:
            return True
        async with self._reads.connect() as conn:
            row = (await conn.execute(_OWN, {"w_user": user_id, "w_seq": cursor})).first()
        return row is not None

    async def purge(self, now: datetime | None = None) -> int:
        """Delete up to ``PURGE_BATCH`` rows older than the retention at ``now`` (the clock's
        by default); returns how many (a full batch: there may be more)."""
        horizon = (now or self._clock.now()) - self.retention
        async with self._engine.begin() as conn:
            ids = select(_t.seq).where(_t.created_at < horizon).order_by(_t.seq).limit(PURGE_BATCH)
            res = await conn.execute(delete(stream_events).where(_t.seq.in_(ids.scalar_subquery())))
        return int(res.rowcount or 0)


Wake = Callable[[list[str]], Awaitable[None]]


class StreamConsumer:
    """The bus handler: log the event, then wake those users' streams (everywhere)."""

    def __init__(self, log: StreamLog, wake: Wake) -> None:
        self._log = log
        self._wake = wake

    async def __call__(self, env: Envelope) -> None:
        added = await self._log.append(env)
        if added:
            await self._wake(added)
