"""Notifications' internal API over HTTP: each route calls ``NotificationsApi``, the object
other components call directly in one process. Behind the internal token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from pocketpay.notifications.api import NotificationsApi
from pocketpay.notifications.schemas import (
    Delivery,
    DeliveryList,
    Endpoint,
    EndpointDeleted,
    EndpointList,
    EndpointWithSecret,
    OwnerPage,
    Preferences,
)


def build_router(api: NotificationsApi) -> APIRouter:
    r = APIRouter()

    @r.get("/preferences", response_model=Preferences)
    async def get_preferences(owner_id: str) -> Preferences:
        return await api.get_preferences(owner_id)

    @r.put("/preferences", response_model=Preferences)
    async def put_preferences(owner_id: str, body: dict[str, Any]) -> Preferences:
        return await api.put_preferences(owner_id, body)

    @r.post("/endpoints", response_model=EndpointWithSecret)
    async def create_endpoint(
        owner_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> EndpointWithSecret:
        return await api.create_endpoint(owner_id, idempotency_key, body)

    @r.get("/endpoints", response_model=EndpointList)
    async def list_endpoints(query: Annotated[OwnerPage, Query()]) -> EndpointList:
        return await api.list_endpoints(query.owner_id, query)

    @r.get("/endpoints/{endpoint_id}", response_model=Endpoint)
    async def get_endpoint(endpoint_id: str, owner_id: str) -> Endpoint:
        return await api.get_endpoint(owner_id, endpoint_id)

    @r.post("/endpoints/{endpoint_id}", response_model=Endpoint)
    async def update_endpoint(endpoint_id: str, owner_id: str, body: dict[str, Any]) -> Endpoint:
        return await api.update_endpoint(owner_id, endpoint_id, body)

    @r.delete("/endpoints/{endpoint_id}", response_model=EndpointDeleted)
    async def delete_endpoint(endpoint_id: str, owner_id: str) -> EndpointDeleted:
        return await api.delete_endpoint(owner_id, endpoint_id)

    @r.post("/endpoints/{endpoint_id}/rotate-secret", response_model=EndpointWithSecret)
    async def rotate_secret(
        endpoint_id: str, owner_id: str, body: dict[str, Any]
    ) -> EndpointWithSecret:
        return await api.rotate_secret(owner_id, endpoint_id, body)

    @r.get("/endpoints/{endpoint_id}/deliveries", response_model=DeliveryList)
    async def list_deliveries(
        endpoint_id: str, query: Annotated[OwnerPage, Query()]
    ) -> DeliveryList:
        return await api.list_deliveries(query.owner_id, endpoint_id, query)

    @r.post("/endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver", response_model=Delivery)
    async def redeliver(endpoint_id: str, delivery_id: str, owner_id: str) -> Delivery:
        return await api.redeliver(owner_id, endpoint_id, delivery_id)

    return r
