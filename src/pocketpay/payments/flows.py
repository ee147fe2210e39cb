"""Payment flows that involve the PSP. No database transaction is held while the PSP is
called: read and reserve in one short transaction, call the PSP with an idempotency key
derived from our ids, then apply the answer in another. A PSP timeout leaves the payment as
it was (outcome unknown); the reconciler asks again with the same key, which Stripe (and the
sandbox) answer with the original result, so a retry never charges twice."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.clock import Clock, aware
from pocketpay.kit.errors import AppError
from pocketpay.kit.ids import new_id
from pocketpay.kit.outbox import OutboxRelay, add_event, claim_inbox
from pocketpay.ledger.client import LedgerClient
from pocketpay.payments import service
from pocketpay.payments.errors import (
    CaptureExceedsAuthorized,
    InvalidTransition,
    ProviderUnavailable,
    RefundExceedsCaptured,
)
from pocketpay.payments.models import outbox, payments, psp_events, refunds
from pocketpay.payments.providers.base import (
    IntentResult,
    Provider,
    PspDeclined,
    PspRejected,
    PspUnavailable,
)
from pocketpay.payments.states import RANK
from pocketpay.payments.states import PaymentStatus as S

log = structlog.get_logger(__name__)

# The status a PSP event says the payment has reached (at least).
EVENT_STATUS = {
    "payment_intent.amount_capturable_updated": S.AUTHORIZED,
    "payment_intent.succeeded": S.CAPTURED,
    "payment_intent.canceled": S.CANCELED,
    "payment_intent.payment_failed": S.FAILED,
}


@dataclass
class Flows:
    engine: AsyncEngine
    clock: Clock
    provider: Provider
    ledger: LedgerClient
    relay: OutboxRelay
    retry_seconds: float = 30.0
    settle_poll_seconds: float = 1.0

    # -- authorization (asynchronous, from the payments.payment.created event) ---------------

    async def authorize(self, payment_id: str) -> None:
        async with self.engine.connect() as conn:
            p = await service.get(conn, payment_id)
        if p.status != S.CREATED:
            return
        try:
            result = await self.provider.authorize(
                amount_minor=p.amount_minor,
                currency=p.currency,
                payment_method=p.payment_method,
                capture_method=p.capture_method,
                idempotency_key=f"pp_{p.id}_authorize",
                metadata={"payment_id": p.id},
            )
        except PspDeclined as exc:
            await self._fail(p.id, exc.code, str(exc), exc.intent_id)
            return
        except PspRejected as exc:
            await self._fail(p.id, exc.code, str(exc), None)
            return
        except PspUnavailable as exc:
            await self._note(p.id, "created", "psp_unknown", {"error": str(exc)[:300]})
            return
        await self.apply_intent(p.id, result, cause="psp")

    async def _fail(self, pid: str, code: str, message: str, intent_id: str | None) -> None:
        now = self.clock.now()
        async with self.engine.begin() as conn:
            await service.transition(
                conn,
                pid,
                S.FAILED,
                cause="psp",
                now=now,
                strict=False,
                detail={"failure_code": code},
                failure_code=code,
                failure_message=message[:500],
                psp_intent_id=intent_id,
            )
        self.relay.notify()

    async def _note(self, pid: str, status: str, cause: str, detail: dict[str, Any]) -> None:
        async with self.engine.begin() as conn:
            await service.add_timeline_note(conn, pid, status, cause, detail, self.clock.now())

    async def apply_intent(self, pid: str, r: IntentResult, *, cause: str) -> None:
        """Move the payment forward to what the PSP says; never backwards."""
        now = self.clock.now()
        ids = {"psp_intent_id": r.intent_id}
        if r.charge_id:
            ids["psp_charge_id"] = r.charge_id
        if r.balance_txn_id:
            ids["psp_balance_txn_id"] = r.balance_txn_id
        async with self.engine.begin() as conn:
            p = await service.get(conn, pid)
            changed = {k: v for k, v in ids.items() if getattr(p, k) != v}
            if changed:  # a late or repeated PSP answer that says nothing new changes nothing
                await service.set_fields(conn, pid, now, **changed)
            if r.status in ("requires_capture", "succeeded") and p.status == S.CREATED:
                await service.transition(
                    conn, pid, S.AUTHORIZED, cause=cause, now=now, strict=False
                )
            if r.status == "succeeded":
                await service.transition(
                    conn,
                    pid,
                    S.CAPTURED,
                    cause=cause,
                    now=now,
                    strict=False,
                    amount_captured_minor=r.amount_received_minor,
                )
            elif r.status == "canceled":
                await service.transition(conn, pid, S.CANCELED, cause=cause, now=now, strict=False)
            elif r.status == "requires_payment_method" and r.decline_code:
                await service.transition(
                    conn,
                    pid,
                    S.FAILED,
                    cause=cause,
                    now=now,
                    strict=False,
                    failure_code=r.decline_code,
                    failure_message=(r.failure_message or "")[:500],
                )
            after = await service.get(conn, pid)
        self.relay.notify()
        if after.status == S.CANCELED and r.status == "requires_capture":
            await self._cancel_at_psp(r.intent_id, pid)  # canceled while we were authorizing

    async def _cancel_at_psp(self, intent_id: str, pid: str) -> None:
        try:
            await self.provider.cancel(intent_id, f"pp_{pid}_cancel")
        except (PspUnavailable, PspRejected, PspDeclined) as exc:
            log.warning("payments.cancel_at_psp_failed", payment_id=pid, error=str(exc))

    # -- capture and cancel (synchronous, from the API) ------------------------------------

    async def capture(self, owner_id: str, pid: str, amount_minor: int | None) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            p = await service.get(conn, pid, owner_id)
        if p.status == S.CAPTURED and p.capture_method == "manual":
            return service.payment_view(p)  # a retried capture
        if p.status != S.AUTHORIZED:
            raise InvalidTransition(f"A {p.status} payment cannot be captured.")
        amount = p.amount_minor if amount_minor is None else amount_minor
        if amount > p.amount_minor:
            raise CaptureExceedsAuthorized(
                f"amount_minor {amount} exceeds the authorized {p.amount_minor}."
            )
        try:
            result = await self.provider.capture(p.psp_intent_id, amount, f"pp_{pid}_capture")
        except PspUnavailable as exc:
            raise ProviderUnavailable(
                "The payment provider did not answer; retry the capture "
                "with the same Idempotency-Key."
            ) from exc
        except (PspRejected, PspDeclined) as exc:
            raise InvalidTransition(f"The provider refused the capture: {exc}") from exc
        await self.apply_intent(pid, result, cause="api")
        async with self.engine.connect() as conn:
            return service.payment_view(await service.get(conn, pid))

    async def cancel(self, owner_id: str, pid: str) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            p = await service.get(conn, pid, owner_id)
        if p.status == S.CANCELED:
            return service.payment_view(p)
        if p.status not in (S.CREATED, S.AUTHORIZED):
            raise InvalidTransition(f"A {p.status} payment cannot be canceled.")
        if p.status == S.AUTHORIZED and p.psp_intent_id:
            try:
                result = await self.provider.cancel(p.psp_intent_id, f"pp_{pid}_cancel")
            except PspUnavailable as exc:
                raise ProviderUnavailable("The payment provider did not answer; retry.") from exc
            except (PspRejected, PspDeclined) as exc:
                raise InvalidTransition(f"The provider refused the cancel: {exc}") from exc
            await self.apply_intent(pid, result, cause="api")
        else:
            async with self.engine.begin() as conn:
                await service.transition(conn, pid, S.CANCELED, cause="api", now=self.clock.now())
            self.relay.notify()
        async with self.engine.connect() as conn:
            return service.payment_view(await service.get(conn, pid))

    # -- refunds -----------------------------------------------------------------------------

    async def refund(
        self, owner_id: str, pid: str, amount_minor: int | None, reason: str | None
    ) -> dict[str, Any]:
        refund_id, p = await self._reserve_refund(owner_id, pid, amount_minor, reason)
        try:
            await self.ledger.refund_hold(
                refund_id=refund_id,
                payment_id=pid,
                owner_id=owner_id,
                amount_minor=p["amount"],
                currency=p["currency"],
            )
        except AppError as exc:
            await self._finish_refund(refund_id, ok=False, failure=exc.code)
            raise
        await self.push_refund(refund_id)
        async with self.engine.connect() as conn:
            return service.refund_view(await service.get_refund(conn, refund_id, owner_id))

    async def _reserve_refund(
        self, owner_id: str, pid: str, amount_minor: int | None, reason: str | None
    ) -> tuple[str, dict[str, Any]]:
        now = self.clock.now()
        async with self.engine.begin() as conn:
            p = await service.get(conn, pid, owner_id)
            if p.status not in (S.CAPTURED, S.SETTLED):
                raise InvalidTransition(f"A {p.status} payment cannot be refunded.")
            left = p.amount_captured_minor - p.amount_refunded_minor
            amount = left if amount_minor is None else amount_minor
            if amount <= 0 or amount > left:
                raise RefundExceedsCaptured(
                    f"Only {left} of the captured amount can still be refunded."
                )
            res = await conn.execute(
                update(payments)
                .where(
                    payments.c.id == pid,
                    payments.c.amount_captured_minor - payments.c.amount_refunded_minor >= amount,
                )
                .values(
                    amount_refunded_minor=payments.c.amount_refunded_minor + amount, updated_at=now
                )
            )
            if res.rowcount == 0:
                raise RefundExceedsCaptured("A concurrent refund took the remaining amount.")
            refund_id = new_id("re")
            await conn.execute(
                insert(refunds).values(
                    id=refund_id,
                    payment_id=pid,
                    owner_id=owner_id,
                    amount_minor=amount,
                    currency=p.currency,
                    status="pending",
                    reason=reason,
                    created_at=now,
                    updated_at=now,
                )
            )
            await service.add_timeline_note(
                conn,
                pid,
                p.status,
                "refund_requested",
                {"refund_id": refund_id, "amount_minor": amount},
                now,
            )
        return refund_id, {"amount": amount, "currency": p.currency}

    async def push_refund(self, refund_id: str) -> None:
        """Ask the PSP to refund (again, with the same key, when the reconciler retries)."""
        async with self.engine.connect() as conn:
            r = await service.get_refund(conn, refund_id, None)
            p = await service.get(conn, r.payment_id)
        if r.status != "pending":
            return
        try:
            res = await self.provider.refund(
                p.psp_intent_id,
                r.amount_minor,
                f"pp_{refund_id}",
                {"payment_id": p.id, "refund_id": refund_id},
            )
        except PspUnavailable:
            return  # stays pending; the reconciler asks again
        except (PspRejected, PspDeclined) as exc:
            await self._finish_refund(refund_id, ok=False, failure=getattr(exc, "code", "refused"))
            return
        if res.status == "succeeded":
            await self._finish_refund(refund_id, ok=True, psp_refund_id=res.refund_id)
        elif res.status in ("failed", "canceled"):
            await self._finish_refund(refund_id, ok=False, failure=res.failure_code or res.status)

    async def _finish_refund(
        self,
        refund_id: str,
        *,
        ok: bool,
        failure: str | None = None,
        psp_refund_id: str | None = None,
    ) -> None:
        now = self.clock.now()
        async with self.engine.begin() as conn:
            res = await conn.execute(
                update(refunds)
                .where(refunds.c.id == refund_id, refunds.c.status == "pending")
                .values(
                    status="succeeded" if ok else "failed",
                    failure_code=failure,
                    psp_refund_id=psp_refund_id,
                    updated_at=now,
                )
            )
            if res.rowcount == 0:
                return
            r = await service.get_refund(conn, refund_id, None)
            data = service.refund_view(r) | {"refund_id": r.id, "owner_id": r.owner_id}
            await add_event(
                conn, outbox, f"payments.refund.{'succeeded' if ok else 'failed'}", data, now
            )
            if not ok:
                await conn.execute(
                    update(payments)
                    .where(payments.c.id == r.payment_id)
                    .values(amount_refunded_minor=payments.c.amount_refunded_minor - r.amount_minor)
                )
            p = await service.get(conn, r.payment_id)
            await service.add_timeline_note(
                conn,
                p.id,
                p.status,
                f"refund_{data['status']}",
                {"refund_id": r.id, "amount_minor": r.amount_minor},
                now,
            )
            if ok and p.amount_refunded_minor >= p.amount_captured_minor:
                await service.transition(
                    conn, p.id, S.REFUNDED, cause="refund", now=now, strict=False
                )
        self.relay.notify()

    # -- settlement, webhooks, reconciliation ------------------------------------------------

    async def settle_due(self, limit: int = 100) -> int:
        """Ask the PSP about captured payments whose check is due. A payment not yet available
        is asked again after half its age (at least ``settle_poll``, at most 5 minutes), so
        the polling load does not grow with the number of payments waiting to settle."""
        now = self.clock.now()
        p = payments.c
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(p.id, p.psp_balance_txn_id, p.updated_at)
                    .where(
                        p.status == S.CAPTURED,
                        p.psp_balance_txn_id.is_not(None),
                        or_(p.settle_check_at.is_(None), p.settle_check_at <= now),
                    )
                    .order_by(p.settle_check_at.nulls_first())
                    .limit(limit)
                )
            ).all()
        settled = 0
        for row in rows:
            try:
                available = await self.provider.balance_available(row.psp_balance_txn_id)
            except (PspUnavailable, PspRejected):
                available = False
            async with self.engine.begin() as conn:
                if available:
                    done = await service.transition(
                        conn,
                        row.id,
                        S.SETTLED,
                        cause="settlement",
                        now=self.clock.now(),
                        strict=False,
                    )
                    settled += done is not None
                else:
                    age = (now - aware(row.updated_at)).total_seconds()
                    wait = min(max(age / 2, self.settle_poll_seconds), 300.0)
                    await conn.execute(
                        update(payments)
                        .where(p.id == row.id)
                        .values(settle_check_at=now + timedelta(seconds=wait))
                    )
        if settled:
            self.relay.notify()
        return settled

    async def reconcile(self, limit: int = 100) -> None:
        """Retry authorizations and refunds whose outcome is unknown (same idempotency keys)."""
        horizon = self.clock.now() - timedelta(seconds=self.retry_seconds)
        async with self.engine.connect() as conn:
            stale = (
                await conn.execute(
                    select(payments.c.id)
                    .where(payments.c.status == S.CREATED, payments.c.updated_at < horizon)
                    .limit(limit)
                )
            ).all()
            pending = (
                await conn.execute(
                    select(refunds.c.id)
                    .where(refunds.c.status == "pending", refunds.c.updated_at < horizon)
                    .limit(limit)
                )
            ).all()
        for row in stale:
            async with self.engine.begin() as conn:
                await service.set_fields(conn, row.id, self.clock.now())
            await self.authorize(row.id)
        for row in pending:
            await self.push_refund(row.id)

    async def handle_psp_event(self, event: dict[str, Any]) -> dict[str, str]:
        """A verified PSP webhook. Applied once per event id; never moves a payment back."""
        now = self.clock.now()
        async with self.engine.begin() as conn:
            if not await claim_inbox(conn, psp_events, event["id"], event["type"], now):
                return {"status": "duplicate"}
        obj = event.get("data", {}).get("object", {})
        etype = event["type"]
        try:
            if etype.startswith("payment_intent."):
                await self._apply_intent_event(etype, obj)
            elif etype == "balance.available":
                await self.settle_due()
            elif etype.startswith("refund.") or etype == "charge.refunded":
                await self._apply_refund_event(obj)
        except Exception:
            # Not applied: forget the event id so the PSP's retry of it is processed.
            async with self.engine.begin() as conn:
                await conn.execute(delete(psp_events).where(psp_events.c.event_id == event["id"]))
            raise
        return {"status": "processed"}

    async def _apply_intent_event(self, etype: str, obj: dict[str, Any]) -> None:
        pid = (obj.get("metadata") or {}).get("payment_id")
        if not pid:
            return
        reported = EVENT_STATUS.get(etype)
        if reported is not None:
            async with self.engine.connect() as conn:
                current = (
                    await conn.execute(select(payments.c.status).where(payments.c.id == pid))
                ).scalar()
            if current is None or RANK[S(current)] >= RANK[reported]:
                return  # we already know this (or more): no PSP round trip, no write
        try:
            result = await self.provider.retrieve(obj["id"])  # the PSP's current truth
        except (PspUnavailable, PspRejected):
            return  # the reconciler will resolve it
        async with self.engine.connect() as conn:
            exists = (await conn.execute(select(payments.c.id).where(payments.c.id == pid))).first()
        if exists:
            await self.apply_intent(pid, result, cause="psp_webhook")

    async def _apply_refund_event(self, obj: dict[str, Any]) -> None:
        refund_id = (obj.get("metadata") or {}).get("refund_id")
        if refund_id and obj.get("status") == "succeeded":
            await self._finish_refund(refund_id, ok=True, psp_refund_id=obj.get("id"))
        elif refund_id and obj.get("status") in ("failed", "canceled"):
            await self._finish_refund(refund_id, ok=False, failure=obj.get("failure_reason"))
