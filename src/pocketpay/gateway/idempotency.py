"""Idempotency keys with Stripe's semantics (and the IETF draft's):

* keys are scoped to the user; the first request with a key runs, its status and body are kept;
* the same key and the same request replays them, with ``Idempotent-Replayed: true``;
* the same key with another request: 422 ``idempotency.key_reused``;
* the same key while the first is still running: 409 ``idempotency.in_progress`` + Retry-After;
* a 5xx or an unavailable dependency releases the key, so the client can retry;
* keys are kept at least 24 hours (``purge`` deletes older ones).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.gateway.models import idempotency_keys
from pocketpay.kit.clock import Clock, aware
from pocketpay.kit.db import insert_ignore
from pocketpay.kit.errors import AppError

KEEP_HOURS = 24
LOCK_SECONDS = 60


class KeyMissing(AppError):
    code = "idempotency.key_missing"
    status = 400
    title = "Idempotency-Key header required"


class KeyReused(AppError):
    code = "idempotency.key_reused"
    status = 422
    title = "Idempotency key reused with a different request"


class InProgress(AppError):
    code = "idempotency.in_progress"
    status = 409
    title = "A request with this idempotency key is in progress"


def fingerprint(method: str, path: str, body: Any) -> str:
    raw = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def check_key(key: str | None) -> str:
    if not key:
        raise KeyMissing(
            "Send an Idempotency-Key header (a unique string, e.g. a UUID) so a "
            "retried request is never applied twice."
        )
    if len(key) > 255 or not key.isprintable():
        raise AppError(
            "The Idempotency-Key must be 1-255 printable characters.",
            code="idempotency.key_invalid",
            status=400,
        )
    return key


Outcome = tuple[int, dict[str, Any]]


class IdempotencyStore:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def run(
        self, owner_id: str, key: str, fp: str, op: Callable[[], Awaitable[Outcome]]
    ) -> tuple[int, dict[str, Any], bool]:
        """Run ``op`` once per (owner, key). Returns (status, body, replayed)."""
        now = self._clock.now()
        async with self._engine.begin() as conn:
            res = await conn.execute(
                insert_ignore(conn, idempotency_keys).values(
                    owner_id=owner_id,
                    key=key,
                    fingerprint=fp,
                    status="in_progress",
                    created_at=now,
                    locked_until=now + timedelta(seconds=LOCK_SECONDS),
                )
            )
            if res.rowcount == 0:
                row = (
                    await conn.execute(
                        select(idempotency_keys).where(
                            idempotency_keys.c.owner_id == owner_id, idempotency_keys.c.key == key
                        )
                    )
                ).one()
                replay = await self._existing(conn, row, fp, now)
                if replay is not None:
                    return replay[0], replay[1], True
        try:
            status, body = await op()
        except AppError as exc:
            if exc.status >= 500:
                await self._release(owner_id, key)
                raise
            status, body = exc.status, exc.to_dict()
            await self._store(owner_id, key, status, body)
            raise
        except BaseException:
            await self._release(owner_id, key)
            raise
        await self._store(owner_id, key, status, body)
        return status, body, False

    async def _existing(self, conn: Any, row: Any, fp: str, now: Any) -> Outcome | None:
        if row.fingerprint != fp:
            raise KeyReused(
                "This Idempotency-Key was used with a different request; use a new "
                "key for a new request."
            )
        if row.status == "done":
            return int(row.response_status), dict(row.response_body)
        if row.locked_until and aware(row.locked_until) > now:
            raise InProgress(
                "The first request with this Idempotency-Key is still running; retry shortly.",
                headers={"Retry-After": "1"},
            )
        # The first request died while holding the key: take it over.
        await conn.execute(
            update(idempotency_keys)
            .where(
                idempotency_keys.c.owner_id == row.owner_id,
                idempotency_keys.c.key == row.key,
            )
            .values(locked_until=now + timedelta(seconds=LOCK_SECONDS))
        )
        return None

    async def _store(self, owner_id: str, key: str, status: int, body: dict[str, Any]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(idempotency_keys)
                .where(
                    idempotency_keys.c.owner_id == owner_id,
                    idempotency_keys.c.key == key,
                )
                .values(
                    status="done", response_status=status, response_body=body, locked_until=None
                )
            )

    async def _release(self, owner_id: str, key: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(idempotency_keys).where(
                    idempotency_keys.c.owner_id == owner_id, idempotency_keys.c.key == key
                )
            )

    async def purge(self) -> int:
        horizon = self._clock.now() - timedelta(hours=KEEP_HOURS)
        async with self._engine.begin() as conn:
            res = await conn.execute(
                delete(idempotency_keys).where(idempotency_keys.c.created_at < horizon)
            )
        return int(res.rowcount)
