"""The bounds of a stream on the real embedded stack: a consumer that does not read is cut off
with its resume cursor instead of buffering without limit; a stopping hub ends every stream
with a retry hint (SSE ``retry:``)."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.exc import OperationalError

from pocketpay.gateway.stream_hub import StreamHub
from pocketpay.gateway.stream_log import StreamLog
from pocketpay.kit.bus import Envelope
from pocketpay.kit.clock import SystemClock
from tests.stream.sse import sse
from tests.support import Stack, eventually


def parts(stack: Stack) -> tuple[StreamHub, StreamLog]:
    state = stack.runtime.components["gateway"].state
    return state["stream_hub"], state["stream_log"]


def envelope(user_id: str, n: int) -> Envelope:
    return Envelope(
        id=f"evt_bound_{n}_{user_id[-8:]}",
        type="payments.payment.created",
        occurred_at=SystemClock().now(),
        data={"id": f"pay_{n}", "owner_id": user_id},
    )


async def test_a_consumer_that_does_not_read_is_cut_off_with_its_cursor(
    sqlite_stack: Stack,
) -> None:
    hub, log = parts(sqlite_stack)
    alice = await sqlite_stack.user()
    uid = alice["user"]["id"]
    hub.queue_max = 3
    try:
        conn = await hub.open(uid, None, None)
    finally:
        hub.queue_max = sqlite_stack.runtime.settings.stream.queue_max
    start = conn.cursor
    for n in range(10):
        await log.append(envelope(uid, n))
    conn.wake()

    async def cut_off() -> bool:
        return conn.queue.qsize() == 1 and conn.queue._queue[0].final  # type: ignore[attr-defined]

    await eventually(cut_off)
    frame = await conn.next()
    assert frame.type == "stream.slow_consumer"
    assert frame.data == {"cursor": str(start)}  # nothing was sent: resume from the start
    await hub.release(conn)
    assert hub.count(uid) == 0
    # Resuming from that cursor gets every event, in order.
    rows = await log.after(uid, start, 100)
    assert [r.data["id"] for r in rows] == [f"pay_{n}" for n in range(10)]


async def test_stopping_the_hub_ends_streams_with_a_retry_hint(sqlite_stack: Stack) -> None:
    hub, log = parts(sqlite_stack)
    alice = await sqlite_stack.user()
    async with sse(sqlite_stack.http, alice["headers"]) as s:
        await log.append(envelope(alice["user"]["id"], 1))
        await hub.wake_users([alice["user"]["id"]])
        got = await s.event()
        assert got is not None and got.event == "payments.payment.created"
        await hub.stop()
        end = await s.event()
        assert end is not None and end.event == "stream.shutdown"
        assert end.retry is not None and end.retry > 0
        assert end.body["data"] == {"cursor": got.id}
        assert await asyncio.wait_for(s.event(), 10) is None


class _FailingOnce:
    """The real log, whose next read fails as a database that refuses connections does."""

    def __init__(self, log: StreamLog) -> None:
        self._log = log
        self.failures = 1

    async def after(self, user_id: str, cursor: int, limit: int) -> list[Any]:
        if self.failures:
            self.failures -= 1
            raise OperationalError("SELECT", {}, Exception("too many clients already"))
        return await self._log.after(user_id, cursor, limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)


async def test_a_failed_read_does_not_end_the_stream(sqlite_stack: Stack) -> None:
    hub, log = parts(sqlite_stack)
    alice = await sqlite_stack.user()
    uid = alice["user"]["id"]
    async with sse(sqlite_stack.http, alice["headers"]) as s:
        failing = _FailingOnce(log)
        hub.log = failing  # type: ignore[assignment]
        try:
            await log.append(envelope(uid, 1))
            await hub.wake_users([uid])
            got = await s.event()  # read again at the next wake (the poll's at the latest)
        finally:
            hub.log = log
    assert failing.failures == 0
    assert got is not None and got.body["data"]["id"] == "pay_1"
