"""Typed client of the ledger's internal API: what other components may call."""

from __future__ import annotations

from typing import Any

from pocketpay.kit.client import InternalClient


class LedgerClient:
    def __init__(self, http: InternalClient) -> None:
        self.http = http

    async def refund_hold(
        self, *, refund_id: str, payment_id: str, owner_id: str, amount_minor: int, currency: str
    ) -> None:
        await self.http.request(
            "POST",
            "/refund-holds",
            json={
                "refund_id": refund_id,
                "payment_id": payment_id,
                "owner_id": owner_id,
                "amount_minor": amount_minor,
                "currency": currency,
            },
        )

    async def send(self, body: dict[str, Any], request_id: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.http.request(
            "POST", "/wallet-transfers", json=body, request_id=request_id
        )
        return result

    async def get_transfer(self, owner_id: str, transfer_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.http.request(
            "GET", f"/wallet-transfers/{transfer_id}", params={"owner_id": owner_id}
        )
        return result

    async def list_transfers(
        self, owner_id: str, limit: int, starting_after: str | None
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.http.request(
            "GET",
            "/wallet-transfers",
            params={"owner_id": owner_id, "limit": limit, "starting_after": starting_after},
        )
        return result

    async def wallets(self, owner_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.http.request(
            "GET", "/wallets", params={"owner_id": owner_id}
        )
        return result

    async def entries(
        self, owner_id: str, currency: str, limit: int, starting_after: str | None
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.http.request(
            "GET",
            f"/wallets/{currency}/entries",
            params={"owner_id": owner_id, "limit": limit, "starting_after": starting_after},
        )
        return result

    async def backlog(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.http.request("GET", "/health/backlog")
        return result
