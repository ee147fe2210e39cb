"""Operator endpoints (role ``admin``): dead letters of the bus, list and replay."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.bus import Bus, list_dead_letters, replay_dead_letter
from pocketpay.kit.clock import Clock, aware
from pocketpay.kit.errors import Forbidden, NotFound, Unauthorized
from pocketpay.kit.tokens import Principal, TokenCodec

_bearer = HTTPBearer(auto_error=False)


def admin_router(engine: AsyncEngine, bus: Bus, clock: Clock, tokens: TokenCodec) -> APIRouter:
    r = APIRouter(prefix="/api/v1/admin", tags=["admin"])

    async def admin(
        creds: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> Principal:
        if creds is None:
            raise Unauthorized("Send 'Authorization: Bearer <access_token>'.")
        who = tokens.verify(creds.credentials)
        if not who.is_admin:
            raise Forbidden("This endpoint is for operators (role admin).")
        return who

    @r.get("/dead-letters")
    async def dead_letters(
        include_replayed: bool = False, _who: Principal = Depends(admin)
    ) -> dict[str, Any]:
        rows = await list_dead_letters(engine, include_replayed=include_replayed)
        return {
            "data": [
                {
                    "id": row.id,
                    "consumer": row.durable,
                    "event_id": row.event_id,
                    "type": row.subject,
                    "error": row.error,
                    "deliveries": row.deliveries,
                    "created_at": aware(row.created_at).isoformat(),
                    "replayed_at": aware(row.replayed_at).isoformat() if row.replayed_at else None,
                }
                for row in rows
            ]
        }

    @r.post("/dead-letters/{dlq_id}/replay")
    async def replay(dlq_id: str, _who: Principal = Depends(admin)) -> dict[str, Any]:
        if not await replay_dead_letter(engine, bus, dlq_id, clock.now()):
            raise NotFound(f"No dead letter {dlq_id} waiting for a replay.")
        return {"id": dlq_id, "replayed": True}

    return r
