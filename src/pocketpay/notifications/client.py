"""What other components may ask of notifications: the ``NotificationsClient`` protocol,
answered with ``notifications.schemas`` models, implemented by ``NotificationsApi`` in this
process and by ``HttpNotificationsClient`` over the internal API at scale."""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import quote

from pocketpay.kit.client import InternalClient
from pocketpay.kit.listing import Page
from pocketpay.notifications.schemas import (
    Delivery,
    DeliveryList,
    Endpoint,
    EndpointDeleted,
    EndpointList,
    EndpointWithSecret,
    Preferences,
)


class NotificationsClient(Protocol):
    async def ping(self) -> float: ...

    async def get_preferences(self, user_id: str) -> Preferences: ...

    async def put_preferences(self, user_id: str, body: dict[str, Any]) -> Preferences: ...

    async def create_endpoint(
        self, user_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> EndpointWithSecret: ...

    async def list_endpoints(self, user_id: str, page: Page) -> EndpointList: ...

    async def get_endpoint(self, user_id: str, endpoint_id: str) -> Endpoint: ...

    async def update_endpoint(
        self, user_id: str, endpoint_id: str, body: dict[str, Any]
    ) -> Endpoint: ...

    async def delete_endpoint(self, user_id: str, endpoint_id: str) -> EndpointDeleted: ...

    async def rotate_secret(
        self, user_id: str, endpoint_id: str, body: dict[str, Any]
    ) -> EndpointWithSecret: ...

    async def list_deliveries(self, user_id: str, endpoint_id: str, page: Page) -> DeliveryList: ...

    async def redeliver(self, user_id: str, endpoint_id: str, delivery_id: str) -> Delivery: ...


def _q(value: str) -> str:
    return quote(value, safe="")


class HttpNotificationsClient:
    """``NotificationsClient`` over notifications' internal API (scale mode)."""

    def __init__(self, http: InternalClient) -> None:
        self.http = http

    async def ping(self) -> float:
        return await self.http.ping()

    async def _req(self, method: str, path: str, user_id: str, **kw: Any) -> Any:
        params = kw.pop("params", {}) | {"owner_id": user_id}
        return await self.http.request(method, path, params=params, **kw)

    async def get_preferences(self, user_id: str) -> Preferences:
        return Preferences.model_validate(await self._req("GET", "/preferences", user_id))

    async def put_preferences(self, user_id: str, body: dict[str, Any]) -> Preferences:
        answer = await self._req("PUT", "/preferences", user_id, json=body)
        return Preferences.model_validate(answer)

    async def create_endpoint(
        self, user_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> EndpointWithSecret:
        params = {"idempotency_key": idempotency_key}
        answer = await self._req("POST", "/endpoints", user_id, params=params, json=body)
        return EndpointWithSecret.model_validate(answer)

    async def list_endpoints(self, user_id: str, page: Page) -> EndpointList:
        params = page.model_dump(exclude_none=True)
        answer = await self._req("GET", "/endpoints", user_id, params=params)
        return EndpointList.model_validate(answer)

    async def get_endpoint(self, user_id: str, endpoint_id: str) -> Endpoint:
        answer = await self._req("GET", f"/endpoints/{_q(endpoint_id)}", user_id)
        return Endpoint.model_validate(answer)

    async def update_endpoint(
        self, user_id: str, endpoint_id: str, body: dict[str, Any]
    ) -> Endpoint:
        answer = await self._req("POST", f"/endpoints/{_q(endpoint_id)}", user_id, json=body)
        return Endpoint.model_validate(answer)

    async def delete_endpoint(self, user_id: str, endpoint_id: str) -> EndpointDeleted:
        answer = await self._req("DELETE", f"/endpoints/{_q(endpoint_id)}", user_id)
        return EndpointDeleted.model_validate(answer)

    async def rotate_secret(
        self, user_id: str, endpoint_id: str, body: dict[str, Any]
    ) -> EndpointWithSecret:
        path = f"/endpoints/{_q(endpoint_id)}/rotate-secret"
        return EndpointWithSecret.model_validate(await self._req("POST", path, user_id, json=body))

    async def list_deliveries(self, user_id: str, endpoint_id: str, page: Page) -> DeliveryList:
        path = f"/endpoints/{_q(endpoint_id)}/deliveries"
        params = page.model_dump(exclude_none=True)
        return DeliveryList.model_validate(await self._req("GET", path, user_id, params=params))

    async def redeliver(self, user_id: str, endpoint_id: str, delivery_id: str) -> Delivery:
        path = f"/endpoints/{_q(endpoint_id)}/deliveries/{_q(delivery_id)}/redeliver"
        return Delivery.model_validate(await self._req("POST", path, user_id, json={}))
