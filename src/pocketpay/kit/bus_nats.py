"""The event bus on NATS JetStream (scale mode): same contract as ``EmbeddedBus``.

* One stream (``POCKETPAY`` by default, file storage, limits retention, a two-minute duplicate
  window) holds every component's events; the subject is the envelope type.
* Publishing sets ``Nats-Msg-Id`` to ``msg_id_for(env)``, so a relay that publishes the same
  envelope twice inside the duplicate window stores it once.
* Every ``subscribe(durable, ...)`` is a durable *pull* consumer with explicit acks. Each
  process runs one pull loop per subscription; several processes using the same durable name
  share its messages (that is how scale mode runs N copies of a component).
* Up to ``consumer_concurrency`` messages of a batch are handled at once (one task each,
  never more tasks than that; 1, or a subscription made with ``ordered=True``, handles a batch
  sequentially, in stream order). Each message
  is settled on its own: success acks; a failure naks with a delay of
  ``min(retry_delay_ms * 2**(num_delivered-1), retry_cap_ms)``; a failure on delivery
  ``max_deliver`` (or later) writes the envelope to ``bus_dead_letters`` and acks *only if that
  write committed*. If it failed (database down) the message is nak'ed with the same backoff
  and the next delivery tries the handler, then the dead letter, again: nothing is dropped.
  While a batch is handled, its unsettled messages (waiting or running) get "in progress"
  acks so they do not hit ``ack_wait``.
* ``close()`` starts no further handler, lets the running ones finish (``close_grace_seconds``;
  past it they are cancelled and their messages nak'ed), naks the rest of the batch so another
  process (or the next start) gets them at once, then disconnects.

Differences from ``EmbeddedBus`` worth knowing:

* A failing message does not block the ones behind it: it is retried after its nak delay while
  later messages are handled (``EmbeddedBus`` retries inline). Handlers must already be
  idempotent and must not rely on cross-event order after a failure. With a concurrency above
  1 the events of one batch are handled at the same time, in no particular order, exactly as
  if several processes shared the durable: a handler must be safe against itself running
  concurrently on other events (the components' consumers are: each event is one
  transaction with its inbox row, and the ledger's reactions are order-insensitive).
* The dedupe window is ``duplicate_window`` (two minutes), not forever; consumers' inboxes
  catch anything older.
* The server-side ``max_deliver`` of the consumer is -1 (unlimited): the *bus* decides when
  to dead-letter, and JetStream never gives up on a message by itself (with a bounded server
  limit, a database outage longer than the remaining deliveries lost events: no dead letter,
  no alert). ``start()`` updates, or recreates at the same position, a consumer left with
  another limit by an older version. The bus also listens to the JetStream max-deliveries
  advisory of its consumers and logs an error and counts
  ``pocketpay_bus_max_deliveries_advisories_total`` should it ever fire.
* ``publish`` reports a bus that cannot be reached (no connection, no JetStream answer,
  timeout) as ``ConnectionError``, so the outbox relay tells an outage from a poison event.
* Multiple filter subjects per consumer need nats-server 2.10+. On an older server a
  subscription with several subjects gets an unfiltered consumer and the bus filters on the
  client (non-matching messages are acked unhandled); ``lag()`` then over-counts (see there).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.bus import (
    Bus,
    Envelope,
    Handler,
    count_dead_letters,
    msg_id_for,
    retry_delay_seconds,
    subject_matches,
    try_dead_letter,
)
from pocketpay.kit.clock import Clock
from pocketpay.kit.db import is_unavailable
from pocketpay.kit.metrics import BUS_CONSUMED, BUS_MAX_DELIVERIES, BUS_PUBLISHED

log = structlog.get_logger(__name__)

DEFAULT_SUBJECTS: tuple[str, ...] = (
    "gateway.>",
    "payments.>",
    "ledger.>",
    "billing.>",
    "notifications.>",
)
DUPLICATE_WINDOW_SECONDS = 120.0
# The consumers' server-side delivery limit: none (see the module docstring).
SERVER_MAX_DELIVER = -1
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
_ERR_STREAM_NAME_IN_USE = 10058
# Publish errors that mean "the bus is unreachable", not "this message is bad".
_UNREACHABLE = (
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.NoServersError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)


def _cancelling() -> bool:
    """True if the current task was asked to stop (``Task.cancel()``)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _status(msg: Msg) -> str:
    """The status of a JetStream control message ("404", "408", ...); "" for a real one."""
    if msg.headers is None or msg.data:
        return ""
    return str(msg.headers.get("Status", ""))


