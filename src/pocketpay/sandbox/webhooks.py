"""Stripe events and their signed, asynchronous delivery to one webhook endpoint.

Each event is signed as Stripe signs: ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
"<t>.<payload>" keyed by the webhook secret>``, re-signed at every attempt. The timestamp
comes from the injected clock, so a receiver verifying with a tolerance must share that clock
(or the clock must be near real time, as ``SystemClock`` is).

First attempts go out in emission order from one background task; an event whose first
attempt fails is retried with backoff by its own task, so one bad event never holds up the
rest. With no URL, events are only recorded in ``events``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import structlog

from pocketpay.kit.clock import Clock
from pocketpay.kit.tasks import cancel_and_wait
from pocketpay.sandbox.models import new_id

log = structlog.get_logger(__name__)

API_VERSION = "2024-06-20"
USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


def sign(payload: str, secret: str, timestamp: int) -> str:
    """The ``Stripe-Signature`` header value for ``payload`` at ``timestamp``."""
    signed = f"{timestamp}.{payload}".encode()
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def build_event(type_: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
    return {
        "id": new_id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }


@dataclass
class Delivery:
    event_id: str
    type: str
    payload: str
    attempts: int = 0
    status: Literal["pending", "delivered", "failed"] = "pending"
    last_status_code: int | None = None
    last_error: str | None = None


class WebhookSender:
    """Records every event and, when ``url`` is set, delivers it in the background."""

    def __init__(
        self,
        url: str,
        secret: str,
        clock: Clock,
        *,
        retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0),
        timeout_seconds: float = 5.0,
    ) -> None:
        self.url = url
        self.secret = secret
        self.clock = clock
        self.retry_delays = retry_delays
        self.timeout_seconds = timeout_seconds
        self.events: list[dict[str, Any]] = []
        self.deliveries: dict[str, Delivery] = {}
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._retries: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def emit(self, type_: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Record an event (a snapshot of ``obj`` now) and queue it for delivery."""
        payload = json.dumps(build_event(type_, obj, int(self.clock.now().timestamp())))
        event: dict[str, Any] = json.loads(payload)
        self.events.append(event)
        if self.url:
            delivery = Delivery(event["id"], type_, payload)
            self.deliveries[delivery.event_id] = delivery
            self._queue.put_nowait(delivery)
            self._ensure_worker()
        return event

    @property
    def pending(self) -> int:
        return sum(1 for d in self.deliveries.values() if d.status == "pending")

    async def flush(self) -> None:
        """Return once every queued event is delivered or has run out of retries."""
        while True:
            if not self._queue.empty():
                self._ensure_worker()
            await self._queue.join()
            if not self._retries:
                return
            await asyncio.gather(*list(self._retries), return_exceptions=True)

    async def aclose(self) -> None:
        await cancel_and_wait(self._worker, *self._retries)
        self._worker = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        while True:
            delivery = await self._queue.get()
            try:
                if not await self._attempt(delivery):
                    task = asyncio.get_running_loop().create_task(self._retry(delivery))
                    self._retries.add(task)
                    task.add_done_callback(self._retries.discard)
            finally:
                self._queue.task_done()

    async def _retry(self, delivery: Delivery) -> None:
        for delay in self.retry_delays:
            await asyncio.sleep(delay)
            if await self._attempt(delivery):
                return
        delivery.status = "failed"
        log.warning(
            "sandbox.webhook.gave_up",
            event_id=delivery.event_id,
            type=delivery.type,
            attempts=delivery.attempts,
            error=delivery.last_error,
        )

    async def _attempt(self, delivery: Delivery) -> bool:
        delivery.attempts += 1
        timestamp = int(self.clock.now().timestamp())
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": sign(delivery.payload, self.secret, timestamp),
            "User-Agent": USER_AGENT,
        }
        try:
            resp = await self._http().post(self.url, content=delivery.payload, headers=headers)
        except httpx.HTTPError as exc:
            delivery.last_error = f"{type(exc).__name__}: {exc}"[:300]
            return False
        delivery.last_status_code = resp.status_code
        if resp.is_success:
            delivery.status = "delivered"
            return True
        delivery.last_error = f"HTTP {resp.status_code}"
        return False

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_seconds)
        return self._client
