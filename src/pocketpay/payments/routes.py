"""The payments internal API over HTTP: each route parses the request and calls
``PaymentsApi`` (``payments.api``), the same object other components call directly when they
share this process. Mounted by ``payments.app`` behind the internal token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from pocketpay.payments.api import PaymentsApi
from pocketpay.payments.schemas import (
    AttemptOperation,
    CaptureIn,
    Dispute,
    DisputeEvidenceInternal,
    DisputeList,
    DisputeListInternal,
    Payment,
    PaymentCreateInternal,
    PaymentList,
    PaymentListInternal,
    PaymentMethod,
    PaymentMethodCreateInternal,
    PaymentMethodList,
    PaymentMethodListInternal,
    Payout,
    PayoutCreateInternal,
    PayoutList,
    PayoutListInternal,
    ProviderHealth,
    PspEventResult,
    Refund,
    RefundCreateInternal,
    RefundList,
    RefundListInternal,
    StuckAttempts,
    StuckRetried,
    Timeline,
)

_ROUTED = {"owner_id", "idempotency_key"}


def build_router(api: PaymentsApi) -> APIRouter:
    r = APIRouter()

    @r.post("/payments", status_code=202, response_model=Payment)
    async def create(body: PaymentCreateInternal) -> Payment:
        fields = body.model_dump(exclude=_ROUTED)
        return await api.create(body.owner_id, body.idempotency_key, fields)

    @r.get("/payments", response_model=PaymentList)
    async def list_payments(query: Annotated[PaymentListInternal, Query()]) -> PaymentList:
        return await api.list(query.owner_id, query)

    @r.get("/payments/{payment_id}", response_model=Payment)
    async def get(payment_id: str, owner_id: str) -> Payment:
        return await api.get(owner_id, payment_id)

    @r.get("/payments/{payment_id}/events", response_model=Timeline)
    async def events(payment_id: str, owner_id: str) -> Timeline:
        return await api.events(owner_id, payment_id)

    @r.post("/payments/{payment_id}/capture", response_model=Payment)
    async def capture(payment_id: str, owner_id: str, body: CaptureIn) -> Payment:
        return await api.capture(owner_id, payment_id, body.amount_minor)

    @r.post("/payments/{payment_id}/cancel", response_model=Payment)
    async def cancel(payment_id: str, owner_id: str) -> Payment:
        return await api.cancel(owner_id, payment_id)

    @r.post("/payments/{payment_id}/refunds", status_code=202, response_model=Refund)
    async def refund(payment_id: str, owner_id: str, body: RefundCreateInternal) -> Refund:
        fields = body.model_dump(exclude=_ROUTED)
        return await api.refund(owner_id, payment_id, body.idempotency_key, fields)

    @r.get("/payments/{payment_id}/refunds", response_model=RefundList)
    async def refunds(payment_id: str, query: Annotated[RefundListInternal, Query()]) -> RefundList:
        return await api.refunds(query.owner_id, payment_id, query)

    @r.get("/refunds/{refund_id}", response_model=Refund)
    async def get_refund(refund_id: str, owner_id: str) -> Refund:
        return await api.get_refund(owner_id, refund_id)

    @r.post("/payment-methods", response_model=PaymentMethod)
    async def save_method(body: PaymentMethodCreateInternal) -> PaymentMethod:
        fields = body.model_dump(exclude=_ROUTED)
        return await api.save_payment_method(body.owner_id, body.idempotency_key, fields)

    @r.get("/payment-methods", response_model=PaymentMethodList)
    async def list_methods(
        query: Annotated[PaymentMethodListInternal, Query()],
    ) -> PaymentMethodList:
        return await api.payment_methods(query.owner_id, query)

    @r.get("/payment-methods/{method_id}", response_model=PaymentMethod)
    async def get_method(method_id: str, owner_id: str) -> PaymentMethod:
        return await api.get_payment_method(owner_id, method_id)

    @r.post("/payment-methods/{method_id}/detach", response_model=PaymentMethod)
    async def detach_method(method_id: str, owner_id: str) -> PaymentMethod:
        return await api.detach_payment_method(owner_id, method_id)

    @r.post("/payouts", status_code=202, response_model=Payout)
    async def create_payout(body: PayoutCreateInternal) -> Payout:
        fields = body.model_dump(exclude=_ROUTED)
        return await api.create_payout(body.owner_id, body.idempotency_key, fields)

    @r.get("/payouts", response_model=PayoutList)
    async def list_payouts(query: Annotated[PayoutListInternal, Query()]) -> PayoutList:
        return await api.list_payouts(query.owner_id, query)

    @r.get("/payouts/{payout_id}", response_model=Payout)
    async def get_payout(payout_id: str, owner_id: str) -> Payout:
        return await api.get_payout(owner_id, payout_id)

    @r.post("/payouts/{payout_id}/cancel", response_model=Payout)
    async def cancel_payout(payout_id: str, owner_id: str) -> Payout:
        return await api.cancel_payout(owner_id, payout_id)

    @r.get("/disputes", response_model=DisputeList)
    async def list_disputes(query: Annotated[DisputeListInternal, Query()]) -> DisputeList:
        return await api.list_disputes(query.owner_id, query.payment_id, query)

    @r.get("/disputes/{dispute_id}", response_model=Dispute)
    async def get_dispute(dispute_id: str, owner_id: str) -> Dispute:
        return await api.get_dispute(owner_id, dispute_id)

    @r.post("/disputes/{dispute_id}/evidence", response_model=Dispute)
    async def submit_dispute_evidence(dispute_id: str, body: DisputeEvidenceInternal) -> Dispute:
        fields = body.model_dump(exclude=_ROUTED)
        return await api.submit_dispute_evidence(
            body.owner_id, dispute_id, body.idempotency_key, fields
        )

    @r.post("/disputes/{dispute_id}/close", response_model=Dispute)
    async def accept_dispute(dispute_id: str, owner_id: str) -> Dispute:
        return await api.accept_dispute(owner_id, dispute_id)

    @r.post("/psp-events", response_model=PspEventResult)
    async def psp_event(event: dict[str, Any]) -> PspEventResult:
        return await api.psp_event(event)

    @r.get("/health/provider", response_model=ProviderHealth)
    async def provider_health() -> ProviderHealth:
        return await api.provider_health()

    # Operator data: attempts the reconciler gave up on. Only the gateway's admin API (role
    # admin) calls these; like every internal route they need the internal token.
    @r.get("/stuck", response_model=StuckAttempts)
    async def stuck(limit: int = Query(100, ge=1, le=500)) -> StuckAttempts:
        return await api.stuck(limit)

    @r.post("/stuck/{object_id}/{operation}/retry", response_model=StuckRetried)
    async def retry(object_id: str, operation: AttemptOperation) -> StuckRetried:
        return await api.retry_stuck(object_id, operation)

    return r
