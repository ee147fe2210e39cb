"""Idempotency keys with Stripe's semantics (and the IETF draft's):

* keys are scoped to the user; the first request with a key runs, its status and body are kept;
* the same key and the same request replays them, with ``Idempotent-Replayed: true``;
* the same key with another request: 422 ``idempotency.key_reused``;
* the same key while the first is still running: 409 ``idempotency.in_progress`` + Retry-After;
* a 5xx, a timeout or a crash is an *unknown* outcome, never a failure: the key stays bound to
  its request and is unlocked, so the client's retry runs the operation again. That is safe
  because the owning component records the key with the first effect and derives its ids from
  (owner, key): the re-run finds what the first run did and returns it (two-level idempotency);
* a lock left by a crashed request expires after ``LOCK_SECONDS`` and is taken over by exactly
  one retry (a conditional UPDATE on the lock it saw);
* keys are kept 24 hours; the gateway's purge job deletes older ones.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.gateway.models import idempotency_keys
from pocketpay.kit.clock import Clock, aware
from pocketpay.kit.db import insert_ignore, single_statements
from pocketpay.kit.errors import AppError, KeyReused
from pocketpay.kit.failpoints import failpoint

KEEP_HOURS = 24
LOCK_SECONDS = 60


class KeyMissing(AppError):
    code = "idempotency.key_missing"
    status = 400
    title = "Idempotency-Key header required"


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

# Statements of the hot path, built once (values are bound at execution; see kit.db).
_K = idempotency_keys.c
_THIS_KEY = (_K.owner_id == bindparam("w_owner"), _K.key == bindparam("w_key"))
_GET = select(idempotency_keys).where(*_THIS_KEY)
_STORE = update(idempotency_keys).where(*_THIS_KEY)
_UNLOCK = update(idempotency_keys).where(*_THIS_KEY, _K.status == "in_progress")


class IdempotencyStore:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        # Each statement below is atomic on its own (the claim is an insert-if-absent, a
        # takeover a compare-and-set), so none needs a transaction around it.
        self._engine = single_statements(engine)
        self._clock = clock

    async def run(
        self, owner_id: str, key: str, fp: str, op: Callable[[], Awaitable[Outcome]]
    ) -> tuple[int, dict[str, Any], bool]:
        """Run ``op`` once per (owner, key). Returns (status, body, replayed)."""
        now = self._clock.now()
        async with self._engine.begin() as conn:
            res = await conn.execute(
                insert_ignore(conn, idempotency_keys),
                {
                    "owner_id": owner_id,
                    "key": key,
                    "fingerprint": fp,
                    "status": "in_progress",
                    "created_at": now,
                    "locked_until": now + timedelta(seconds=LOCK_SECONDS),
                },
            )
            if res.rowcount == 0:
                row = (await conn.execute(_GET, {"w_owner": owner_id, "w_key": key})).one()
                replay = await self._existing(conn, row, fp, now)
                if replay is not None:
                    return replay[0], replay[1], True
        try:
            status, body = await op()
        except AppError as exc:
            if exc.status >= 500:
                await self._unlock(owner_id, key)
                raise
            status, body = exc.status, exc.to_dict()
            await self._store(owner_id, key, status, body)
            raise
        except Exception:
            await self._unlock(owner_id, key)
            raise
        await failpoint("gateway.idempotency.before_store")
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
        busy = InProgress(
            "The first request with this Idempotency-Key is still running; retry shortly.",
            headers={"Retry-After": "1"},
        )
        if row.locked_until and aware(row.locked_until) > now:
            raise busy
        # The first request ended with an unknown outcome, or died holding the key: take it
        # over, conditionally on the lock we saw, so of two concurrent retries only one runs.
        k = idempotency_keys.c
        res = await conn.execute(
            update(idempotency_keys)
            .where(
                k.owner_id == row.owner_id,
                k.key == row.key,
                k.status == "in_progress",
                k.locked_until == row.locked_until,
            )
            .values(locked_until=now + timedelta(seconds=LOCK_SECONDS))
        )
        if res.rowcount != 1:
            raise busy
        return None

    async def _store(self, owner_id: str, key: str, status: int, body: dict[str, Any]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                _STORE,
                {
                    "w_owner": owner_id,
                    "w_key": key,
                    "status": "done",
                    "response_status": status,
                    "response_body": body,
                    "locked_until": None,
                },
            )

    async def _unlock(self, owner_id: str, key: str) -> None:
        """Unknown outcome: keep the key bound to this request, let the next retry run it."""
        async with self._engine.begin() as conn:
            await conn.execute(
                _UNLOCK, {"w_owner": owner_id, "w_key": key, "locked_until": self._clock.now()}
            )

    async def purge(self, limit: int = 5000) -> int:
        """Delete up to ``limit`` keys older than ``KEEP_HOURS``; returns how many."""
        horizon = self._clock.now() - timedelta(hours=KEEP_HOURS)
        k = idempotency_keys.c
        async with self._engine.begin() as conn:
            old = select(k.owner_id, k.key).where(k.created_at < horizon).limit(limit).subquery()
            res = await conn.execute(
                delete(idempotency_keys).where(
                    tuple_(k.owner_id, k.key).in_(select(old.c.owner_id, old.c.key))
                )
            )
        return int(res.rowcount)
