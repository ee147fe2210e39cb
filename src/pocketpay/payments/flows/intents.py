"""Authorization, capture and cancel: the PaymentIntent at the PSP and our payment.

Phases of each (every phase one local transaction; PSP calls between them carry keys derived
from the payment id, so a resumed phase gets the PSP's original answer, never a second charge):

* authorize (from ``payments.payment.created``, or resumed by the reconciler):
  1. record the ``authorize`` attempt (skipped if the payment is no longer ``created``),
  2. create-and-confirm the intent at the PSP (key ``pp_<payment>_authorize``),
  3. apply the PSP's state through ``PSP_ACTIONS`` and conclude the attempt, in one transaction.
* capture / cancel of an authorized payment (from the API): attempt, PSP call, apply.
* cancel of a ``created`` payment is local; if an authorization was in flight, its answer meets
  a canceled payment in step 3 and the table orders a compensation (void or refund at the PSP).

Crash windows: after 1 (attempt pending, PSP never called: the resumption calls it, then
compensates if the payment was canceled meanwhile), after 2 (the PSP acted, we do not know:
the resumption retrieves or replays with the same key and applies), after 3 (done).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from pocketpay.kit.failpoints import failpoint
from pocketpay.kit.money import Money
from pocketpay.kit.outbox import claim_inbox
from pocketpay.payments import attempts, service
from pocketpay.payments.errors import (
    CaptureExceedsAuthorized,
    InvalidTransition,
    ProviderUnavailable,
)
from pocketpay.payments.flows import refunds
from pocketpay.payments.flows.context import Ctx
from pocketpay.payments.models import psp_events
from pocketpay.payments.providers.base import (
    IntentResult,
    PspDeclined,
    PspRejected,
    PspUnavailable,
)
from pocketpay.payments.states import Action, PspState, psp_action, psp_state
from pocketpay.payments.states import PaymentStatus as S

log = structlog.get_logger(__name__)

INTENT_OPERATIONS = ("authorize", "capture", "cancel")
Inbox = tuple[str, str]  # (event id, event type) of a PSP webhook applied with the effect


def authorize_key(pid: str) -> str:
    return f"pp_{pid}_authorize"


async def authorize(ctx: Ctx, pid: str, *, resume: bool = False) -> None:
    """Phase 1-3 of the authorization. ``resume``: the reconciler found the attempt open."""
    now = ctx.clock.now()
    async with ctx.engine.begin() as conn:
        p = await service.get(conn, pid)
        if not resume:
            if p.status != S.CREATED:
                return  # canceled before we started: the PSP is never asked
            if not await attempts.begin(conn, pid, "authorize", authorize_key(pid), now):
                return
    await failpoint("payments.authorize.before_psp")
    try:
        if p.psp_intent_id:  # we know the intent: ask for its current state
            result = await ctx.provider.retrieve(p.psp_intent_id)
        else:  # same key: the PSP answers with the intent it made the first time, if any
            result = await ctx.provider.authorize(
                amount_minor=p.amount_minor,
                currency=p.currency,
                payment_method=p.psp_payment_method or p.payment_method,
                capture_method=p.capture_method,
                idempotency_key=authorize_key(pid),
                metadata={"payment_id": p.id},
                customer=p.psp_customer_id,
                off_session=p.off_session,
            )
    except PspDeclined as exc:
        await _declined(ctx, pid, exc.code, str(exc), exc.intent_id)
        return
    except PspRejected as exc:
        await _declined(ctx, pid, exc.code, str(exc), None)
        return
    except PspUnavailable as exc:
        async with ctx.engine.begin() as conn:
            await attempts.note_unknown(conn, pid, "authorize", str(exc))
            await service.add_timeline_note(
                conn, pid, p.status, "psp_unknown", {"error": str(exc)[:300]}, now
            )
        return
    await failpoint("payments.authorize.after_psp")
    await apply_intent(ctx, pid, result, cause="psp")


async def _declined(ctx: Ctx, pid: str, code: str, message: str, intent_id: str | None) -> None:
    now = ctx.clock.now()
    async with ctx.engine.begin() as conn:
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
            **({"psp_intent_id": intent_id} if intent_id else {}),
        )
        await attempts.conclude(conn, pid, INTENT_OPERATIONS, "failed", now, error=code)
    ctx.relay.notify()


async def apply_intent(
    ctx: Ctx, pid: str, r: IntentResult, *, cause: str, inbox: Inbox | None = None
) -> None:
    """Apply what the PSP says through ``PSP_ACTIONS``, in one transaction with the webhook's
    inbox row (if any) and the conclusion of the open attempts; then run a compensation the
    table ordered. Never moves a payment backwards."""
    now = ctx.clock.now()
    reported = psp_state(r.status, r.decline_code)
    async with ctx.engine.begin() as conn:
        if inbox is not None and not await claim_inbox(conn, psp_events, *inbox, now):
            return  # this webhook was applied already
        p = await service.get(conn, pid)
        await _record_psp_ids(conn, p, r, now)
        action = psp_action(S(p.status), reported)
        await _act(conn, pid, action, r, cause, now)
        compensation = await _compensation(conn, p, action, r, now)
        await attempts.conclude(conn, pid, _concluded_by(reported), "succeeded", now)
        if action == Action.AUTHORIZE and p.capture_method == "automatic":
            # The PSP is to capture on its own: until it says so, an open capture attempt
            # makes the reconciler look (a lost webhook must not leave it authorized).
            await attempts.begin(conn, pid, "capture", f"pp_{pid}_capture", now)
    ctx.relay.notify()
    if compensation == "void":
        await void_at_psp(ctx, pid, r.intent_id)
    elif compensation is not None:
        await refunds.push(ctx, compensation)


def _concluded_by(reported: PspState) -> tuple[str, ...]:
    """The open attempts a PSP state settles: any final answer ends the authorization; a
    capture or cancel only ends when the intent left ``requires_capture``."""
    if reported == PspState.IN_FLIGHT:
        return ()
    if reported == PspState.AUTHORIZED:
        return ("authorize",)
    return INTENT_OPERATIONS


async def _record_psp_ids(conn: AsyncConnection, p: Any, r: IntentResult, now: Any) -> None:
    ids: dict[str, Any] = {"psp_intent_id": r.intent_id}
    if r.charge_id:
        ids["psp_charge_id"] = r.charge_id
    if r.balance_txn_id:
        ids["psp_balance_txn_id"] = r.balance_txn_id
        if r.available_on is not None and p.settle_check_at is None:
            # The PSP told us when the funds become available: settlement asks it then, once
            # (``recovery.settle_due``), instead of polling from the capture on. A check time
            # already set (a lease, a back-off) is settlement's own and is kept.
            ids["settle_check_at"] = datetime.fromtimestamp(r.available_on, UTC)
    changed = {k: v for k, v in ids.items() if getattr(p, k) != v}
    if changed:  # a late or repeated PSP answer that says nothing new writes nothing
        await service.set_fields(conn, p.id, now, **changed)


async def _act(
    conn: AsyncConnection, pid: str, action: Action, r: IntentResult, cause: str, now: Any
) -> None:
    async def to(target: S, **changes: Any) -> None:
        await service.transition(conn, pid, target, cause=cause, now=now, strict=False, **changes)

    if action == Action.AUTHORIZE:
        await to(S.AUTHORIZED)
    elif action == Action.CAPTURE:
        await to(S.AUTHORIZED)  # from created (no-op from authorized)
        await to(S.CAPTURED, amount_captured_minor=r.amount_received_minor)
    elif action == Action.CANCEL:
        await to(S.CANCELED)
    elif action == Action.FAIL:
        await to(
            S.FAILED,
            failure_code=r.decline_code,
            failure_message=(r.failure_message or "")[:500],
        )
    elif action == Action.FLAG:
        p = await service.get(conn, pid)
        log.error("payments.psp_mismatch", payment_id=pid, status=p.status, psp=r.status)
        await service.add_timeline_note(
            conn, pid, p.status, "psp_mismatch", {"psp_status": r.status}, now
        )


async def _compensation(
    conn: AsyncConnection, p: Any, action: Action, r: IntentResult, now: Any
) -> str | None:
    """Record the compensation the table ordered (as an open attempt or a held refund), so a
    crash before it runs leaves it for the reconciler. Returns what to run: "void", a refund
    id, or None."""
    if action == Action.VOID_AT_PSP:
        await service.add_timeline_note(
            conn, p.id, p.status, "compensation_void", {"psp_intent_id": r.intent_id}, now
        )
        await attempts.begin(conn, p.id, "void", f"pp_{p.id}_void", now)
        return "void"
    if action == Action.REFUND_AT_PSP:
        refund_id = await refunds.record_compensation(conn, p, r.amount_received_minor, now)
        await service.add_timeline_note(
            conn, p.id, p.status, "compensation_refund", {"refund_id": refund_id}, now
        )
        return refund_id
    return None


async def void_at_psp(ctx: Ctx, pid: str, intent_id: str) -> None:
    """Cancel the PSP's authorization of a payment we consider canceled or failed."""
    try:
        r = await ctx.provider.cancel(intent_id, f"pp_{pid}_void")
    except PspUnavailable as exc:
        async with ctx.engine.begin() as conn:
            await attempts.note_unknown(conn, pid, "void", str(exc))
        return  # the attempt stays open: the reconciler resumes it
    except (PspRejected, PspDeclined) as exc:
        # Already captured or canceled at the PSP: its current state decides what is next.
        log.warning("payments.void_refused", payment_id=pid, error=str(exc))
        r = await ctx.provider.retrieve(intent_id)
    now = ctx.clock.now()
    async with ctx.engine.begin() as conn:
        if r.status == "canceled":
            await attempts.conclude(conn, pid, ("void",), "succeeded", now)
    if r.status != "canceled":
        await apply_intent(ctx, pid, r, cause="compensation")


