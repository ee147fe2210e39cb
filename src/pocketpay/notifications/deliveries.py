"""The delivery job: sends due messages (webhooks, emails, Slack posts) in three phases.

1. Claim (one transaction): due pending rows, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL so
   several processes take disjoint rows; each claimed row's ``next_attempt_at`` moves past
   the send (a lease), so the row is not due again while it is being sent.
2. Send, outside any transaction (a slow receiver holds no lock or connection).
3. Record (one transaction): the attempt, then success, the next retry (exponential backoff
   with jitter) or, past the retry window, failure. An endpoint that has failed without a
   success for ``disable_after_seconds`` is disabled, and its owner emailed (a delivery of
   its own, sent by this job).

A crash between 2 and 3 leaves the row claimed: once the lease ends it is sent again, so a
message may arrive twice, never zero times. A webhook carries the same ``webhook-id`` every
time, so its receiver can drop the copy.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from prometheus_client import Counter, Gauge
from sqlalchemy import ColumnElement, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pocketpay.kit.clock import Clock, aware, iso
from pocketpay.kit.failpoints import failpoint
from pocketpay.kit.ids import derive_id
from pocketpay.kit.outbox import OutboxRelay, add_event
from pocketpay.notifications import webhooks
from pocketpay.notifications.email import EmailFailed, EmailSender
from pocketpay.notifications.models import attempts, contacts, deliveries, endpoints, outbox
from pocketpay.notifications.slack import post_slack
from pocketpay.notifications.targets import post_guarded
from pocketpay.notifications.templates import render
from pocketpay.settings import NotificationsSettings

log = structlog.get_logger(__name__)

DELIVERIES = Counter(
    "pocketpay_notification_deliveries_total",
    "Notification attempts by channel and outcome (succeeded | retrying | failed)",
    ["channel", "outcome"],
)
QUEUE_AGE = Gauge(
    "pocketpay_notification_queue_age_seconds",
    "How long the oldest due notification has been waiting to be sent",
)
EXCERPT_CHARS = 500
# A claimed message is due again this long after its send could have ended (a crash).
LEASE_EXTRA_SECONDS = 60.0


@dataclass
class Outcome:
    ok: bool
    status_code: int | None = None
    excerpt: str = ""
    error: str | None = None
    latency_ms: int = 0
    final: bool = False  # no retry can help (a mailbox the server refuses)


class Sender:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        settings: NotificationsSettings,
        email: EmailSender,
        http: httpx.AsyncClient,
        relay: OutboxRelay,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._s = settings
        self._email = email
        self._http = http
        self._relay = relay

    async def run_due(self) -> int:
        """One pass: claim, send, record. Returns how many messages it handled."""
        now = self._clock.now()
        claimed = await self._claim(now)
        await self._set_queue_age(now)
        if not claimed:
            return 0
        outcomes = await asyncio.gather(*(self._send(row, ep, now) for row, ep in claimed))
        await failpoint("notifications.delivery.after_send")  # the window that resends
        async with self._engine.begin() as conn:
            for (row, ep), outcome in zip(claimed, outcomes, strict=True):
                await self._record(conn, row, ep, outcome, now)
        self._relay.notify()
        return len(claimed)

    async def _claim(self, now: datetime) -> list[tuple[Any, Any]]:
        d = deliveries
        q = select(d).where(*_due(now)).order_by(d.c.next_attempt_at).limit(self._s.delivery_batch)
        if self._engine.dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        lease = now + timedelta(seconds=self._s.webhook_timeout_seconds + LEASE_EXTRA_SECONDS)
        async with self._engine.begin() as conn:
            rows = list((await conn.execute(q)).all())
            if not rows:
                return []
            ids = [r.id for r in rows]
            await conn.execute(update(d).where(d.c.id.in_(ids)).values(next_attempt_at=lease))
            ep_ids = {r.endpoint_id for r in rows if r.endpoint_id}
            eps = await conn.execute(select(endpoints).where(endpoints.c.id.in_(ep_ids)))
            by_id = {e.id: e for e in eps}
        return [(r, by_id.get(r.endpoint_id)) for r in rows]

    async def _set_queue_age(self, now: datetime) -> None:
        async with self._engine.connect() as conn:
            q = select(func.min(deliveries.c.next_attempt_at)).where(*_due(now))
            oldest = (await conn.execute(q)).scalar()
        QUEUE_AGE.set(0.0 if oldest is None else (now - aware(oldest)).total_seconds())

    async def _send(self, row: Any, ep: Any, now: datetime) -> Outcome:
        started = time.perf_counter()
        try:
            outcome = await self._deliver(row, ep, now)
        except Exception as exc:  # any failure of one message is that message's attempt
            final = isinstance(exc, EmailFailed) and exc.permanent
            error = f"{type(exc).__name__}: {exc}"[:EXCERPT_CHARS]
            outcome = Outcome(False, error=error, final=final)
        outcome.latency_ms = round((time.perf_counter() - started) * 1000)
        return outcome

    async def _deliver(self, row: Any, ep: Any, now: datetime) -> Outcome:
        allow = self._s.allow_private_targets
        if row.channel == "email":
            p = row.payload
            await self._email.send(row.target, p["subject"], p["text"], p["html"])
            return Outcome(True)
        if row.channel == "slack":
            answer = await post_slack(
                self._http, row.target, row.payload["text"], allow_private=allow
            )
            return _answer(answer)
        if ep is None or ep.status != "enabled":
            return Outcome(False, error="the endpoint was deleted or disabled")
        content = webhooks.body(row.event_type, row.payload["occurred_at"], row.payload["data"])
        answer = await post_guarded(
            self._http,
            ep.url,
            content=content,
            headers=webhooks.headers(row.id, now, content, _signing_secrets(ep, now)),
            allow_private=allow,
            timeout_seconds=self._s.webhook_timeout_seconds,
        )
        return _answer(answer)

    async def _record(
        self, conn: AsyncConnection, row: Any, ep: Any, out: Outcome, now: datetime
    ) -> None:
        await conn.execute(
            insert(attempts).values(
                delivery_id=row.id,
                attempted_at=now,
                ok=out.ok,
                status_code=out.status_code,
                latency_ms=out.latency_ms,
                response_excerpt=out.excerpt[:EXCERPT_CHARS],
                error=out.error[:EXCERPT_CHARS] if out.error else None,
            )
        )
        first = aware(row.first_attempt_at) if row.first_attempt_at else now
        values: dict[str, Any] = {"attempts": row.attempts + 1, "first_attempt_at": first}
        gone = row.channel == "webhook" and (ep is None or ep.status != "enabled")
        if out.ok:
            values |= {"status": "succeeded", "next_attempt_at": None}
        elif gone or out.final or (now - first).total_seconds() >= self._s.retry_window_seconds:
            values |= {"status": "failed", "next_attempt_at": None}
        else:
            wait = webhooks.retry_delay_seconds(row.attempts + 1, self._s.webhook_retry_seconds)
            values["next_attempt_at"] = now + timedelta(seconds=wait)
        outcome = values.get("status", "retrying")
        DELIVERIES.labels(row.channel, outcome).inc()
        await conn.execute(
            update(deliveries).where(deliveries.c.id == row.id).values(updated_at=now, **values)
        )
        if row.channel == "webhook" and not gone:
            await self._endpoint_health(conn, ep, out.ok, now)

    async def _endpoint_health(
        self, conn: AsyncConnection, ep: Any, ok: bool, now: datetime
    ) -> None:
        e = endpoints.c
        if ok:
            await conn.execute(update(endpoints).where(e.id == ep.id).values(failing_since=None))
            return
        since = (
            await conn.execute(
                update(endpoints)
                .where(e.id == ep.id)
                .values(failing_since=func.coalesce(e.failing_since, now))
                .returning(e.failing_since, e.status)
            )
        ).one()
        failing = (now - aware(since.failing_since)).total_seconds()
        if since.status == "enabled" and failing >= self._s.disable_after_seconds:
            await self._disable(conn, ep, now)

    async def _disable(self, conn: AsyncConnection, ep: Any, now: datetime) -> None:
        days = self._s.disable_after_seconds / 86400
        reason = f"every delivery failed for {days:g} days"
        await conn.execute(
            update(endpoints)
            .where(endpoints.c.id == ep.id)
            .values(status="disabled", disabled_reason=reason, updated_at=now)
        )
        data = {"endpoint_id": ep.id, "url": ep.url, "reason": reason, "owner_id": ep.user_id}
        event_id = derive_id("evt", ep.id, "disabled", iso(now) or "")
        await add_event(
            conn, outbox, "notifications.endpoint.disabled", data, now, event_id=event_id
        )
        log.warning("notifications.endpoint_disabled", endpoint_id=ep.id, url=ep.url)
        await self._email_owner(conn, ep.user_id, event_id, data, now)

    async def _email_owner(
        self,
        conn: AsyncConnection,
        user_id: str,
        event_id: str,
        data: dict[str, Any],
        now: datetime,
    ) -> None:
        """Tell the owner by email whatever their preferences: it is about their setup, not
        their money, and nothing else would tell them."""
        address = (
            await conn.execute(select(contacts.c.email).where(contacts.c.user_id == user_id))
        ).scalar_one_or_none()
        rendered = render("notifications.endpoint.disabled", data, user_id=user_id)
        if address is None or rendered is None:
            log.warning("notifications.owner_not_emailed", user_id=user_id, event_id=event_id)
            return
        await conn.execute(
            insert(deliveries).values(
                id=derive_id("msg", event_id, user_id, f"email:{address}"),
                channel="email",
                user_id=user_id,
                endpoint_id=None,
                target=address,
                event_id=event_id,
                event_type="notifications.endpoint.disabled",
                payload={"subject": rendered.subject, "text": rendered.text, "html": rendered.html},
                status="pending",
                attempts=0,
                next_attempt_at=now,
                first_attempt_at=None,
                created_at=now,
                updated_at=now,
            )
        )


def _due(now: datetime) -> list[ColumnElement[bool]]:
    """Pending messages whose time has come. A disabled endpoint's wait (they resume, within
    their retry window, if it is enabled again)."""
    d = deliveries.c
    enabled = select(endpoints.c.id).where(endpoints.c.status == "enabled")
    return [
        d.status == "pending",
        d.next_attempt_at <= now,
        or_(d.endpoint_id.is_(None), d.endpoint_id.in_(enabled)),
    ]


def _signing_secrets(ep: Any, now: datetime) -> list[str]:
    """The current secret, and the previous one while its overlap lasts."""
    out = [ep.secret]
    if ep.previous_secret and ep.previous_expires_at and aware(ep.previous_expires_at) > now:
        out.append(ep.previous_secret)
    return out


def _answer(response: httpx.Response) -> Outcome:
    ok = 200 <= response.status_code < 300
    return Outcome(ok, status_code=response.status_code, excerpt=response.text[:EXCERPT_CHARS])