def subject_within(pattern: str, stream_subject: str) -> bool:
    """True if every subject ``pattern`` matches is also matched by ``stream_subject``."""
    p_parts, s_parts = pattern.split("."), stream_subject.split(".")
    for i, part in enumerate(s_parts):
        if part == ">":
            return len(p_parts) > i
        if i >= len(p_parts) or p_parts[i] == ">":
            return False
        if part != "*" and part != p_parts[i]:
            return False
    return len(p_parts) == len(s_parts)


def _set_event() -> asyncio.Event:
    ev = asyncio.Event()
    ev.set()
    return ev


@dataclass
class _NatsSubscription:
    durable: str
    subjects: list[str]
    handler: Handler
    concurrency: int  # most handler tasks at once (1: in stream order)
    client_filter: bool = False  # the server could not filter: the bus does
    inbox: Subscription | None = None  # receives this consumer's pulled messages
    requests: int = 0  # pull requests sent (suffix of their reply subjects)
    advisories: Subscription | None = None  # JetStream max-deliveries advisories
    task: asyncio.Task[None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # this run's loop must end
    running: int = 0  # handler tasks not finished yet
    # Set while no handler task runs: close() waits for it (once ``stop`` is set no new
    # handler starts, so it stays set).
    idle: asyncio.Event = field(default_factory=_set_event)


class NatsBus:
    """``Bus`` on NATS JetStream; ``engine`` is only used for the dead-letter table.

    ``subjects`` are the stream's subjects (every subscription must fall inside them);
    ``batch`` is the most messages one pull takes; an idle consumer waits in a pull request
    of ``fetch_timeout_seconds`` (it still gets a new message at once); ``start()`` gives up
    after ``connect_timeout_seconds`` (later disconnects reconnect forever);
    ``api_timeout_seconds`` bounds JetStream API calls and publish acks;
    ``close_grace_seconds`` is how long ``close()`` lets running handlers finish;
    ``consumer_concurrency`` is the most messages of one subscription handled at once.
    """

    def __init__(
        self,
        url: str,
        engine: AsyncEngine,
        clock: Clock,
        *,
        stream: str = "POCKETPAY",
        subjects: Sequence[str] = DEFAULT_SUBJECTS,
        max_deliver: int = 5,
        retry_delay_ms: int = 200,
        retry_cap_ms: int = 30_000,
        ack_wait_seconds: float = 30.0,
        batch: int = 100,
        fetch_timeout_seconds: float = 2.0,
        connect_timeout_seconds: float = 5.0,
        api_timeout_seconds: float = 5.0,
        close_grace_seconds: float = 5.0,
        subject_prefix: str = "",
        consumer_concurrency: int = 16,
    ) -> None:
        if max_deliver < 1:
            raise ValueError("max_deliver must be at least 1")
        if consumer_concurrency < 1:
            raise ValueError("consumer_concurrency must be at least 1")
        if not subjects:
            raise ValueError("the stream needs at least one subject")
        self._url = url
        self._engine = engine
        self._clock = clock
        self._stream = stream
        # A prefix ("staging.") keeps deployments (or test runs) sharing one NATS server apart:
        # streams may not overlap in subjects.
        self._prefix = subject_prefix
        self._subjects = [subject_prefix + s for s in subjects]
        self._max_deliver = max_deliver
        self._retry_delay_ms = retry_delay_ms
        self._retry_cap_ms = retry_cap_ms
        self._ack_wait = ack_wait_seconds
        self._batch = batch
        self._fetch_timeout = fetch_timeout_seconds
        self._connect_timeout = connect_timeout_seconds
        self._api_timeout = api_timeout_seconds
        self._close_grace = close_grace_seconds
        self._concurrency = consumer_concurrency
        self._subs: list[_NatsSubscription] = []
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._started = False
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, create or update the stream and the consumers, start the fetch loops."""
        if self._started:
            return
        self._nc = await self._connect()
        self._js = self._nc.jetstream(timeout=self._api_timeout)
        try:
            await self._ensure_stream()
            for sub in self._subs:
                await self._ensure_consumer(sub)
                sub.inbox = await self._nc.subscribe(f"{self._nc.new_inbox()}.*")
                sub.advisories = await self._nc.subscribe(
                    f"{MAX_DELIVERIES_ADVISORY}.{self._stream}.{sub.durable}",
                    cb=self._on_max_deliveries,
                )
        except BaseException:
            for sub in self._subs:
                sub.inbox = sub.advisories = None
            await self._disconnect()
            raise
        for sub in self._subs:
            sub.stop = asyncio.Event()
            sub.task = asyncio.create_task(
                self._consume(sub, sub.stop), name=f"bus-nats-{sub.durable}"
            )
        self._started = True
        log.info(
            "bus.nats.started",
            url=self._url,
            stream=self._stream,
            consumers=[s.durable for s in self._subs],
        )

    async def close(self) -> None:
        """Stop the fetch loops and disconnect.

        No new handler starts; the running ones may finish (up to ``close_grace_seconds``;
        cancelled inside a database call, a SQLite connection would keep its write lock), then
        the loop is cancelled (and with it any handler still running) and the batch's
        unhandled messages are nak'ed for another consumer.
        """
        self._started = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._close_grace
        for sub in self._subs:
            sub.stop.set()
        for sub in self._subs:
            task, sub.task = sub.task, None
            if task is None:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await sub.idle.wait()
            task.cancel()
            # Bounded, and not ``suppress(CancelledError)`` (close() may be cancelled too):
            # a handler that swallows the cancellation must not hang close().
            await asyncio.wait([task], timeout=max(1.0, deadline - loop.time()))
            if not task.done():
                log.error("bus.nats.consumer_did_not_stop", durable=sub.durable)
            elif not task.cancelled() and task.exception() is not None:
                log.error(
                    "bus.nats.consumer_crashed", durable=sub.durable, error=repr(task.exception())
                )
        for sub in self._subs:
            for subscription in (sub.inbox, sub.advisories):
                if subscription is not None:
                    with contextlib.suppress(Exception):
                        await subscription.unsubscribe()
            sub.inbox = sub.advisories = None
        await self._disconnect()

    async def _connect(self) -> NatsClient:
        nc = NatsClient()
        try:
            # max_reconnect_attempts=-1 also retries the first connect forever: the overall
            # deadline below bounds it, reconnects after that are unlimited.
            async with asyncio.timeout(self._connect_timeout):
                await nc.connect(
                    self._url,
                    name=f"pocketpay-bus-{self._stream}",
                    connect_timeout=max(1, int(self._connect_timeout)),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            if isinstance(exc, TimeoutError | OSError | nats.errors.Error):
                raise ConnectionError(
                    f"NATS not reachable at {self._url} within {self._connect_timeout}s"
                ) from exc
            raise
        return nc

    async def _disconnect(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is None or nc.is_closed:
            return
        self._closing = True
        try:
            with contextlib.suppress(Exception):
                await nc.flush(timeout=1)  # acks and naks still buffered
            with contextlib.suppress(Exception):
                await nc.close()
        finally:
            self._closing = False

    async def _on_error(self, exc: Exception) -> None:
        log.warning("bus.nats.error", url=self._url, error=f"{type(exc).__name__}: {exc}")

    async def _on_disconnected(self) -> None:
        if not self._closing:
            log.warning("bus.nats.disconnected", url=self._url)

    async def _on_reconnected(self) -> None:
        log.info("bus.nats.reconnected", url=self._url)

    async def _on_max_deliveries(self, msg: Msg) -> None:
        """JetStream stopped redelivering a message. With an unlimited server-side
        ``max_deliver`` this must not happen: if it does, say so loudly (the event may be
        lost unless it reached the dead-letter table)."""
        durable = msg.subject.rsplit(".", 1)[-1]
        try:
            body = json.loads(msg.data)
        except ValueError:
            body = {}
        BUS_MAX_DELIVERIES.labels(durable).inc()
        log.error(
            "bus.nats.max_deliveries_reached",
            stream=self._stream,
            durable=durable,
            stream_seq=body.get("stream_seq"),
            deliveries=body.get("deliveries"),
        )

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("NatsBus is not started")
        return self._js

    # -- stream and consumers --------------------------------------------------------------

    async def _ensure_stream(self) -> None:
        js = self._jetstream()
        wanted = api.StreamConfig(
            name=self._stream,
            subjects=list(self._subjects),
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            discard=api.DiscardPolicy.OLD,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
        )
        try:
            info = await js.stream_info(self._stream)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(wanted)
                return
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != _ERR_STREAM_NAME_IN_USE:  # not another process racing us
                    raise
            info = await js.stream_info(self._stream)
        current = info.config
        # Union, never removal: during a rolling deploy old and new processes must not flap.
        subjects = sorted(set(current.subjects or []) | set(self._subjects))
        if (
            subjects != sorted(current.subjects or [])
            or current.duplicate_window != DUPLICATE_WINDOW_SECONDS
        ):
            await js.update_stream(
                dataclasses.replace(
                    current, subjects=subjects, duplicate_window=DUPLICATE_WINDOW_SECONDS
                )
            )
            log.info("bus.nats.stream_updated", stream=self._stream, subjects=subjects)

    def _server_filters_many(self) -> bool:
        if self._nc is None:
            return False
        version = self._nc.connected_server_version
        return (version.major, version.minor) >= (2, 10)

    async def _ensure_consumer(self, sub: _NatsSubscription) -> None:
        """Create the durable consumer, or bring an existing one to this configuration.

        JetStream updates an existing durable in place when only editable fields differ (the
        delivery limit, ack wait, filters); one it refuses to update, or one still reporting
        another delivery limit, is recreated where it stood (see ``_recreate_consumer``)."""
        config = api.ConsumerConfig(
            name=sub.durable,
            durable_name=sub.durable,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            max_deliver=SERVER_MAX_DELIVER,
        )
        sub.client_filter = False
        if len(sub.subjects) == 1:
            config.filter_subject = sub.subjects[0]
        elif self._server_filters_many():
            config.filter_subjects = list(sub.subjects)
        else:
            sub.client_filter = True
            log.warning(
                "bus.nats.client_side_filter",
                durable=sub.durable,
                subjects=sub.subjects,
                reason="nats-server < 2.10 has no filter_subjects",
            )
        js = self._jetstream()
        try:
            info = await js.add_consumer(self._stream, config=config)
        except nats.js.errors.BadRequestError as exc:
            try:
                await js.consumer_info(self._stream, sub.durable)
            except nats.js.errors.NotFoundError:
                raise RuntimeError(
                    f"cannot create consumer {sub.durable!r} on stream {self._stream!r}: "
                    f"{exc.description} (err_code {exc.err_code})"
                ) from exc
            await self._recreate_consumer(sub, config, reason=str(exc.description))
            return
        if (info.config.max_deliver or -1) != SERVER_MAX_DELIVER:
            await self._recreate_consumer(
                sub, config, reason=f"max_deliver is still {info.config.max_deliver}"
            )

    async def _recreate_consumer(
        self, sub: _NatsSubscription, config: api.ConsumerConfig, *, reason: str
    ) -> None:
        """Delete and create the durable again, starting after its ack floor: messages it had
        acked stay done, the rest (even ones acked above the floor) come again (handlers are
        idempotent). Another process racing to do the same is harmless."""
        js = self._jetstream()
        old = await js.consumer_info(self._stream, sub.durable)
        floor = old.ack_floor.stream_seq if old.ack_floor is not None else 0
        log.warning(
            "bus.nats.consumer_recreated",
            durable=sub.durable,
            reason=reason,
            old_max_deliver=old.config.max_deliver,
            start_seq=floor + 1,
        )
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_consumer(self._stream, sub.durable)
        fresh = dataclasses.replace(
            config,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE if floor else api.DeliverPolicy.ALL,
            opt_start_seq=floor + 1 if floor else None,
        )
        try:
            await js.add_consumer(self._stream, config=fresh)
        except nats.js.errors.BadRequestError as exc:
            raise RuntimeError(
                f"cannot recreate consumer {sub.durable!r} on stream {self._stream!r}: "
                f"{exc.description} (err_code {exc.err_code})"
            ) from exc

    # -- Bus -------------------------------------------------------------------------------

    async def publish(self, env: Envelope) -> None:
        """Publish and wait for the stream's ack. An unreachable bus raises ``ConnectionError``
        (or a ``TimeoutError``); anything else is about this message (too big, say)."""
        payload = env.to_json().encode()
        if self._js is None:
            raise ConnectionError("NatsBus is not started")
        try:
            ack = await self._js.publish(
                subject=self._prefix + env.type,
                payload=payload,
                stream=self._stream,
                headers={"Nats-Msg-Id": msg_id_for(env)},
            )
        except _UNREACHABLE as exc:
            raise ConnectionError(f"NATS unreachable: {type(exc).__name__}: {exc}") from exc
        if not ack.duplicate:
            BUS_PUBLISHED.labels(env.type.split(".")[0]).inc()

    def subscribe(
        self, durable: str, subjects: list[str], handler: Handler, *, ordered: bool = False
    ) -> None:
        """Register a durable consumer; call before ``start()``.

        ``ordered`` handles its messages one at a time in stream order (a consumer whose
        effect depends on the order of events, such as the users' event log); otherwise up to
        ``consumer_concurrency`` at once.
        """
        if self._started:
            raise RuntimeError("subscribe() must be called before start()")
        if any(s.durable == durable for s in self._subs):
            raise ValueError(f"durable {durable!r} is already subscribed on this bus")
        if not subjects:
            raise ValueError("a subscription needs at least one subject")
        subjects = [self._prefix + p for p in subjects]
        outside = [p for p in subjects if not any(subject_within(p, s) for s in self._subjects)]
        if outside:
            raise ValueError(
                f"subjects {outside} of {durable!r} are not in stream {self._stream!r} "
                f"({self._subjects})"
            )
        concurrency = 1 if ordered else self._concurrency
        self._subs.append(_NatsSubscription(durable, list(subjects), handler, concurrency))

    async def ping(self) -> float:
        """Round trip to the server in milliseconds; raises if not connected."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise ConnectionError(f"NATS not connected ({self._url})")
        return await nc.rtt(timeout=2) * 1000

    async def dead_letter_count(self, component: str | None = None) -> int:
        """Unreplayed dead letters (of ``component``'s consumers and relay, if given)."""
        return await count_dead_letters(self._engine, component)

    async def lag(self, durable: str) -> tuple[int, float]:
        """(messages not yet consumed by ``durable``, age in seconds of the oldest of them).

        The count is the consumer's ``num_pending`` (not delivered yet) plus
        ``num_ack_pending`` (delivered, not acked: being handled or waiting for a retry). The
        age is that of the first stream message after the consumer's ack floor that matches
        its filter (acks above the floor are ignored, so it can only over-estimate); the time
        is the server's store time against this bus's clock. With client-side filtering (old
        server, several subjects) the count also includes messages the subscription will skip.
        An unknown consumer has no lag: ``(0, 0.0)``.
        """
        js = self._jetstream()
        try:
            info = await js.consumer_info(self._stream, durable)
        except nats.js.errors.NotFoundError:
            return 0, 0.0
        pending = (info.num_pending or 0) + (info.num_ack_pending or 0)
        if pending == 0:
            return 0, 0.0
        floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
        sub = next((s for s in self._subs if s.durable == durable), None)
        if sub is not None:
            filters = list(sub.subjects)
        elif info.config.filter_subjects:
            filters = list(info.config.filter_subjects)
        elif info.config.filter_subject:
            filters = [info.config.filter_subject]
        else:
            filters = list(self._subjects)
        oldest = None
        for pattern in filters:
            try:
                msg = await js.get_msg(self._stream, seq=floor + 1, subject=pattern, next=True)
            except nats.js.errors.NotFoundError:
                continue
            if msg.time is not None and (oldest is None or msg.time < oldest):
                oldest = msg.time
        if oldest is None:
            return pending, 0.0
        return pending, max(0.0, (self._clock.now() - oldest).total_seconds())

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until every subscription's consumer has nothing pending or unacked (tests)."""
        js = self._jetstream()
        deadline = time.monotonic() + timeout
        while True:
            busy: dict[str, tuple[int, int]] = {}
            for sub in self._subs:
                info = await js.consumer_info(self._stream, sub.durable)
                counts = (info.num_pending or 0, info.num_ack_pending or 0)
                if counts != (0, 0):
                    busy[sub.durable] = counts
            if not busy:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"bus not drained after {timeout}s: (pending, unacked) {busy}")
            await asyncio.sleep(0.02)

    # -- consuming -------------------------------------------------------------------------

    async def _consume(self, sub: _NatsSubscription, stop: asyncio.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            try:
                msgs = await self._pull(sub)
            except (Exception, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and _cancelling():
                    raise  # close(); a CancelledError nobody asked for is nats-py internals
                log.warning(
                    "bus.nats.pull_failed",
                    durable=sub.durable,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            if msgs:
                await self._handle_batch(sub, msgs)

    async def _pull(self, sub: _NatsSubscription) -> list[Msg]:
        """The next batch: what is available right away, else wait up to ``fetch_timeout``.

        Pull requests are sent by hand rather than with nats-py's ``fetch``, whose lingering
        request only returns once the whole batch arrived or the request expired (an idle
        consumer would then see each event up to ``fetch_timeout`` late), and whose no-wait
        probe behaves differently across server versions. Here a no-wait request takes up to
        ``batch`` available messages; only when there are none does a request for one message
        wait, and it returns as soon as that message arrives.
        """
        inbox = sub.inbox
        if inbox is None:
            raise RuntimeError("NatsBus is not started")
        # Messages a stale request (one sent while disconnected, say) delivered in between.
        msgs = await self._take_queued(inbox, self._batch)
        if msgs:
            return msgs
        msgs = await self._request(sub, inbox, self._batch, expires=None)
        if msgs:
            return msgs
        return await self._request(sub, inbox, 1, expires=self._fetch_timeout)

    @staticmethod
    async def _take_queued(inbox: Subscription, limit: int) -> list[Msg]:
        msgs: list[Msg] = []
        while len(msgs) < limit and inbox.pending_msgs > 0:
            msg = await inbox.next_msg(timeout=1)
            if not _status(msg):
                msgs.append(msg)
        return msgs

    async def _request(
        self, sub: _NatsSubscription, inbox: Subscription, batch: int, *, expires: float | None
    ) -> list[Msg]:
        nc = self._nc
        if nc is None:
            raise RuntimeError("NatsBus is not started")
        sub.requests += 1
        reply = f"{inbox.subject[:-1]}{sub.requests}"
        body: dict[str, object] = {"batch": batch}
        if expires is None:
            body["no_wait"] = True
        else:
            body["expires"] = int(expires * 1_000_000_000)
        await nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{sub.durable}",
            json.dumps(body).encode(),
            reply=reply,
        )
        # The server ends every request with a status (404 none, 408 expired or done); the
        # client gives it a little longer than the request's own expiry.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (expires if expires is not None else self._api_timeout) + 1.0
        msgs: list[Msg] = []
        while len(msgs) < batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                msg = await inbox.next_msg(timeout=remaining)
            except nats.errors.TimeoutError:
                break
            status = _status(msg)
            if not status:
                msgs.append(msg)  # a stream message (maybe owed to an older request: fine)
                continue
            if msg.subject != reply or status == "100":  # older request's end, or heartbeat
                continue
            if status in ("404", "408"):
                break
            description = (msg.headers or {}).get("Description", "")
            if status == "409" and "Deleted" in description:
                await self._ensure_consumer(sub)  # deleted under us: create it again
            log.warning(
                "bus.nats.pull_status", durable=sub.durable, status=status, description=description
            )
            break
        return msgs

    async def _handle_batch(self, sub: _NatsSubscription, msgs: list[Msg]) -> None:
        """Handle ``msgs`` with at most ``consumer_concurrency`` handler tasks at a time.

        ``unsettled`` holds every message not acked or nak'ed yet (waiting or running): the
        keep-alive sends them "in progress", and whatever is left when the batch ends early
        (``stop``, or cancelled by close()) is nak'ed for another consumer. Every task is
        awaited and its outcome looked at; cancelled, the batch cancels its handlers and waits
        for them before it naks.
        """
        unsettled = list(msgs)
        waiting = collections.deque(msgs)
        running: set[asyncio.Task[None]] = set()
        keepalive = asyncio.create_task(self._keep_alive(unsettled))
        try:
            while True:
                while waiting and len(running) < sub.concurrency and not sub.stop.is_set():
                    running.add(self._start_handler(sub, waiting.popleft(), unsettled))
                if not running:
                    break  # all handled, or stop: the waiting ones are nak'ed below
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                self._reap(sub, done)
        finally:
            keepalive.cancel()
            if running:  # only when this task was cancelled (close() after its grace)
                for task in running:
                    task.cancel()
                await self._wait_all(running)
                self._reap(sub, running)
            # Left over when stopped or cancelled: hand them back right away instead of
            # letting them wait for ack_wait.
            await self._nak_all(unsettled)
            # Not ``await keepalive`` under suppress(CancelledError): that would also swallow
            # the cancellation of this task by close().
            await self._wait_all({keepalive})

    def _start_handler(
        self, sub: _NatsSubscription, msg: Msg, unsettled: list[Msg]
    ) -> asyncio.Task[None]:
        async def run() -> None:
            await self._handle(sub, msg)
            unsettled.remove(msg)  # settled (a failure or cancellation leaves it to be nak'ed)

        def finished(_: asyncio.Task[None]) -> None:
            # A done callback, not a ``finally`` in run(): a task cancelled before its first
            # step never runs its body.
            sub.running -= 1
            if sub.running == 0:
                sub.idle.set()

        sub.running += 1
        sub.idle.clear()
        task = asyncio.create_task(run(), name=f"bus-nats-{sub.durable}-handler")
        task.add_done_callback(finished)
        return task

    @staticmethod
    def _reap(sub: _NatsSubscription, tasks: set[asyncio.Task[None]]) -> None:
        """Look at every finished handler task's outcome (no exception goes unretrieved).
        ``_handle`` settles every ordinary failure itself: anything here is unexpected, and
        the message stays unsettled (nak'ed when the batch ends)."""
        for task in tasks:
            if task.cancelled():
                log.warning("bus.nats.handler_cancelled", durable=sub.durable)
            elif (exc := task.exception()) is not None:
                log.error(
                    "bus.nats.handler_crashed",
                    durable=sub.durable,
                    error=f"{type(exc).__name__}: {exc}",
                )

    @staticmethod
    async def _wait_all(tasks: set[asyncio.Task[None]]) -> None:
        """Wait for ``tasks`` to end even if this task is cancelled meanwhile (the cancellation
        is raised once they ended): they are never left running unawaited."""
        cancelled: asyncio.CancelledError | None = None
        pending = set(tasks)
        while pending:
            try:
                _, pending = await asyncio.wait(pending)
            except asyncio.CancelledError as exc:
                cancelled = exc
                for task in pending:
                    task.cancel()
        if cancelled is not None:
            raise cancelled

    @staticmethod
    async def _nak_all(msgs: list[Msg]) -> None:
        """Nak every message, even if cancelled between two (re-raised at the end)."""
        cancelled: asyncio.CancelledError | None = None
        for msg in list(msgs):
            try:
                await msg.nak()
            except asyncio.CancelledError as exc:
                cancelled = exc
            except Exception:
                pass  # a lost nak only means the message waits for ack_wait
        if cancelled is not None:
            raise cancelled

    async def _keep_alive(self, unsettled: list[Msg]) -> None:
        """Keep the batch's unsettled messages (waiting or running) from hitting ack_wait."""
        while True:
            await asyncio.sleep(self._ack_wait / 2)
            for msg in list(unsettled):
                with contextlib.suppress(Exception):
                    await msg.in_progress()

    async def _handle(self, sub: _NatsSubscription, msg: Msg) -> None:
        delivered = msg.metadata.num_delivered or 1
        try:
            env = Envelope.from_json(msg.data)
        except Exception as exc:
            # Not an envelope: nothing can handle or replay it. Logged, then acked away.
            log.error(
                "bus.nats.undecodable",
                durable=sub.durable,
                subject=msg.subject,
                seq=msg.metadata.sequence.stream,
                error=f"{type(exc).__name__}: {exc}",
            )
            await self._settle(msg, "ack", sub.durable)
            return
        if sub.client_filter and not any(subject_matches(p, msg.subject) for p in sub.subjects):
            await self._settle(msg, "ack", sub.durable)
            return
        try:
            await sub.handler(env)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._handler_failed(sub, msg, env, exc, delivered)
            return
        await self._settle(msg, "ack", sub.durable)
        BUS_CONSUMED.labels(sub.durable).inc()

    async def _handler_failed(
        self, sub: _NatsSubscription, msg: Msg, env: Envelope, exc: Exception, delivered: int
    ) -> None:
        """Nak for a retry, or dead-letter and ack; ack only once the dead letter committed.
        A failure because the database was unavailable never dead-letters: at the end of an
        outage the handler may fail on the last connection refused while the dead letter, a
        moment later, already commits (the event would wait for an operator for nothing)."""
        error = f"{type(exc).__name__}: {exc}"
        delay = retry_delay_seconds(delivered, self._retry_delay_ms, self._retry_cap_ms)
        log.warning(
            "bus.handler_failed",
            durable=sub.durable,
            event_id=env.id,
            attempt=delivered,
            error=error,
        )
        if delivered < self._max_deliver or is_unavailable(exc):
            await self._settle(msg, "nak", sub.durable, delay=delay)
            return
        written = await try_dead_letter(
            self._engine, sub.durable, env, error, delivered, self._clock.now(), delay
        )
        if not written:
            # Nothing is lost: the message stays in the stream and comes back after the delay.
            await self._settle(msg, "nak", sub.durable, delay=delay)
            return
        await self._settle(msg, "ack", sub.durable)

    @staticmethod
    async def _settle(msg: Msg, how: str, durable: str, delay: float | None = None) -> None:
        """Ack or nak; a lost ack only means a redelivery (handlers are idempotent)."""
        try:
            if how == "ack":
                await msg.ack()
            else:
                await msg.nak(delay=delay or None)
        except Exception as exc:
            log.warning(
                "bus.nats.settle_failed",
                durable=durable,
                how=how,
                error=f"{type(exc).__name__}: {exc}",
            )


def _conforms(bus: NatsBus) -> Bus:  # mypy checks NatsBus against the Bus protocol here
    return bus