async def capture(ctx: Ctx, owner_id: str, pid: str, amount_minor: int | None) -> dict[str, Any]:
    async with ctx.engine.begin() as conn:
        p = await service.get(conn, pid, owner_id)
        if p.status == S.CAPTURED and p.capture_method == "manual":
            return service.payment_view(p)  # a retried capture
        if p.status != S.AUTHORIZED:
            raise InvalidTransition(f"A {p.status} payment cannot be captured.")
        amount = p.amount_minor if amount_minor is None else amount_minor
        if amount > p.amount_minor:
            authorized = Money(p.amount_minor, p.currency).format()
            raise CaptureExceedsAuthorized(
                f"amount_minor {amount} exceeds the authorized {authorized}; capture at most that."
            )
        await attempts.begin(conn, pid, "capture", f"pp_{pid}_capture", ctx.clock.now())
    try:
        result = await ctx.provider.capture(p.psp_intent_id, amount, f"pp_{pid}_capture")
    except PspUnavailable as exc:
        raise ProviderUnavailable(
            "The payment provider did not answer; retry the capture with the same Idempotency-Key."
        ) from exc
    except (PspRejected, PspDeclined) as exc:
        async with ctx.engine.begin() as conn:
            await attempts.conclude(conn, pid, ("capture",), "failed", ctx.clock.now(), str(exc))
        raise InvalidTransition(f"The provider refused the capture: {exc}") from exc
    await failpoint("payments.capture.after_psp")
    await apply_intent(ctx, pid, result, cause="api")
    return await _view(ctx, pid)


