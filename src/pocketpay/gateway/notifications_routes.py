"""The public notifications API: the user's notification preferences, webhook endpoints
(secrets shown once, rotated with an overlap) and their delivery logs. Thin, like
``routes``: authenticate, validate, apply idempotency, call ``NotificationsClient``."""

from __future__ import annotations

from enum import Enum
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from pocketpay.gateway.problems import AUTH, BODY, IDEMPOTENT, LIST, problems
from pocketpay.gateway.route_kit import RouteKit
from pocketpay.kit.errors import Unavailable
from pocketpay.kit.listing import Page
from pocketpay.kit.tokens import Principal
from pocketpay.notifications.client import NotificationsClient
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

TAGS: list[str | Enum] = ["notifications"]
URL_CODES = ("notifications.target_refused", "notifications.target_unresolved")


class _Unavailable:
    """Stands for the client where this deployment runs no notifications component."""

    def __getattr__(self, name: str) -> Any:
        raise Unavailable(
            "This deployment runs no notifications component (POCKETPAY_URLS names none).",
            code="notifications.unavailable",
        )


def notifications_routes(kit: RouteKit) -> None:
    r, gw, principal, once, idem_header = kit.r, kit.gw, kit.principal, kit.once, kit.idem_header
    page_of, object_id = kit.page_of, kit.object_id
    n: NotificationsClient = gw.notifications or _Unavailable()
    endpoint_page = page_of("we", "webhook endpoint")
    delivery_page = page_of("msg", "delivery")

    def endpoint(value: str) -> str:
        return str(object_id(value, "webhook endpoint"))

    @r.get("/notification-preferences", tags=TAGS, responses=problems(*AUTH))
    async def get_notification_preferences(who: Principal = Depends(principal)) -> Preferences:
        """How you are told about your money: email (on by default) and a Slack webhook."""
        return await n.get_preferences(who.user_id)

    @r.put(
        "/notification-preferences",
        tags=TAGS,
        responses=problems(*AUTH, *BODY, *URL_CODES),
    )
    async def put_notification_preferences(
        body: PreferencesIn, who: Principal = Depends(principal)
    ) -> Preferences:
        """Replace your preferences. A Slack URL must reach a public address."""
        return await n.put_preferences(who.user_id, body.model_dump())

    @r.post(
        "/webhook-endpoints",
        status_code=201,
        response_model=EndpointWithSecret,
        tags=TAGS,
        responses=problems(
            *AUTH,
            *BODY,
            *IDEMPOTENT,
            *URL_CODES,
            "notifications.unknown_event_type",
            "notifications.endpoint_limit",
        ),
    )
    async def create_webhook_endpoint(
        request: Request,
        body: EndpointCreate,
        who: Principal = Depends(principal),
        key: str | None = idem_header,
    ) -> JSONResponse:
        """Register a URL to receive the events you choose, signed the Standard Webhooks way.
        The answer carries the signing `secret`, this once only: keep it."""
        data = body.model_dump()
        return await once(
            request, who, key, data, lambda k: n.create_endpoint(who.user_id, k, data), 201
        )

    @r.get("/webhook-endpoints", tags=TAGS, responses=problems(*AUTH, *LIST))
    async def list_webhook_endpoints(
        who: Principal = Depends(principal), page: Page = Depends(endpoint_page)
    ) -> EndpointList:
        return await n.list_endpoints(who.user_id, page)

    @r.get("/webhook-endpoints/{endpoint_id}", tags=TAGS, responses=problems(*AUTH, "not_found"))
    async def get_webhook_endpoint(
        endpoint_id: str, who: Principal = Depends(principal)
    ) -> Endpoint:
        return await n.get_endpoint(who.user_id, endpoint(endpoint_id))

    @r.post(
        "/webhook-endpoints/{endpoint_id}",
        tags=TAGS,
        responses=problems(
            *AUTH, *BODY, *URL_CODES, "not_found", "notifications.unknown_event_type"
        ),
    )
    async def update_webhook_endpoint(
        endpoint_id: str, body: EndpointUpdate, who: Principal = Depends(principal)
    ) -> Endpoint:
        """Change the URL, events or description; `enabled` disables or re-enables it."""
        data = body.model_dump(exclude_none=True)
        return await n.update_endpoint(who.user_id, endpoint(endpoint_id), data)

    @r.delete("/webhook-endpoints/{endpoint_id}", tags=TAGS, responses=problems(*AUTH, "not_found"))
    async def delete_webhook_endpoint(
        endpoint_id: str, who: Principal = Depends(principal)
    ) -> EndpointDeleted:
        """The endpoint and its delivery log; nothing more is sent to it."""
        return await n.delete_endpoint(who.user_id, endpoint(endpoint_id))

    @r.post(
        "/webhook-endpoints/{endpoint_id}/rotate-secret",
        tags=TAGS,
        responses=problems(*AUTH, *BODY, "not_found"),
    )
    async def rotate_webhook_secret(
        endpoint_id: str, body: SecretRotate | None = None, who: Principal = Depends(principal)
    ) -> EndpointWithSecret:
        """A new signing secret, shown once. The old one keeps signing too for the overlap
        (24 h unless `overlap_hours` says otherwise): each request then carries both
        signatures, so your receiver verifies with either while you switch."""
        data = (body or SecretRotate()).model_dump(exclude_none=True)
        return await n.rotate_secret(who.user_id, endpoint(endpoint_id), data)

    @r.get(
        "/webhook-endpoints/{endpoint_id}/deliveries",
        tags=TAGS,
        responses=problems(*AUTH, *LIST, "not_found"),
    )
    async def list_webhook_deliveries(
        endpoint_id: str,
        who: Principal = Depends(principal),
        page: Page = Depends(delivery_page),
    ) -> DeliveryList:
        """What was sent to the endpoint, newest first, each with every attempt (time,
        status, latency, the start of the answer)."""
        return await n.list_deliveries(who.user_id, endpoint(endpoint_id), page)

    @r.post(
        "/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver",
        tags=TAGS,
        responses=problems(*AUTH, "not_found", "notifications.endpoint_disabled"),
    )
    async def redeliver_webhook(
        endpoint_id: str, delivery_id: str, who: Principal = Depends(principal)
    ) -> Delivery:
        """Send the delivery again now (same `webhook-id`), retried like a new one."""
        return await n.redeliver(
            who.user_id, endpoint(endpoint_id), object_id(delivery_id, "delivery")
        )
