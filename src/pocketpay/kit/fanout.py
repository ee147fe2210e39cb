"""Fan-out: fire-and-forget hints to every process that listens on a topic.

``publish(topic, payload)`` reaches every ``subscribe``d callback of that topic, in this process
(``LocalFanOut``, embedded mode) or in every process connected to the same NATS server
(``NatsFanOut``, scale mode: plain NATS core pub/sub, *not* JetStream: nothing is stored,
nothing is acknowledged). A message may be lost (a process reconnecting, a slow subscriber):
callers use it only as a wake-up for state that lives elsewhere (e.g. a database log) and keep
a periodic poll as the safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

Callback = Callable[[bytes], Awaitable[None]]


class FanOut(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, topic: str, payload: bytes) -> None: ...

    def subscribe(self, topic: str, callback: Callback) -> None: ...


async def _deliver(topic: str, callbacks: list[Callback], payload: bytes) -> None:
    for cb in callbacks:
        try:
            await cb(payload)
        except Exception as exc:  # one bad listener must not starve the others
            log.warning("fanout.callback_failed", topic=topic, error=f"{type(exc).__name__}: {exc}")


class LocalFanOut:
    """In this process only: ``publish`` calls the topic's callbacks before it returns."""

    def __init__(self) -> None:
        self._subs: dict[str, list[Callback]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._subs.clear()

    async def publish(self, topic: str, payload: bytes) -> None:
        await _deliver(topic, self._subs.get(topic, []), payload)

    def subscribe(self, topic: str, callback: Callback) -> None:
        self._subs.setdefault(topic, []).append(callback)


class NatsFanOut:
    """NATS core subjects ``<prefix><topic>``. Subscriptions made before ``start`` are opened
    by it; a publish while disconnected is dropped (a hint, see the module docstring)."""

    def __init__(self, url: str, prefix: str = "") -> None:
        self._url = url
        self._prefix = prefix
        self._subs: dict[str, list[Callback]] = {}
        self._nc: object | None = None

    async def start(self) -> None:
        import nats

        # Reconnect forever: wakes are optional, the process must not die with NATS.
        nc = await nats.connect(
            self._url, name="pocketpay-fanout", max_reconnect_attempts=-1, connect_timeout=2
        )
        self._nc = nc
        for topic in self._subs:
            await self._open(topic)

    async def _open(self, topic: str) -> None:
        from nats.aio.client import Client
        from nats.aio.msg import Msg

        assert isinstance(self._nc, Client)
        callbacks = self._subs[topic]

        async def on_msg(msg: Msg) -> None:
            await _deliver(topic, callbacks, msg.data)

        await self._nc.subscribe(self._prefix + topic, cb=on_msg)

    async def close(self) -> None:
        from nats.aio.client import Client

        if isinstance(self._nc, Client):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._nc.drain()
            with contextlib.suppress(Exception):
                await self._nc.close()
        self._nc = None

    async def publish(self, topic: str, payload: bytes) -> None:
        from nats.aio.client import Client

        if not isinstance(self._nc, Client) or not self._nc.is_connected:
            return
        try:
            await self._nc.publish(self._prefix + topic, payload)
        except Exception as exc:  # lost hint: the pollers catch up
            log.info("fanout.publish_dropped", topic=topic, error=type(exc).__name__)

    def subscribe(self, topic: str, callback: Callback) -> None:
        if self._nc is not None and topic not in self._subs:
            raise RuntimeError("NatsFanOut: subscribe to new topics before start()")
        self._subs.setdefault(topic, []).append(callback)
