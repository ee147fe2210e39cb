"""The live-update connections of one gateway process.

Every stream (SSE or WebSocket) is a ``StreamConnection``: a pump task reads the user's rows
after its cursor from the log (``stream_log.StreamLog``) into a bounded queue; the transport
sends what the queue holds. The pump runs when woken: by a fan-out message naming the user
(published by whichever gateway process logged the event), by the safety-net poll every
``stream.poll_seconds``, or by its heartbeat timer. The log is the truth and wakes are hints,
so a lost wake only delays a frame by at most one poll.

Bounded: ``max_connections_per_user`` per process (counted in memory, so N gateway processes
allow N times as many), ``queue_max`` frames per connection (a full queue drops what it holds
and ends the stream with ``stream.slow_consumer`` carrying the last cursor the client got).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from pocketpay.gateway.stream_log import StreamEvent, StreamLog
from pocketpay.kit.clock import Clock
from pocketpay.kit.errors import AppError
from pocketpay.kit.fanout import FanOut
from pocketpay.kit.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

WAKE_TOPIC = "wake"

STOP_TIMEOUT_SECONDS = 5.0  # how long releasing a stream waits for its reader task


class TooManyConnections(AppError):
    code = "stream.too_many_connections"
    status = 429
    title = "Too many open streams"


@dataclass(frozen=True)
class Frame:
    """One thing a transport sends: an event, a heartbeat, or a control message (``type``
    ``stream.*``); ``final`` frames end the stream after they are sent."""

    kind: str  # "event" | "heartbeat" | "control"
    type: str = ""
    event: StreamEvent | None = None
    data: dict[str, Any] = field(default_factory=dict)
    final: bool = False


HEARTBEAT = Frame("heartbeat")


def control(type_: str, data: dict[str, Any], *, final: bool = False) -> Frame:
    return Frame("control", type_, data=data, final=final)


class StreamConnection:
    def __init__(
        self,
        hub: StreamHub,
        user_id: str,
        cursor: int,
        expires_at: datetime | None,
        queue_max: int,
        still_valid: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.hub = hub
        self.user_id = user_id
        self.cursor = cursor  # the last seq put in the queue
        self.delivered = cursor  # the last seq the transport sent: the resume point
        self.expires_at = expires_at
        # Asked at every heartbeat: False (an API key revoked or rolled) ends the stream.
        self.still_valid = still_valid
        self.queue: asyncio.Queue[Frame] = asyncio.Queue(maxsize=queue_max)
        self._wake = asyncio.Event()
        self._ended = False
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self, first: list[Frame]) -> None:
        for frame in first:
            self.queue.put_nowait(frame)
        self._task = asyncio.create_task(self._pump(), name=f"stream-{self.user_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # Bounded: a pump stuck in a database call must not hold a closing stream (and
            # the server's shutdown, which releases streams shielded) forever; a cancelled
            # task still ends on its own once that call returns.
            await asyncio.wait([self._task], timeout=STOP_TIMEOUT_SECONDS)

    async def next(self) -> Frame:
        return await self.queue.get()

    def sent(self, frame: Frame) -> None:
        if frame.event is not None:
            self.delivered = frame.event.seq

    def end(self, frame: Frame) -> None:
        """Replace whatever waits with ``frame`` (final): nothing after it is sent."""
        if self._ended:
            return
        self._ended = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(frame)
        self._wake.set()

    def _offer(self, frame: Frame) -> bool:
        try:
            self.queue.put_nowait(frame)
            return True
        except asyncio.QueueFull:
            log.info("stream.slow_consumer", user_id=self.user_id, cursor=self.delivered)
            self.end(control("stream.slow_consumer", {"cursor": str(self.delivered)}, final=True))
            return False

    def _expired(self) -> bool:
        return self.expires_at is not None and self.hub.clock.now() >= self.expires_at

    async def _pump(self) -> None:
        limit = self.queue.maxsize
        while not self._ended:
            self._wake.clear()
            if self._expired():
                self.end(control("stream.token_expired", {}, final=True))
                return
            try:
                events = await self.hub.log.after(self.user_id, self.cursor, limit)
            except Exception as exc:  # e.g. no database connection now: the next wake retries
                log.warning("stream.read_failed", user_id=self.user_id, error=type(exc).__name__)
                await self._sleep()
                continue
            for ev in events:
                if not self._offer(Frame("event", ev.type, ev)):
                    return
                self.cursor = ev.seq
            if len(events) == limit:
                continue  # more waiting: read on once the transport made room
            if not await self._sleep():
                if self.still_valid is not None and not await self.still_valid():
                    self.end(control("stream.token_expired", {"reason": "revoked"}, final=True))
                    return
                self._offer(HEARTBEAT)

    async def _sleep(self) -> bool:
        """Wait for a wake (True) or the heartbeat interval (False)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.hub.heartbeat_seconds):
                await self._wake.wait()
                return True
        return False


