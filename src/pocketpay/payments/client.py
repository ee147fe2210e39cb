"""What other components may ask of payments: the ``PaymentsClient`` protocol, answered with
``payments.schemas`` models. Two implementations: ``payments.api.PaymentsApi`` itself when
payments runs in the caller's process (direct calls), and ``HttpPaymentsClient`` when it runs
elsewhere (the internal API over HTTP). Errors are the same ``AppError`` codes either way."""

from __future__ import annotations

import time
from typing import Any, Protocol
from urllib.parse import quote

from pocketpay.kit.client import InternalClient
from pocketpay.kit.errors import AppError
from pocketpay.kit.listing import Page
from pocketpay.payments.errors import PaymentsBusy
from pocketpay.payments.schemas import (
    Dispute,
    DisputeList,
    Payment,
    PaymentList,
    PaymentListQuery,
    PaymentMethod,
    PaymentMethodList,
    Payout,
    PayoutList,
    ProviderHealth,
    PspEventResult,
    Refund,
    RefundList,
    StuckAttempts,
    StuckRetried,
    Timeline,
)


class PaymentsClient(Protocol):
    async def ping(self) -> float: ...

    def admit(self) -> None:
        """Raise ``PaymentsBusy`` if a create would be shed now (cheap: no I/O), so the
        caller sheds it before doing any work of its own."""

    async def create(
        self, owner_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> Payment: ...

    async def get(self, owner_id: str, payment_id: str) -> Payment: ...

    async def list(self, owner_id: str, query: PaymentListQuery) -> PaymentList: ...

    async def refunds(self, owner_id: str, payment_id: str, page: Page) -> RefundList: ...

    async def events(self, owner_id: str, payment_id: str) -> Timeline: ...

    async def capture(
        self, owner_id: str, payment_id: str, amount_minor: int | None
    ) -> Payment: ...

    async def cancel(self, owner_id: str, payment_id: str) -> Payment: ...

    async def refund(
        self, owner_id: str, payment_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> Refund: ...

    async def get_refund(self, owner_id: str, refund_id: str) -> Refund: ...

    async def save_payment_method(
        self, owner_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> PaymentMethod: ...

    async def payment_methods(self, owner_id: str, page: Page) -> PaymentMethodList: ...

    async def get_payment_method(self, owner_id: str, method_id: str) -> PaymentMethod: ...

    async def detach_payment_method(self, owner_id: str, method_id: str) -> PaymentMethod: ...

    async def create_payout(
        self, owner_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> Payout: ...

    async def list_payouts(self, owner_id: str, page: Page) -> PayoutList: ...

    async def get_payout(self, owner_id: str, payout_id: str) -> Payout: ...

    async def cancel_payout(self, owner_id: str, payout_id: str) -> Payout: ...

    async def list_disputes(
        self, owner_id: str, payment_id: str | None, page: Page
    ) -> DisputeList: ...

    async def get_dispute(self, owner_id: str, dispute_id: str) -> Dispute: ...

    async def submit_dispute_evidence(
        self, owner_id: str, dispute_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> Dispute: ...

    async def accept_dispute(self, owner_id: str, dispute_id: str) -> Dispute: ...

    async def psp_event(self, event: dict[str, Any]) -> PspEventResult: ...

    async def provider_health(self) -> ProviderHealth: ...

    async def stuck(self, limit: int = 100) -> StuckAttempts: ...

    async def retry_stuck(self, object_id: str, operation: str) -> StuckRetried: ...


class HttpPaymentsClient:
    """``PaymentsClient`` over the payments internal API (scale mode)."""

    def __init__(self, http: InternalClient) -> None:
        self.http = http
        self._busy_until = 0.0  # monotonic: payments said busy, for its Retry-After

    def admit(self) -> None:
        if time.monotonic() < self._busy_until:
            raise PaymentsBusy.shed("Payments is shedding new payments.")

    async def ping(self) -> float:
        return await self.http.ping()

    async def _req(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.http.request(method, path, **kw)
        return result

    async def create(self, owner_id: str, idempotency_key: str, body: dict[str, Any]) -> Payment:
        json = body | {"owner_id": owner_id, "idempotency_key": idempotency_key}
        try:
            return Payment.model_validate(await self._req("POST", "/payments", json=json))
        except AppError as exc:
            if exc.code == PaymentsBusy.code:
                wait = float(exc.headers.get("Retry-After", PaymentsBusy.retry_after_seconds))
                self._busy_until = time.monotonic() + wait
            raise

    async def get(self, owner_id: str, payment_id: str) -> Payment:
        path = f"/payments/{payment_id}"
        return Payment.model_validate(await self._req("GET", path, params={"owner_id": owner_id}))

    async def list(self, owner_id: str, query: PaymentListQuery) -> PaymentList:
        params = query.model_dump(mode="json", exclude_none=True) | {"owner_id": owner_id}
        return PaymentList.model_validate(await self._req("GET", "/payments", params=params))

    async def refunds(self, owner_id: str, payment_id: str, page: Page) -> RefundList:
        params = page.model_dump(exclude_none=True) | {"owner_id": owner_id}
        path = f"/payments/{payment_id}/refunds"
        return RefundList.model_validate(await self._req("GET", path, params=params))

    async def events(self, owner_id: str, payment_id: str) -> Timeline:
        path = f"/payments/{payment_id}/events"
        return Timeline.model_validate(await self._req("GET", path, params={"owner_id": owner_id}))

    async def capture(self, owner_id: str, payment_id: str, amount_minor: int | None) -> Payment:
        body = await self._req(
            "POST",
            f"/payments/{payment_id}/capture",
            params={"owner_id": owner_id},
            json={"amount_minor": amount_minor},
        )
        return Payment.model_validate(body)

    async def cancel(self, owner_id: str, payment_id: str) -> Payment:
        body = await self._req(
            "POST", f"/payments/{payment_id}/cancel", params={"owner_id": owner_id}, json={}
        )
        return Payment.model_validate(body)

    async def refund(
        self, owner_id: str, payment_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> Refund:
        answer = await self._req(
            "POST",
            f"/payments/{payment_id}/refunds",
            params={"owner_id": owner_id},
            json=body | {"idempotency_key": idempotency_key},
        )
        return Refund.model_validate(answer)

    async def save_payment_method(
        self, owner_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> PaymentMethod:
        json = body | {"owner_id": owner_id, "idempotency_key": idempotency_key}
        return PaymentMethod.model_validate(await self._req("POST", "/payment-methods", json=json))

    async def payment_methods(self, owner_id: str, page: Page) -> PaymentMethodList:
        params = page.model_dump(exclude_none=True) | {"owner_id": owner_id}
        answer = await self._req("GET", "/payment-methods", params=params)
        return PaymentMethodList.model_validate(answer)

    async def get_payment_method(self, owner_id: str, method_id: str) -> PaymentMethod:
        path = f"/payment-methods/{quote(method_id, safe='')}"
        return PaymentMethod.model_validate(
            await self._req("GET", path, params={"owner_id": owner_id})
        )

    async def detach_payment_method(self, owner_id: str, method_id: str) -> PaymentMethod:
        path = f"/payment-methods/{quote(method_id, safe='')}/detach"
        return PaymentMethod.model_validate(
            await self._req("POST", path, params={"owner_id": owner_id}, json={})
        )

    async def get_refund(self, owner_id: str, refund_id: str) -> Refund:
        path = f"/refunds/{refund_id}"
        return Refund.model_validate(await self._req("GET", path, params={"owner_id": owner_id}))

    async def create_payout(
        self, owner_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> Payout:
        json = body | {"owner_id": owner_id, "idempotency_key": idempotency_key}
        return Payout.model_validate(await self._req("POST", "/payouts", json=json))

    async def list_payouts(self, owner_id: str, page: Page) -> PayoutList:
        params = page.model_dump(exclude_none=True) | {"owner_id": owner_id}
        return PayoutList.model_validate(await self._req("GET", "/payouts", params=params))

    async def get_payout(self, owner_id: str, payout_id: str) -> Payout:
        path = f"/payouts/{quote(payout_id, safe='')}"
        return Payout.model_validate(await self._req("GET", path, params={"owner_id": owner_id}))

    async def cancel_payout(self, owner_id: str, payout_id: str) -> Payout:
        path = f"/payouts/{quote(payout_id, safe='')}/cancel"
        body = await self._req("POST", path, params={"owner_id": owner_id}, json={})
        return Payout.model_validate(body)

    async def list_disputes(self, owner_id: str, payment_id: str | None, page: Page) -> DisputeList:
        params = page.model_dump(exclude_none=True) | {"owner_id": owner_id}
        if payment_id is not None:
            params["payment_id"] = payment_id
        return DisputeList.model_validate(await self._req("GET", "/disputes", params=params))

    async def get_dispute(self, owner_id: str, dispute_id: str) -> Dispute:
        path = f"/disputes/{quote(dispute_id, safe='')}"
        return Dispute.model_validate(await self._req("GET", path, params={"owner_id": owner_id}))

    async def submit_dispute_evidence(
        self, owner_id: str, dispute_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> Dispute:
        path = f"/disputes/{quote(dispute_id, safe='')}/evidence"
        json = body | {"owner_id": owner_id, "idempotency_key": idempotency_key}
        return Dispute.model_validate(await self._req("POST", path, json=json))

    async def accept_dispute(self, owner_id: str, dispute_id: str) -> Dispute:
        path = f"/disputes/{quote(dispute_id, safe='')}/close"
        body = await self._req("POST", path, params={"owner_id": owner_id}, json={})
        return Dispute.model_validate(body)

    async def psp_event(self, event: dict[str, Any]) -> PspEventResult:
        """A verified PSP webhook event (the gateway checked its signature and shape)."""
        return PspEventResult.model_validate(await self._req("POST", "/psp-events", json=event))

    async def provider_health(self) -> ProviderHealth:
        return ProviderHealth.model_validate(await self._req("GET", "/health/provider"))

    # -- operators (the gateway's admin API) ----------------------------------------------

    async def stuck(self, limit: int = 100) -> StuckAttempts:
        """Attempts the reconciler gave up on, oldest first."""
        body = await self._req("GET", "/stuck", params={"limit": limit})
        return StuckAttempts.model_validate(body)

    async def retry_stuck(self, object_id: str, operation: str) -> StuckRetried:
        """Put a stuck attempt back to pending (tries reset) for the reconciler to resume.
        ``payments.attempt_not_stuck`` (404) when there is no such stuck attempt."""
        path = f"/stuck/{quote(object_id, safe='')}/{quote(operation, safe='')}/retry"
        body = await self._req("POST", path, json={})
        return StuckRetried.model_validate(body)
