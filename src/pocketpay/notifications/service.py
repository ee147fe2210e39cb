"""Queries and views of notifications' own tables (the API's building blocks). Functions take
the caller's connection; the entrypoint owns the transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from pocketpay.kit.clock import iso
from pocketpay.kit.errors import NotFound
from pocketpay.kit.listing import Page, fetch_page
from pocketpay.notifications.models import attempts, deliveries, endpoints, preferences


def endpoint_view(row: Row[Any] | Any, *, secret: bool = False) -> dict[str, Any]:
    view = {
        "id": row.id,
        "url": row.url,
        "description": row.description,
        "events": list(row.events),
        "status": row.status,
        "disabled_reason": row.disabled_reason,
        "failing_since": iso(row.failing_since),
        "previous_secret_expires_at": iso(row.previous_expires_at),
        "created_at": iso(row.created_at),
    }
    return view | {"secret": row.secret} if secret else view


async def get_endpoint(
    conn: AsyncConnection, user_id: str, endpoint_id: str, *, lock: bool = False
) -> Row[Any]:
    """The user's endpoint; another user's is as absent as an unknown one (404)."""
    q = select(endpoints).where(endpoints.c.id == endpoint_id, endpoints.c.user_id == user_id)
    if lock and conn.dialect.name == "postgresql":
        q = q.with_for_update()
    row = (await conn.execute(q)).first()
    if row is None:
        raise NotFound(f"No webhook endpoint {endpoint_id} of yours.")
    return row


async def list_endpoints(
    conn: AsyncConnection, user_id: str, page: Page
) -> tuple[list[Row[Any]], bool]:
    e = endpoints.c
    scope = select(endpoints).where(e.user_id == user_id)
    return await fetch_page(conn, scope, [], [e.seq], e.id, e.created_at, page, "webhook endpoint")


async def get_preferences(conn: AsyncConnection, user_id: str) -> dict[str, Any]:
    row = (await conn.execute(select(preferences).where(preferences.c.user_id == user_id))).first()
    if row is None:
        return {"email": True, "slack_webhook_url": None}
    return {"email": row.email, "slack_webhook_url": row.slack_webhook_url}


async def delivery_views(conn: AsyncConnection, rows: list[Row[Any]]) -> list[dict[str, Any]]:
    """The deliveries with their attempts, oldest attempt first."""
    ids = [r.id for r in rows]
    log: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    found = await conn.execute(
        select(attempts).where(attempts.c.delivery_id.in_(ids)).order_by(attempts.c.seq)
    )
    for a in found:
        log[a.delivery_id].append(
            {
                "attempted_at": iso(a.attempted_at),
                "ok": a.ok,
                "status_code": a.status_code,
                "latency_ms": a.latency_ms,
                "response_excerpt": a.response_excerpt,
                "error": a.error,
            }
        )
    return [
        {
            "id": r.id,
            "endpoint_id": r.endpoint_id,
            "event_id": r.event_id,
            "event_type": r.event_type,
            "status": r.status,
            "attempt_count": r.attempts,
            "next_attempt_at": iso(r.next_attempt_at) if r.status == "pending" else None,
            "created_at": iso(r.created_at),
            "attempts": log[r.id],
        }
        for r in rows
    ]


async def list_deliveries(
    conn: AsyncConnection, endpoint_id: str, page: Page
) -> tuple[list[Row[Any]], bool]:
    d = deliveries.c
    scope = select(deliveries).where(d.endpoint_id == endpoint_id)
    return await fetch_page(conn, scope, [], [d.seq], d.id, d.created_at, page, "delivery")


async def get_delivery(conn: AsyncConnection, endpoint_id: str, delivery_id: str) -> Row[Any]:
    row = (
        await conn.execute(
            select(deliveries).where(
                deliveries.c.id == delivery_id, deliveries.c.endpoint_id == endpoint_id
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"No delivery {delivery_id} of endpoint {endpoint_id}.")
    return row
