"""What notifications answers (``NotificationsClient``): preferences, webhook endpoints,
their deliveries. The object other components call directly in one process; its routes
(``notifications.routes``) serve it over HTTP at scale."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.clock import Clock
from pocketpay.kit.db import insert_ignore, ping, single_statements
from pocketpay.kit.ids import derive_id
from pocketpay.kit.listing import Page, next_cursor
from pocketpay.notifications import service, webhooks
from pocketpay.notifications.errors import EndpointDisabled, EndpointLimit
from pocketpay.notifications.models import attempts, deliveries, endpoints, preferences
from pocketpay.notifications.schemas import (
    Delivery,
    DeliveryList,
    Endpoint,
    EndpointCreate,
    EndpointDeleted,
    EndpointList,
    EndpointUpdate,
    EndpointWithSecret,
    Preferences,
    PreferencesIn,
    SecretRotate,
)
from pocketpay.notifications.targets import check_target
from pocketpay.settings import NotificationsSettings


class NotificationsApi:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        settings: NotificationsSettings,
        wake_sender: Callable[[], None],
    ) -> None:
        self._engine = engine
        self._reads = single_statements(engine)
        self._clock = clock
        self._s = settings
        self._wake = wake_sender

    async def ping(self) -> float:
        return await ping(self._engine)

    async def _check(self, url: str) -> None:
        await check_target(url, allow_private=self._s.allow_private_targets)

    # -- preferences ----------------------------------------------------------------------

    async def get_preferences(self, user_id: str) -> Preferences:
        async with self._reads.connect() as conn:
            return Preferences.model_validate(await service.get_preferences(conn, user_id))

    async def put_preferences(self, user_id: str, body: dict[str, Any]) -> Preferences:
        req = PreferencesIn.model_validate(body)
        if req.slack_webhook_url is not None:
            await self._check(req.slack_webhook_url)
        values = req.model_dump() | {"updated_at": self._clock.now()}
        async with self._engine.begin() as conn:
            p = preferences.c
            res = await conn.execute(update(preferences).where(p.user_id == user_id).values(values))
            if res.rowcount == 0:
                await conn.execute(insert_ignore(conn, preferences), {"user_id": user_id, **values})
        return Preferences.model_validate(req.model_dump())

    # -- endpoints ------------------------------------------------------------------------

    async def create_endpoint(
        self, user_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> EndpointWithSecret:
        """A new endpoint with a new secret. Its id derives from the user and the key, so a
        retried request answers the endpoint the first one made (with its secret)."""
        req = EndpointCreate.model_validate(body)
        events = webhooks.check_events(req.events)
        await self._check(req.url)
        now = self._clock.now()
        endpoint_id = derive_id("we", user_id, idempotency_key)
        async with self._engine.begin() as conn:
            count = (
                await conn.execute(select(func.count()).where(endpoints.c.user_id == user_id))
            ).scalar_one()
            if count >= self._s.max_endpoints_per_user:
                raise EndpointLimit(
                    f"{count} webhook endpoints: delete one first "
                    f"(at most {self._s.max_endpoints_per_user})."
                )
            await conn.execute(
                insert_ignore(conn, endpoints),
                {
                    "id": endpoint_id,
                    "user_id": user_id,
                    "url": req.url,
                    "description": req.description,
                    "events": events,
                    "status": "enabled",
                    "secret": webhooks.new_secret(),
                    "previous_secret": None,
                    "previous_expires_at": None,
                    "failing_since": None,
                    "disabled_reason": None,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            row = await service.get_endpoint(conn, user_id, endpoint_id)
        return EndpointWithSecret.model_validate(service.endpoint_view(row, secret=True))

    async def list_endpoints(self, user_id: str, page: Page) -> EndpointList:
        async with self._reads.connect() as conn:
            rows, more = await service.list_endpoints(conn, user_id, page)
        data = [Endpoint.model_validate(service.endpoint_view(r)) for r in rows]
        cursor = next_cursor(page, [e.id for e in data], more)
        return EndpointList(data=data, has_more=more, next_cursor=cursor)

    async def get_endpoint(self, user_id: str, endpoint_id: str) -> Endpoint:
        async with self._reads.connect() as conn:
            row = await service.get_endpoint(conn, user_id, endpoint_id)
        return Endpoint.model_validate(service.endpoint_view(row))

    async def update_endpoint(
        self, user_id: str, endpoint_id: str, body: dict[str, Any]
    ) -> Endpoint:
        req = EndpointUpdate.model_validate(body)
        values: dict[str, Any] = {"updated_at": self._clock.now()}
        if req.url is not None:
            await self._check(req.url)
            values["url"] = req.url
        if req.events is not None:
            values["events"] = webhooks.check_events(req.events)
        if req.description is not None:
            values["description"] = req.description
        if req.enabled is not None:
            values |= {
                "status": "enabled" if req.enabled else "disabled",
                "disabled_reason": None if req.enabled else "disabled by you",
                "failing_since": None,
            }
        async with self._engine.begin() as conn:
            await service.get_endpoint(conn, user_id, endpoint_id, lock=True)
            await conn.execute(
                update(endpoints).where(endpoints.c.id == endpoint_id).values(values)
            )
            row = await service.get_endpoint(conn, user_id, endpoint_id)
        return Endpoint.model_validate(service.endpoint_view(row))

    async def delete_endpoint(self, user_id: str, endpoint_id: str) -> EndpointDeleted:
        """Gone with its delivery log; messages still waiting for it are dropped."""
        async with self._engine.begin() as conn:
            await service.get_endpoint(conn, user_id, endpoint_id, lock=True)
            mine = select(deliveries.c.id).where(deliveries.c.endpoint_id == endpoint_id)
            await conn.execute(delete(attempts).where(attempts.c.delivery_id.in_(mine)))
            await conn.execute(delete(deliveries).where(deliveries.c.endpoint_id == endpoint_id))
            await conn.execute(delete(endpoints).where(endpoints.c.id == endpoint_id))
        return EndpointDeleted(id=endpoint_id)

    async def rotate_secret(
        self, user_id: str, endpoint_id: str, body: dict[str, Any]
    ) -> EndpointWithSecret:
        """A new secret, shown once; the old one keeps signing too for the overlap."""
        req = SecretRotate.model_validate(body)
        hours = self._s.secret_overlap_hours if req.overlap_hours is None else req.overlap_hours
        now = self._clock.now()
        async with self._engine.begin() as conn:
            old = await service.get_endpoint(conn, user_id, endpoint_id, lock=True)
            overlap = hours > 0
            await conn.execute(
                update(endpoints)
                .where(endpoints.c.id == endpoint_id)
                .values(
                    secret=webhooks.new_secret(),
                    previous_secret=old.secret if overlap else None,
                    previous_expires_at=now + timedelta(hours=hours) if overlap else None,
                    updated_at=now,
                )
            )
            row = await service.get_endpoint(conn, user_id, endpoint_id)
        return EndpointWithSecret.model_validate(service.endpoint_view(row, secret=True))

    # -- deliveries -----------------------------------------------------------------------

    async def list_deliveries(self, user_id: str, endpoint_id: str, page: Page) -> DeliveryList:
        async with self._reads.connect() as conn:
            await service.get_endpoint(conn, user_id, endpoint_id)
            rows, more = await service.list_deliveries(conn, endpoint_id, page)
            views = await service.delivery_views(conn, rows)
        data = [Delivery.model_validate(v) for v in views]
        cursor = next_cursor(page, [d.id for d in data], more)
        return DeliveryList(data=data, has_more=more, next_cursor=cursor)

    async def redeliver(self, user_id: str, endpoint_id: str, delivery_id: str) -> Delivery:
        """Send the delivery again now, same ``webhook-id``, with a new retry window."""
        now = self._clock.now()
        async with self._engine.begin() as conn:
            ep = await service.get_endpoint(conn, user_id, endpoint_id, lock=True)
            if ep.status != "enabled":
                raise EndpointDisabled("Enable the endpoint first (POST it with enabled: true).")
            await service.get_delivery(conn, endpoint_id, delivery_id)
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id)
                .values(
                    status="pending", next_attempt_at=now, first_attempt_at=None, updated_at=now
                )
            )
            row = await service.get_delivery(conn, endpoint_id, delivery_id)
            (view,) = await service.delivery_views(conn, [row])
        self._wake()
        return Delivery.model_validate(view)
