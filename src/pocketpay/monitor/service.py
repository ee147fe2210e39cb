"""The monitor's engine: poll, update the picture, run the alert rules, record and deliver.

``poll_once`` is the unit of work (tests call it directly; the loop calls it every interval).
Polls never overlap (a lock), and delivery never holds up polling in the loop: notices are
handed to a chain of delivery tasks that keeps their order, and ``flush`` waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import structlog

from pocketpay.kit.clock import Clock
from pocketpay.kit.tasks import cancel_and_wait
from pocketpay.monitor.channels import Notifier
from pocketpay.monitor.config import effective_poll_timeout, targets_from_settings
from pocketpay.monitor.metrics import ALERTS_OPEN, COMPONENT_READY, POLL_DURATION
from pocketpay.monitor.poller import Poller, PollResult
from pocketpay.monitor.rules import (
    DEAD_LETTERS,
    FLAPPING_SUFFIX,
    LEDGER_LAG,
    NOT_READY,
    PSP_ERROR_RATE,
    STUCK_ATTEMPTS,
    AlertRules,
    Notice,
    Observation,
    Thresholds,
)
from pocketpay.monitor.status import (
    ComponentState,
    Signals,
    lag_document,
    lag_high,
    overall_status,
    psp_document,
    psp_error_rate,
    psp_high,
)
from pocketpay.monitor.store import AlertRecord, AlertStore, Delivery
from pocketpay.settings import MonitorSettings

log = structlog.get_logger(__name__)

MAX_PENDING_DELIVERIES = 64  # batches; beyond this, channels are hopelessly behind
STATUS_ALERTS = 20


@dataclass(frozen=True)
class _Batch:
    items: list[tuple[AlertRecord, Notice]]


def dead_letters_observation(r: PollResult) -> Observation:
    """From the component's ``dead_letters`` readiness check (``kit.health``): bad while it is
    degraded (unreplayed dead letters), good when ok; no data when the component does not
    report it, cannot be reached, or the check itself failed (that is not a verdict)."""
    view = r.checks.get(DEAD_LETTERS)
    detail = r.details.get(DEAD_LETTERS)
    count = detail.get("count") if isinstance(detail, dict) else None
    bad: bool | None = None
    if view is not None and view.result in ("ok", "degraded"):
        bad = view.result == "degraded"
    text = f"{count} unreplayed dead letters (pocketpay dlq list)" if bad and count else ""
    return Observation(r.component, DEAD_LETTERS, bad, text)


def stuck_attempts_observation(r: PollResult) -> Observation:
    """From payments' ``stuck_attempts`` readiness check: bad while it is degraded (attempts
    the reconciler gave up on), good when ok; no data when the component does not report it,
    cannot be reached, or the check itself failed."""
    view = r.checks.get(STUCK_ATTEMPTS)
    detail = r.details.get(STUCK_ATTEMPTS)
    count = detail.get("stuck") if isinstance(detail, dict) else None
    bad: bool | None = None
    if view is not None and view.result in ("ok", "degraded"):
        bad = view.result == "degraded"
    text = f"{count} stuck PSP attempts (GET /api/v1/admin/stuck)" if bad and count else ""
    return Observation(r.component, STUCK_ATTEMPTS, bad, text)


class Monitor:
    def __init__(
        self,
        settings: MonitorSettings,
        clock: Clock,
        *,
        http: httpx.AsyncClient,
        notifier: Notifier,
        store: AlertStore,
    ) -> None:
        self.settings = settings
        self.clock = clock
        targets = targets_from_settings(settings)
        self.poller = Poller(targets, http, clock, timeout_seconds=effective_poll_timeout(settings))
        self.rules = AlertRules(Thresholds.from_settings(settings))
        self.notifier = notifier
        self.store = store
        self.components = {t.name: ComponentState(t.name, t.base_url) for t in targets}
        self.signals = Signals()
        self.last_poll_at: datetime | None = None
        self.polls = 0
        self.dropped_deliveries = 0
        self.version = 0
        self._updated = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tail: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self.loop_error: str | None = None

    # -- polling ---------------------------------------------------------------------------

    async def poll_once(self, *, wait_delivery: bool = True) -> list[Notice]:
        """Poll every target once, apply the rules, record alerts and send notices."""
        async with self._lock:
            with POLL_DURATION.time():
                results = await self.poller.poll_all()
            now = self.clock.now()
            notices = self._absorb(results, now)
            batch = _Batch([(await self.store.apply(n), n) for n in notices])
            ALERTS_OPEN.set(len(self.store.open_alerts()))
            self._publish()
        if batch.items:
            task = self._dispatch(batch)
            if wait_delivery:
                await asyncio.wait([task])
        return notices

    def _absorb(self, results: list[PollResult], now: datetime) -> list[Notice]:
        for result in results:
            self.components[result.component].update(result)
            self.signals.update(result)
            COMPONENT_READY.labels(result.component).set(1 if result.is_ready else 0)
        self.last_poll_at, self.polls = now, self.polls + 1
        return self.rules.evaluate(self.observations(results), now)

    def observations(self, results: list[PollResult]) -> Iterator[Observation]:
        s = self.settings
        for r in results:
            detail = r.error or ""
            yield Observation(r.component, NOT_READY, not r.is_ready, detail)
            yield dead_letters_observation(r)
            yield stuck_attempts_observation(r)
            if r.backlog is not None:
                b = r.backlog
                yield Observation(
                    r.component,
                    LEDGER_LAG,
                    lag_high(b, s),
                    f"oldest pending event {b.oldest_age_seconds:.0f}s old, "
                    f"{b.pending} pending (threshold {s.lag_threshold_seconds:g}s)",
                )
            if r.provider is not None:
                p = r.provider
                yield Observation(
                    r.component,
                    PSP_ERROR_RATE,
                    psp_high(p, s),
                    f"{psp_error_rate(p):.0%} of {p.calls_5m} PSP calls failed "
                    f"(threshold {s.psp_error_rate_threshold:.0%}, "
                    f"breaker {p.breaker})",
                )

    # -- delivery --------------------------------------------------------------------------

    def _dispatch(self, batch: _Batch) -> asyncio.Task[None]:
        if len(self._pending) >= MAX_PENDING_DELIVERIES:
            self.dropped_deliveries += len(batch.items)
            log.error("monitor.delivery.dropped", notices=len(batch.items))
            batch = _Batch([])
        task = asyncio.create_task(self._deliver_after(self._tail, batch))
        self._tail = task
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def _deliver_after(self, previous: asyncio.Task[None] | None, batch: _Batch) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # keep notices in order, whatever became of it
        for record, notice in batch.items:
            errors = await self.notifier.notify(notice)
            for channel, error in errors.items():
                delivery = Delivery(notice.kind, channel, error is None, self.clock.now(), error)
                await self.store.record_delivery(record, delivery)
        if batch.items:
            self._publish()

    async def flush(self) -> None:
        """Wait until every notice handed out so far has been delivered (or given up on)."""
        if self._tail is not None:
            await asyncio.wait([self._tail])

    # -- background loop -------------------------------------------------------------------

    async def restore(self) -> None:
        """Load alert history; alerts still open are resumed so they resolve when due."""
        for record in await self.store.load():
            if not record.rule.endswith(FLAPPING_SUFFIX):
                self.rules.restore(
                    record.component, record.rule, record.opened_at, self.clock.now()
                )
        ALERTS_OPEN.set(len(self.store.open_alerts()))

    def start(self) -> None:
        assert self._loop_task is None, "the poller is already running"
        self._loop_task = asyncio.create_task(self._run(), name="monitor-poller")

    async def stop(self, *, grace_seconds: float = 5.0) -> None:
        if self._loop_task is not None:
            await cancel_and_wait(self._loop_task)
            self._loop_task = None
        if self._pending:
            _, late = await asyncio.wait(set(self._pending), timeout=grace_seconds)
            for task in late:
                task.cancel()

    @property
    def running(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    async def _run(self) -> None:
        interval = self.settings.interval_seconds
        while True:
            started = self.clock.monotonic()
            try:
                await self.poll_once(wait_delivery=False)
                self.loop_error = None
            except Exception as exc:  # one bad poll must not end monitoring
                self.loop_error = f"{type(exc).__name__}: {exc}"[:300]
                log.exception("monitor.poll_failed")
            elapsed = self.clock.monotonic() - started
            await self.clock.sleep(max(0.0, interval - elapsed))

    # -- views -----------------------------------------------------------------------------

    def _publish(self) -> None:
        self.version += 1
        event, self._updated = self._updated, asyncio.Event()
        event.set()

    async def wait_for_update(self, seen: int, timeout_seconds: float) -> int:
        """The current version, once it differs from ``seen`` or the timeout has passed."""
        if self.version == seen:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_seconds):
                    await self._updated.wait()
        return self.version

    def status(self) -> dict[str, Any]:
        s = self.settings
        lag, psp = lag_document(self.signals, s), psp_document(self.signals, s)
        high = any(d is not None and d["status"] == "high" for d in (lag, psp))
        components = list(self.components.values())
        return {
            "status": overall_status(components, high),
            "generated_at": self.clock.now().isoformat(),
            "last_poll_at": self.last_poll_at.isoformat() if self.last_poll_at else None,
            "interval_seconds": s.interval_seconds,
            "components": {c.name: c.to_dict() for c in components},
            "ledger_lag": lag,
            "psp": psp,
            "alerts_open": len(self.store.open_alerts()),
            "channels": self.channel_status(),
            "dropped_deliveries": self.dropped_deliveries,
        }

    def channel_status(self) -> dict[str, Any]:
        return {
            name: {"failing": stats.failing, **stats.to_dict()}
            for name, stats in self.notifier.stats.items()
        }
