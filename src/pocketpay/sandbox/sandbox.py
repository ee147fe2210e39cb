"""The ``Sandbox``: state, lock, faults, idempotency and webhooks of one sandbox PSP.

Tests and ops drive it from Python: switch ``faults``, call ``tick()`` after moving a
``ManualClock`` to settle funds, ``await flush_webhooks()`` to wait for deliveries, read
``events``. ``start()``/``aclose()`` (or the app's lifespan) run the settlement loop.

State lives in the sandbox's own database (``settings.database_url``, see ``storage``): it is
loaded on first use, and each operation's changes and idempotency key are committed in one
transaction before the answer is sent and before its webhooks are queued. If that commit
fails, the answer is a 500 (outcome unknown, as from Stripe) and memory is reloaded from the
database on the next call, so nothing uncommitted is ever seen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from pocketpay.kit.clock import Clock
from pocketpay.kit.tasks import cancel_and_wait
from pocketpay.sandbox import disputes, payouts
from pocketpay.sandbox.errors import StripeError
from pocketpay.sandbox.faults import Faults
from pocketpay.sandbox.idempotency import IdempotencyStore, StoredResponse
from pocketpay.sandbox.state import Store
from pocketpay.sandbox.storage import SandboxDB, default_url
from pocketpay.sandbox.webhooks import WebhookSender
from pocketpay.settings import SandboxSettings

log = structlog.get_logger(__name__)

Operation = Callable[[Store], dict[str, Any]]


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]
    replayed: bool = False


class Sandbox:
    def __init__(self, settings: SandboxSettings, clock: Clock, *, webhook_url: str) -> None:
        self.settings = settings
        self.clock = clock
        self.lock = asyncio.Lock()
        self.faults = Faults()
        self.webhooks = WebhookSender(webhook_url, settings.webhook_secret, clock)
        self.store = Store(clock, settings.settle_delay_seconds, self._emit)
        self.idempotency = IdempotencyStore()
        self.db = SandboxDB(settings.database_url or default_url())
        self.tick_interval_seconds = 0.5
        self._ticker: asyncio.Task[None] | None = None
        self._loaded = False
        self._unsent: list[tuple[str, dict[str, Any]]] = []  # events of the open operation

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event emitted so far, oldest first (delivered or not)."""
        return self.webhooks.events

    def events_of(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.webhooks.events if e["type"] == type_]

    async def execute(
        self,
        op: Operation,
        *,
        api_key: str = "",
        idempotency_key: str | None = None,
        fingerprint: str = "",
    ) -> Outcome:
        """Run one API operation atomically, honouring an idempotency key if given."""
        async with self.lock:
            await self._ensure_loaded()
            if idempotency_key:
                stored = self.idempotency.lookup(api_key, idempotency_key, fingerprint)
                if stored is not None:
                    return Outcome(stored.status, stored.body, replayed=True)
            outcome = self._run(op)
            key = None
            if idempotency_key:
                stored = StoredResponse(fingerprint, outcome.status, outcome.body, self.store.now())
                if self.idempotency.save(api_key, idempotency_key, stored):
                    key = (api_key, idempotency_key, stored)
            await self._commit(key)
        return outcome

    async def tick(self) -> list[str]:
        """Settle due balance transactions, close due disputes, move due payouts now; the ids
        of the balance transactions settled (``balance.available`` if any)."""
        async with self.lock:
            await self._ensure_loaded()
            settled = self.store.settle_due()
            disputes.decide_due(self.store, self.settings.dispute_decision_seconds)
            payouts.advance_due(self.store)
            await self._commit(None)
            return settled

    async def _ensure_loaded(self) -> None:
        """Memory from the database, on first use and after a failed commit."""
        if self._loaded:
            return
        self.store.load(await self.db.load_objects())
        since = self.store.now() - self.idempotency.ttl_seconds
        self.idempotency.restore(await self.db.load_keys(since))
        self._loaded = True

    async def _commit(self, key: tuple[str, str, StoredResponse] | None) -> None:
        """Write the operation's changes, then queue its webhooks; on failure forget both."""
        changed, events = self.store.take_touched(), self._unsent
        self._unsent = []
        if changed or key is not None:
            expire = key[2].stored_at - self.idempotency.ttl_seconds if key else None
            try:
                await self.db.save(changed, key, expire_before=expire)
            except BaseException:
                self._loaded = False  # memory is ahead of the database: reload next time
                raise
        for type_, obj in events:
            self.webhooks.emit(type_, obj)

    async def flush_webhooks(self) -> None:
        """Wait until every emitted event is delivered or has exhausted its retries."""
        await self.webhooks.flush()

    deliver_pending = flush_webhooks

    async def start(self) -> None:
        """Create the tables, load the state, start the settlement loop (idempotent)."""
        await self.db.create_tables()
        async with self.lock:
            await self._ensure_loaded()
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())

    async def aclose(self) -> None:
        """Stop background work: settlement loop, webhook deliveries, hung requests."""
        self.faults.timeout = False
        if self._ticker is not None:
            await cancel_and_wait(self._ticker)
            self._ticker = None
        await self.webhooks.aclose()
        async with self.lock:
            self._loaded = False  # a later call reloads (the database may have moved on)
            await self.db.aclose()

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: object = None) -> AsyncIterator[None]:
        """For ``FastAPI(lifespan=...)``; call it from the parent's lifespan when mounted."""
        await self.start()
        try:
            yield
        finally:
            await self.aclose()

    def _emit(self, type_: str, obj: dict[str, Any]) -> None:
        self._unsent.append((type_, obj))

    def _run(self, op: Operation) -> Outcome:
        try:
            return Outcome(200, op(self.store))
        except StripeError as exc:
            return Outcome(exc.status, exc.body())
        except BaseException:
            # A bug half-way through an operation: drop its effects from memory.
            self.store.take_touched()
            self._unsent = []
            self._loaded = False
            raise

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval_seconds)
            try:
                await self.tick()
            except Exception:
                log.exception("sandbox.tick_failed")