async def cancel(ctx: Ctx, owner_id: str, pid: str) -> dict[str, Any]:
    async with ctx.engine.begin() as conn:
        p = await service.get(conn, pid, owner_id)
        if p.status == S.CANCELED:
            return service.payment_view(p)
        if p.status not in (S.CREATED, S.AUTHORIZED):
            raise InvalidTransition(f"A {p.status} payment cannot be canceled.")
        if p.status == S.CREATED:
            # Local: an authorization in flight is compensated when its answer arrives.
            await service.transition(conn, pid, S.CANCELED, cause="api", now=ctx.clock.now())
        else:
            await attempts.begin(conn, pid, "cancel", f"pp_{pid}_cancel", ctx.clock.now())
    if p.status == S.AUTHORIZED:
        try:
            result = await ctx.provider.cancel(p.psp_intent_id, f"pp_{pid}_cancel")
        except PspUnavailable as exc:
            raise ProviderUnavailable("The payment provider did not answer; retry.") from exc
        except (PspRejected, PspDeclined) as exc:
            async with ctx.engine.begin() as conn:
                await attempts.conclude(conn, pid, ("cancel",), "failed", ctx.clock.now(), str(exc))
            raise InvalidTransition(f"The provider refused the cancel: {exc}") from exc
        await failpoint("payments.cancel.after_psp")
        await apply_intent(ctx, pid, result, cause="api")
    ctx.relay.notify()
    return await _view(ctx, pid)


async def refresh(ctx: Ctx, pid: str) -> None:
    """Ask the PSP for the intent's current state and apply it (resumption of capture, cancel
    and webhooks that could not be applied)."""
    async with ctx.engine.connect() as conn:
        p = await service.get(conn, pid)
    if not p.psp_intent_id:
        await authorize(ctx, pid, resume=True)
        return
    try:
        result = await ctx.provider.retrieve(p.psp_intent_id)
    except (PspUnavailable, PspRejected):
        return  # the attempt stays open
    await apply_intent(ctx, pid, result, cause="reconcile")
    async with ctx.engine.begin() as conn:
        # Retrieved and still authorized: a capture or cancel of ours that never reached the
        # PSP did not happen (the client may send it again). An automatic capture is the
        # PSP's to make: its attempt stays open.
        if result.status == "requires_capture" and p.capture_method == "manual":
            await attempts.conclude(conn, pid, ("capture", "cancel"), "failed", ctx.clock.now())


async def _view(ctx: Ctx, pid: str) -> dict[str, Any]:
    async with ctx.engine.connect() as conn:
        return service.payment_view(await service.get(conn, pid))
