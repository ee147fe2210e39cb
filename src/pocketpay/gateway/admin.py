"""Operator endpoints (role ``admin``): dead letters of the bus, list and replay; PSP attempts
the payments reconciler gave up on (``stuck``), list and retry. Every operator action is
audit-logged (``admin.*`` structlog events with the operator's id and email)."""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Depends, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.gateway.conventions import PublicRoute, operation_id, refuse_other_methods
from pocketpay.gateway.problems import AUTH, BEARER, BEARER_DESCRIPTION, problems
from pocketpay.gateway.schemas import DeadLetter, DeadLetterReplayed, DeadLetters
from pocketpay.kit.bus import Bus, list_dead_letters, replay_dead_letter
from pocketpay.kit.clock import Clock, aware
from pocketpay.kit.errors import Forbidden, NotFound, Unauthorized
from pocketpay.kit.tokens import Principal, TokenCodec
from pocketpay.payments.client import PaymentsClient
from pocketpay.payments.schemas import AttemptOperation, StuckAttempts, StuckRetried

_bearer = HTTPBearer(auto_error=False, scheme_name=BEARER, description=BEARER_DESCRIPTION)
_ADMIN = (*AUTH, "auth.forbidden")
log = structlog.get_logger(__name__)


def admin_router(
    engine: AsyncEngine, bus: Bus, clock: Clock, tokens: TokenCodec, payments: PaymentsClient
) -> APIRouter:
    r = APIRouter(
        prefix="/api/v1/admin",
        tags=["admin"],
        route_class=PublicRoute,
        generate_unique_id_function=operation_id,
    )

    async def admin(
        creds: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> Principal:
        if creds is None:
            raise Unauthorized("Send 'Authorization: Bearer <access_token>'.")
        who = tokens.verify(creds.credentials)
        if not who.is_admin:
            raise Forbidden("This endpoint is for operators (role admin).")
        return who

    @r.get("/dead-letters", responses=problems(*_ADMIN, "validation.failed"))
    async def dead_letters(
        include_replayed: bool = False, _who: Principal = Depends(admin)
    ) -> DeadLetters:
        rows = await list_dead_letters(engine, include_replayed=include_replayed)
        return DeadLetters(
            data=[
                DeadLetter(
                    id=row.id,
                    consumer=row.durable,
                    event_id=row.event_id,
                    type=row.subject,
                    error=row.error,
                    deliveries=row.deliveries,
                    created_at=aware(row.created_at).isoformat(),
                    replayed_at=aware(row.replayed_at).isoformat() if row.replayed_at else None,
                )
                for row in rows
            ]
        )

    @r.post("/dead-letters/{dlq_id}/replay", responses=problems(*_ADMIN, "not_found"))
    async def replay(dlq_id: str, _who: Principal = Depends(admin)) -> DeadLetterReplayed:
        if not await replay_dead_letter(engine, bus, dlq_id, clock.now()):
            raise NotFound(f"No dead letter {dlq_id} waiting for a replay.")
        return DeadLetterReplayed(id=dlq_id, replayed=True)

    @r.get("/stuck", response_model=StuckAttempts, responses=problems(*_ADMIN, "validation.failed"))
    async def stuck(
        limit: int = Query(100, ge=1, le=500), _who: Principal = Depends(admin)
    ) -> StuckAttempts:
        """PSP attempts (authorize, capture, cancel, void, refund) the reconciler gave up on
        after ``psp.attempt_max_tries`` resumptions, oldest first."""
        return await payments.stuck(limit)

    @r.post(
        "/stuck/{object_id}/{operation}/retry",
        response_model=StuckRetried,
        responses=problems(*_ADMIN, "payments.attempt_not_stuck", "validation.failed"),
    )
    async def retry_stuck(
        object_id: str, operation: AttemptOperation, who: Principal = Depends(admin)
    ) -> StuckRetried:
        """Once the cause is fixed: the attempt goes back to pending with its tries reset and
        the reconciler resumes it with its original idempotency key."""
        audit = log.bind(
            admin_id=who.user_id, admin_email=who.email, object_id=object_id, operation=operation
        )
        try:
            result = await payments.retry_stuck(object_id, operation)
        except Exception as exc:
            audit.warning("admin.stuck_retry_refused", error=f"{type(exc).__name__}: {exc}")
            raise
        audit.info("admin.stuck_retried")
        return result

    refuse_other_methods(r)
    return r
