"""The payments API as one typed object: what other components may ask of payments.

``PaymentsApi`` implements the ``PaymentsClient`` protocol. In one process (embedded mode) the
gateway calls it directly: no HTTP, no second request cycle. At scale the internal routes
(``payments.routes``) serve the same object over HTTP and ``HttpPaymentsClient`` calls them, so
both modes run the same code and answer the same models and errors.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.kit.clock import Clock
from pocketpay.kit.db import single_statements
from pocketpay.kit.errors import NotFound
from pocketpay.kit.failpoints import failpoint
from pocketpay.kit.listing import Page, next_cursor
from pocketpay.kit.tracing import client_span
from pocketpay.payments import attempts, methods, service
from pocketpay.payments.admission import Admission
from pocketpay.payments.errors import UnknownPaymentMethod
from pocketpay.payments.flows import Flows, disputes, payouts
from pocketpay.payments.providers.base import Provider
from pocketpay.payments.schemas import (
    Dispute,
    DisputeEvidenceInternal,
    DisputeList,
    Payment,
    PaymentCreateInternal,
    PaymentList,
    PaymentListQuery,
    PaymentMethod,
    PaymentMethodCreateInternal,
    PaymentMethodList,
    Payout,
    PayoutCreateInternal,
    PayoutList,
    ProviderHealth,
    PspEventResult,
    Refund,
    RefundCreateInternal,
    RefundList,
    StuckAttempt,
    StuckAttempts,
    StuckRetried,
    Timeline,
    TimelineEntry,
)


class PaymentsApi:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        flows: Flows,
        provider: Provider,
        admission: Admission,
    ) -> None:
        self._engine = engine
        self._admission = admission
        self._reads = single_statements(engine)  # reads: one round trip each on PostgreSQL
        self._clock = clock
        self._flows = flows
        self._provider = provider

    async def ping(self) -> float:
        return 0.0  # in this process: nothing between the caller and payments

    def admit(self) -> None:
        self._admission.check()

    async def create(self, owner_id: str, idempotency_key: str, body: dict[str, Any]) -> Payment:
        """A payment (``PaymentCreateInternal``): the gateway's top-ups, and billing's invoice
        charges (``purpose`` invoice, ``reference`` the invoice, ``off_session`` with a saved
        payment method), whose money the ledger credits to revenue instead of the wallet."""
        req = PaymentCreateInternal.model_validate(
            body | {"owner_id": owner_id, "idempotency_key": idempotency_key}
        )
        self._admission.admit()
        try:
            customer = saved = None
            if methods.is_saved_id(req.payment_method):
                async with self._reads.connect() as conn:
                    m = await methods.chargeable(conn, req.payment_method, req.owner_id)
                customer, saved = m.psp_customer_id, m.psp_payment_method
            elif req.off_session:
                raise UnknownPaymentMethod(
                    "An off-session charge needs a saved payment method (pm_ + 26 characters)."
                )
            with client_span("payments POST /payments"):
                async with self._engine.begin() as conn:
                    row = await service.create(
                        conn,
                        idempotency_key=req.idempotency_key,
                        owner_id=req.owner_id,
                        amount_minor=req.amount_minor,
                        currency=req.currency,
                        payment_method=req.payment_method,
                        capture_method=req.capture_method,
                        description=req.description,
                        metadata=req.metadata,
                        provider=self._provider.name,
                        now=self._clock.now(),
                        psp_customer_id=customer,
                        psp_payment_method=saved,
                        purpose=req.purpose,
                        reference=req.reference,
                        off_session=req.off_session,
                    )
                self._flows.relay.notify()
                await failpoint("payments.create.after_commit")
                return Payment.model_validate(service.payment_view(row))
        finally:
            self._admission.done()

    async def get(self, owner_id: str, payment_id: str) -> Payment:
        async with self._reads.connect() as conn:
            row = await service.get(conn, payment_id, owner_id)
        return Payment.model_validate(service.payment_view(row))

    async def list(self, owner_id: str, query: PaymentListQuery) -> PaymentList:
        async with self._reads.connect() as conn:
            rows, more = await service.list_for(conn, owner_id, query)
        data = [Payment.model_validate(service.payment_view(p)) for p in rows]
        cursor = next_cursor(query, [p.id for p in data], more)
        return PaymentList(data=data, has_more=more, next_cursor=cursor)

    async def events(self, owner_id: str, payment_id: str) -> Timeline:
        async with self._reads.connect() as conn:
            await service.get(conn, payment_id, owner_id)
            rows = await service.events_of(conn, payment_id)
        return Timeline(data=[TimelineEntry.model_validate(e) for e in rows])

    async def capture(self, owner_id: str, payment_id: str, amount_minor: int | None) -> Payment:
        with client_span("payments POST /payments/{payment_id}/capture"):
            view = await self._flows.capture(owner_id, payment_id, amount_minor)
        return Payment.model_validate(view)

    async def cancel(self, owner_id: str, payment_id: str) -> Payment:
        with client_span("payments POST /payments/{payment_id}/cancel"):
            view = await self._flows.cancel(owner_id, payment_id)
        return Payment.model_validate(view)

    async def refund(
        self, owner_id: str, payment_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> Refund:
        req = RefundCreateInternal.model_validate(body | {"idempotency_key": idempotency_key})
        with client_span("payments POST /payments/{payment_id}/refunds"):
            view = await self._flows.refund(
                owner_id,
                payment_id,
                req.idempotency_key,
                req.amount_minor,
                req.reason,
                req.metadata,
            )
        return Refund.model_validate(view)

    async def refunds(self, owner_id: str, payment_id: str, page: Page) -> RefundList:
        async with self._reads.connect() as conn:
            rows, more = await service.refunds_of(conn, owner_id, payment_id, page)
        data = [Refund.model_validate(service.refund_view(r)) for r in rows]
        return RefundList(
            data=data, has_more=more, next_cursor=next_cursor(page, [r.id for r in data], more)
        )

    # -- payouts (flows.payouts) ------------------------------------------------------------

    async def create_payout(
        self, owner_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> Payout:
        """A payout from the owner's wallet to a bank account (``PayoutCreate``), once per
        (owner, key): ``payouts.invalid_destination``, ``ledger.insufficient_funds`` (the
        payout is failed, nothing held), ``idempotency.key_reused``."""
        req = PayoutCreateInternal.model_validate(
            body | {"owner_id": owner_id, "idempotency_key": idempotency_key}
        )
        with client_span("payments POST /payouts"):
            view = await self._flows.create_payout(req.owner_id, req.idempotency_key, req)
        return Payout.model_validate(view)

    async def list_payouts(self, owner_id: str, page: Page) -> PayoutList:
        async with self._reads.connect() as conn:
            rows, more = await service.payouts_of(conn, owner_id, page)
        data = [Payout.model_validate(payouts.view(r)) for r in rows]
        cursor = next_cursor(page, [p.id for p in data], more)
        return PayoutList(data=data, has_more=more, next_cursor=cursor)

    async def get_payout(self, owner_id: str, payout_id: str) -> Payout:
        async with self._reads.connect() as conn:
            row = await service.get_payout(conn, payout_id, owner_id)
        return Payout.model_validate(payouts.view(row))

    async def cancel_payout(self, owner_id: str, payout_id: str) -> Payout:
        """While pending: ``payouts.not_cancelable`` (409) otherwise."""
        with client_span("payments POST /payouts/{payout_id}/cancel"):
            view = await self._flows.cancel_payout(owner_id, payout_id)
        return Payout.model_validate(view)

    # -- disputes (flows.disputes) ----------------------------------------------------------

    async def list_disputes(self, owner_id: str, payment_id: str | None, page: Page) -> DisputeList:
        """The owner's disputes (of one payment, if given), newest first."""
        async with self._reads.connect() as conn:
            rows, more = await service.disputes_of(conn, owner_id, payment_id, page)
        data = [Dispute.model_validate(disputes.view(r)) for r in rows]
        cursor = next_cursor(page, [d.id for d in data], more)
        return DisputeList(data=data, has_more=more, next_cursor=cursor)

    async def get_dispute(self, owner_id: str, dispute_id: str) -> Dispute:
        async with self._reads.connect() as conn:
            row = await service.get_dispute(conn, dispute_id, owner_id)
        return Dispute.model_validate(disputes.view(row))

    async def submit_dispute_evidence(
        self, owner_id: str, dispute_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> Dispute:
        """Send evidence (``DisputeEvidence``) to the PSP and submit it:
        ``disputes.not_open`` (409) once it no longer takes evidence."""
        req = DisputeEvidenceInternal.model_validate(
            body | {"owner_id": owner_id, "idempotency_key": idempotency_key}
        )
        with client_span("payments POST /disputes/{dispute_id}/evidence"):
            view = await self._flows.submit_dispute_evidence(
                req.owner_id, dispute_id, req.idempotency_key, req.text
            )
        return Dispute.model_validate(view)

    async def accept_dispute(self, owner_id: str, dispute_id: str) -> Dispute:
        """Accept the loss: ``disputes.not_open`` (409) once decided."""
        with client_span("payments POST /disputes/{dispute_id}/close"):
            view = await self._flows.accept_dispute(owner_id, dispute_id)
        return Dispute.model_validate(view)

    # -- saved payment methods --------------------------------------------------------------

    async def save_payment_method(
        self, owner_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> PaymentMethod:
        req = PaymentMethodCreateInternal.model_validate(
            body | {"owner_id": owner_id, "idempotency_key": idempotency_key}
        )
        with client_span("payments POST /payment-methods"):
            row = await methods.save(
                self._engine,
                self._provider,
                owner_id=owner_id,
                idempotency_key=idempotency_key,
                source=req.payment_method,
                metadata=req.metadata,
                now=self._clock.now(),
            )
        return PaymentMethod.model_validate(methods.method_view(row))

    async def payment_methods(self, owner_id: str, page: Page) -> PaymentMethodList:
        async with self._reads.connect() as conn:
            rows, more = await methods.list_for(conn, owner_id, page)
        data = [PaymentMethod.model_validate(methods.method_view(r)) for r in rows]
        cursor = next_cursor(page, [m.id for m in data], more)
        return PaymentMethodList(data=data, has_more=more, next_cursor=cursor)

    async def get_payment_method(self, owner_id: str, method_id: str) -> PaymentMethod:
        async with self._reads.connect() as conn:
            row = await methods.get(conn, method_id, owner_id)
        return PaymentMethod.model_validate(methods.method_view(row))

    async def detach_payment_method(self, owner_id: str, method_id: str) -> PaymentMethod:
        with client_span("payments POST /payment-methods/{method_id}/detach"):
            row = await methods.detach(
                self._engine, self._provider, owner_id, method_id, self._clock.now()
            )
        return PaymentMethod.model_validate(methods.method_view(row))

    async def get_refund(self, owner_id: str, refund_id: str) -> Refund:
        async with self._reads.connect() as conn:
            row = await service.get_refund(conn, refund_id, owner_id)
        return Refund.model_validate(service.refund_view(row))

    async def psp_event(self, event: dict[str, Any]) -> PspEventResult:
        """A verified PSP webhook event (the gateway checked its signature and shape)."""
        with client_span("payments POST /psp-events"):
            return PspEventResult.model_validate(await self._flows.handle_psp_event(event))

    async def provider_health(self) -> ProviderHealth:
        return await provider_status(self._provider)

    # -- operators (the gateway's admin API) ----------------------------------------------

    async def stuck(self, limit: int = 100) -> StuckAttempts:
        """Attempts the reconciler gave up on, oldest first."""
        async with self._reads.connect() as conn:
            rows = await attempts.stuck(conn, limit)
            total = await attempts.stuck_count(conn)
        return StuckAttempts(data=[StuckAttempt.model_validate(row) for row in rows], total=total)

    async def retry_stuck(self, object_id: str, operation: str) -> StuckRetried:
        """Put a stuck attempt back to pending (tries reset) for the reconciler to resume.
        ``payments.attempt_not_stuck`` (404) when there is no such stuck attempt."""
        async with self._engine.begin() as conn:
            done = await attempts.retry(conn, object_id, operation, self._clock.now())
        if not done:
            raise NotFound(
                f"No stuck {operation} attempt for {object_id}.", code="payments.attempt_not_stuck"
            )
        return StuckRetried.model_validate(
            {"object_id": object_id, "operation": operation, "status": "pending", "tries": 0}
        )


async def provider_status(provider: Provider) -> ProviderHealth:
    """A PSP ping around the breaker (idle pings neither open nor close it); an open breaker
    is degraded, never down. Served at ``/health/provider`` and used by the readiness check."""
    stats = provider.stats()
    try:
        latency = await provider.ping()
        status = "ok"
    except Exception as exc:
        latency, status = 0.0, "degraded" if stats["breaker"] != "closed" else "fail"
        stats["error"] = str(exc)[:200]
    if provider.stats()["breaker"] != "closed":
        status = "degraded"
    return ProviderHealth.model_validate(
        {
            "status": status,
            "latency_ms": round(latency, 2),
            **stats,
            "breaker": provider.stats()["breaker"],
        }
    )
