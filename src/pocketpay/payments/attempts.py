"""Attempts: every call to the PSP is recorded *before* it is made, as a recovery point.

An attempt is ``pending`` from the moment we decide to call the PSP until its answer is applied
(``succeeded`` or ``failed``) in the same transaction as the effect. A crash or a timeout in
between leaves it ``pending``: the reconciler finds it and resumes the operation with the same
idempotency key, so the PSP answers with the original result instead of acting twice. After
``max_tries`` resumptions an attempt becomes ``stuck``: an operator looks at it (payments'
readiness reports it, the monitor alerts) instead of it being retried forever. Once the cause
is fixed, ``retry`` (admin API ``POST /api/v1/admin/stuck/{object_id}/{operation}/retry``) puts
it back to ``pending`` with its tries reset, and the reconciler resumes it again.

``object_id`` is the payment for ``authorize``, ``capture``, ``cancel`` and ``void``, the
refund for ``refund``, the payout for ``payout``; the table's column is named ``payment_id``
for history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pocketpay.kit.clock import aware
from pocketpay.kit.db import insert_ignore
from pocketpay.kit.ids import derive_id
from pocketpay.payments.models import attempts

log = structlog.get_logger(__name__)

OPERATIONS = ("authorize", "capture", "cancel", "void", "refund", "payout")


@dataclass(frozen=True)
class Due:
    id: str
    object_id: str
    operation: str
    tries: int


def attempt_id(object_id: str, operation: str) -> str:
    return derive_id("att", object_id, operation)


async def begin(
    conn: AsyncConnection, object_id: str, operation: str, key: str, now: datetime
) -> bool:
    """Record that we are about to call the PSP. False if this attempt already concluded (a
    replayed request or event: do not call again)."""
    assert operation in OPERATIONS, operation
    aid = attempt_id(object_id, operation)
    await conn.execute(
        insert_ignore(conn, attempts),
        {
            "id": aid,
            "payment_id": object_id,
            "operation": operation,
            "status": "pending",
            "idempotency_key": key,
            "tries": 0,
            "created_at": now,
            "updated_at": now,
        },
    )
    status = (await conn.execute(_STATUS, {"w_id": aid})).scalar()
    return status in ("pending", "stuck")


# Built once; values bound at execution (see kit.db.insert_ignore).
_STATUS = select(attempts.c.status).where(attempts.c.id == bindparam("w_id"))
_CONCLUDE = update(attempts).where(
    attempts.c.payment_id == bindparam("w_object"),
    attempts.c.operation.in_(bindparam("w_operations", expanding=True)),
    attempts.c.status.in_(("pending", "stuck")),
)


async def conclude(
    conn: AsyncConnection,
    object_id: str,
    operations: tuple[str, ...],
    status: str,
    now: datetime,
    error: str | None = None,
) -> None:
    """Mark the open attempts of ``object_id`` for these operations as concluded."""
    if not operations:
        return
    await conn.execute(
        _CONCLUDE,
        {
            "w_object": object_id,
            "w_operations": list(operations),
            "status": status,
            "updated_at": now,
            "error": error,
        },
    )


async def note_unknown(conn: AsyncConnection, object_id: str, operation: str, error: str) -> None:
    """The PSP did not answer: the attempt stays pending (the reconciler resumes it)."""
    await conn.execute(
        update(attempts)
        .where(attempts.c.id == attempt_id(object_id, operation))
        .values(error=error[:500])
    )


async def due(conn: AsyncConnection, horizon: datetime, limit: int) -> list[Due]:
    a = attempts.c
    rows = (
        await conn.execute(
            select(a.id, a.payment_id, a.operation, a.tries)
            .where(a.status == "pending", a.updated_at < horizon)
            .order_by(a.updated_at)
            .limit(limit)
        )
    ).all()
    return [Due(r.id, r.payment_id, r.operation, r.tries) for r in rows]


async def start_try(conn: AsyncConnection, d: Due, max_tries: int, now: datetime) -> bool:
    """Count one resumption; past ``max_tries`` the attempt is ``stuck`` (False: skip it)."""
    stuck = d.tries + 1 >= max_tries
    res = await conn.execute(
        update(attempts)
        .where(attempts.c.id == d.id, attempts.c.status == "pending", attempts.c.tries == d.tries)
        .values(tries=d.tries + 1, updated_at=now, status="stuck" if stuck else "pending")
    )
    if res.rowcount == 0:
        return False  # another process took it
    if stuck:
        log.error(
            "payments.attempt_stuck",
            attempt_id=d.id,
            object_id=d.object_id,
            operation=d.operation,
            tries=d.tries + 1,
        )
    return not stuck


async def stuck(conn: AsyncConnection, limit: int = 100) -> list[dict[str, Any]]:
    a = attempts.c
    rows = (
        await conn.execute(
            select(a.payment_id, a.operation, a.tries, a.error, a.updated_at)
            .where(a.status == "stuck")
            .order_by(a.updated_at)
            .limit(limit)
        )
    ).all()
    return [
        {
            "object_id": r.payment_id,
            "operation": r.operation,
            "tries": r.tries,
            "error": r.error,
            "since": aware(r.updated_at).isoformat(),
        }
        for r in rows
    ]


async def stuck_count(conn: AsyncConnection) -> int:
    n = await conn.scalar(select(func.count()).where(attempts.c.status == "stuck"))
    return int(n or 0)


async def retry(conn: AsyncConnection, object_id: str, operation: str, now: datetime) -> bool:
    """Put a stuck attempt back to ``pending`` with its tries reset: the reconciler resumes it
    (with its original idempotency key) once it is older than ``psp.attempt_retry_seconds``.
    Conditional on ``stuck``: False when there is no such stuck attempt (never was, or another
    operator or flow got there first). The last error is kept until the next try replaces it."""
    assert operation in OPERATIONS, operation
    aid = attempt_id(object_id, operation)
    res = await conn.execute(
        update(attempts)
        .where(attempts.c.id == aid, attempts.c.status == "stuck")
        .values(status="pending", tries=0, updated_at=now)
    )
    if res.rowcount == 0:
        return False
    log.info("payments.attempt_retried", attempt_id=aid, object_id=object_id, operation=operation)
    return True
