"""From domain events to messages: the consumer claims each event in the inbox and, in the
same transaction, writes the deliveries it calls for (webhooks of the user's endpoints that
want the type, an email and a Slack post per the user's preferences). Nothing is sent here:
the delivery job sends after the commit, so a redelivered event writes nothing twice and a
slow receiver never holds a transaction open."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pocketpay.kit.bus import Envelope
from pocketpay.kit.clock import Clock, iso
from pocketpay.kit.db import insert_ignore
from pocketpay.kit.ids import derive_id
from pocketpay.kit.outbox import claim_inbox
from pocketpay.notifications.models import contacts, deliveries, endpoints, inbox, preferences
from pocketpay.notifications.templates import render
from pocketpay.notifications.webhooks import wants

log = structlog.get_logger(__name__)

DURABLE = "notifications"
SUBJECTS = ["payments.>", "ledger.>", "billing.>", "gateway.>"]
USER_CREATED = "gateway.user.created"
# The data fields that name the users an event concerns: payments' and billing's owner, a
# transfer's two sides.
USER_FIELDS = ("owner_id", "sender_id", "recipient_id")


def users_of(env: Envelope) -> list[str]:
    found = (env.data.get(f) for f in USER_FIELDS)
    return sorted({u for u in found if isinstance(u, str) and u.startswith("usr_")})


class NotificationsConsumer:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def __call__(self, env: Envelope) -> bool:
        """Handle one event; True when it wrote deliveries (the caller wakes the sender)."""
        users = users_of(env)
        if env.type != USER_CREATED and not users:
            return False  # system events (no user): nothing to tell anyone
        now = self._clock.now()
        async with self._engine.begin() as conn:
            if not await claim_inbox(conn, inbox, env.id, env.type, now):
                return False
            if env.type == USER_CREATED:
                await save_contact(conn, env.data["user_id"], env.data["email"], now)
                return False
            written = [await enqueue(conn, env, user, now) for user in users]
        return any(written)


async def save_contact(conn: AsyncConnection, user_id: str, email: str, now: datetime) -> None:
    values = {"email": email, "updated_at": now}
    res = await conn.execute(update(contacts).where(contacts.c.user_id == user_id).values(values))
    if res.rowcount == 0:
        await conn.execute(insert_ignore(conn, contacts), {"user_id": user_id, **values})


async def enqueue(conn: AsyncConnection, env: Envelope, user_id: str, now: datetime) -> bool:
    """The deliveries ``env`` calls for to ``user_id``; True if there is any. Delivery ids
    derive from the event and the target, so the rows are written once whatever happens."""
    base = {
        "user_id": user_id,
        "event_id": env.id,
        "event_type": env.type,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "first_attempt_at": None,
        "created_at": now,
        "updated_at": now,
    }
    rows: list[dict[str, Any]] = []
    eps = await conn.execute(
        select(endpoints.c.id, endpoints.c.url, endpoints.c.events).where(
            endpoints.c.user_id == user_id, endpoints.c.status == "enabled"
        )
    )
    payload = {"occurred_at": iso(env.occurred_at), "data": env.data}
    for ep in eps:
        if wants(ep.events, env.type):
            rows.append(_row(base, "webhook", ep.url, payload, endpoint_id=ep.id))
    rows += await _personal(conn, env, user_id, base)
    for row in rows:
        await conn.execute(insert_ignore(conn, deliveries), row)
    return bool(rows)


async def _personal(
    conn: AsyncConnection, env: Envelope, user_id: str, base: dict[str, Any]
) -> list[dict[str, Any]]:
    """The email and the Slack post, per the user's preferences (email on by default), for
    the event types that have a template."""
    pref = (await conn.execute(select(preferences).where(preferences.c.user_id == user_id))).first()
    email_on = pref.email if pref is not None else True
    slack = pref.slack_webhook_url if pref is not None else None
    address = None
    if email_on:
        address = (
            await conn.execute(select(contacts.c.email).where(contacts.c.user_id == user_id))
        ).scalar_one_or_none()
    if address is None and slack is None:
        return []
    try:
        rendered = render(env.type, env.data, user_id=user_id)
    except Exception as exc:  # a template that does not fit the data must not stop webhooks
        log.error("notifications.render_failed", event_id=env.id, type=env.type, error=str(exc))
        return []
    if rendered is None:
        return []
    out = []
    if address is not None:
        mail = {"subject": rendered.subject, "text": rendered.text, "html": rendered.html}
        out.append(_row(base, "email", address, mail))
    if slack is not None:
        out.append(_row(base, "slack", slack, {"text": f"*{rendered.subject}*\n{rendered.text}"}))
    return out


def _row(
    base: dict[str, Any],
    channel: str,
    target: str,
    payload: dict[str, Any],
    *,
    endpoint_id: str | None = None,
) -> dict[str, Any]:
    to = endpoint_id or f"{channel}:{target}"
    return base | {
        "id": derive_id("msg", base["event_id"], base["user_id"], to),
        "channel": channel,
        "endpoint_id": endpoint_id,
        "target": target,
        "payload": payload,
    }