class StreamHub:
    def __init__(
        self,
        log: StreamLog,
        clock: Clock,
        fanout: FanOut,
        *,
        max_per_user: int,
        queue_max: int,
        poll_seconds: float,
        heartbeat_seconds: float,
    ) -> None:
        self.log = log
        self.clock = clock  # tests may swap in a ManualClock (token expiry)
        self.fanout = fanout
        self.max_per_user = max_per_user
        self.queue_max = queue_max
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self._by_user: dict[str, set[StreamConnection]] = {}
        self._poller: asyncio.Task[None] | None = None
        self.closing = False
        fanout.subscribe(WAKE_TOPIC, self._on_wake)

    async def start(self) -> None:
        await self.fanout.start()
        self._poller = asyncio.create_task(self._poll(), name="stream-poll")

    async def stop(self) -> None:
        """Ends every stream with a retry hint (most have ended already: the SSE and
        WebSocket transports watch the server's own shutdown), then stops the fan-out."""
        self.closing = True
        if self._poller is not None:
            await cancel_and_wait(self._poller)
        for conns in list(self._by_user.values()):
            for conn in list(conns):
                conn.end(control("stream.shutdown", {"cursor": str(conn.delivered)}, final=True))
        await self.fanout.close()

    async def wake_users(self, users: list[str]) -> None:
        """After a commit: wake these users' streams in every gateway process."""
        await self.fanout.publish(WAKE_TOPIC, ",".join(users).encode())

    async def _on_wake(self, payload: bytes) -> None:
        for user in payload.decode().split(","):
            for conn in self._by_user.get(user, ()):
                conn.wake()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            for conns in list(self._by_user.values()):
                for conn in conns:
                    conn.wake()

    def count(self, user_id: str) -> int:
        return len(self._by_user.get(user_id, ()))

    def _check_limit(self, user_id: str) -> None:
        if self.count(user_id) >= self.max_per_user:
            raise TooManyConnections(
                f"At most {self.max_per_user} open streams per user (per gateway process): "
                "close one first.",
                headers={"Retry-After": "5"},
            )

    async def open(
        self,
        user_id: str,
        resume_from: int | None,
        expires_at: datetime | None,
        still_valid: Callable[[], Awaitable[bool]] | None = None,
    ) -> StreamConnection:
        """A started connection of ``user_id`` reading after ``resume_from`` (None: from
        now). A cursor the log no longer covers starts from now after a
        ``stream.resume_expired`` frame (the client refetches what it shows)."""
        self._check_limit(user_id)
        first: list[Frame] = []
        if resume_from is not None and not await self.log.resumable(user_id, resume_from):
            first.append(control("stream.resume_expired", {"cursor": str(resume_from)}))
            resume_from = None
        cursor = await self.log.newest(user_id) if resume_from is None else resume_from
        self._check_limit(user_id)  # again: no await between this check and the add
        conn = StreamConnection(self, user_id, cursor, expires_at, self.queue_max, still_valid)
        self._by_user.setdefault(user_id, set()).add(conn)
        conn.start(first)
        return conn

    async def release(self, conn: StreamConnection) -> None:
        await conn.stop()
        conns = self._by_user.get(conn.user_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._by_user[conn.user_id]
