"""Typed client of the payments internal API."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pocketpay.kit.client import InternalClient
from pocketpay.payments.schemas import StuckAttempts, StuckRetried


class PaymentsClient:
    def __init__(self, http: InternalClient) -> None:
        self.http = http

    async def _req(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.http.request(method, path, **kw)
        return result

    async def create(
        self, owner_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._req(
            "POST",
            "/payments",
            json=body | {"owner_id": owner_id, "idempotency_key": idempotency_key},
        )

    async def get(self, owner_id: str, payment_id: str) -> dict[str, Any]:
        return await self._req("GET", f"/payments/{payment_id}", params={"owner_id": owner_id})

    async def list(
        self, owner_id: str, status: str | None, limit: int, starting_after: str | None
    ) -> dict[str, Any]:
        return await self._req(
            "GET",
            "/payments",
            params={
                "owner_id": owner_id,
                "status": status,
                "limit": limit,
                "starting_after": starting_after,
            },
        )

    async def events(self, owner_id: str, payment_id: str) -> dict[str, Any]:
        return await self._req(
            "GET", f"/payments/{payment_id}/events", params={"owner_id": owner_id}
        )

    async def capture(
        self, owner_id: str, payment_id: str, amount_minor: int | None
    ) -> dict[str, Any]:
        return await self._req(
            "POST",
            f"/payments/{payment_id}/capture",
            params={"owner_id": owner_id},
            json={"amount_minor": amount_minor},
        )

    async def cancel(self, owner_id: str, payment_id: str) -> dict[str, Any]:
        return await self._req(
            "POST", f"/payments/{payment_id}/cancel", params={"owner_id": owner_id}, json={}
        )

    async def refund(
        self, owner_id: str, payment_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._req(
            "POST",
            f"/payments/{payment_id}/refunds",
            params={"owner_id": owner_id},
            json=body | {"idempotency_key": idempotency_key},
        )

    async def get_refund(self, owner_id: str, refund_id: str) -> dict[str, Any]:
        return await self._req("GET", f"/refunds/{refund_id}", params={"owner_id": owner_id})

    async def psp_event(self, event: dict[str, Any]) -> dict[str, Any]:
        return await self._req("POST", "/psp-events", json=event)

    async def provider_health(self) -> dict[str, Any]:
        return await self._req("GET", "/health/provider")

    # -- operators (the gateway's admin API) ----------------------------------------------

    async def stuck(self, limit: int = 100) -> StuckAttempts:
        """Attempts the reconciler gave up on, oldest first."""
        body = await self._req("GET", "/stuck", params={"limit": limit})
        return StuckAttempts.model_validate(body)

    async def retry_stuck(self, object_id: str, operation: str) -> StuckRetried:
        """Put a stuck attempt back to pending (tries reset) for the reconciler to resume.
        ``payments.attempt_not_stuck`` (404) when there is no such stuck attempt."""
        path = f"/stuck/{quote(object_id, safe='')}/{quote(operation, safe='')}/retry"
        body = await self._req("POST", path, json={})
        return StuckRetried.model_validate(body)
