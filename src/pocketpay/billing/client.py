"""What other components may ask of billing: the ``BillingClient`` protocol, answered with
``billing.schemas`` models, implemented by ``BillingApi`` in this process and by
``HttpBillingClient`` over the internal API at scale."""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import quote

from pocketpay.billing.schemas import (
    Invoice,
    InvoiceItem,
    InvoiceList,
    Plan,
    PlanList,
    Subscription,
    SubscriptionList,
    TestClock,
)
from pocketpay.kit.client import InternalClient
from pocketpay.kit.listing import Page


class BillingClient(Protocol):
    async def ping(self) -> float: ...

    async def create_plan(self, body: dict[str, Any]) -> Plan: ...

    async def list_plans(self, page: Page, active_only: bool) -> PlanList: ...

    async def get_plan(self, plan_id: str) -> Plan: ...

    async def archive_plan(self, plan_id: str) -> Plan: ...

    async def subscribe(
        self, owner_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> Subscription: ...

    async def get_subscription(self, owner_id: str, sub_id: str) -> Subscription: ...

    async def list_subscriptions(self, owner_id: str, page: Page) -> SubscriptionList: ...

    async def update(self, owner_id: str, sub_id: str, body: dict[str, Any]) -> Subscription: ...

    async def cancel(self, owner_id: str, sub_id: str, body: dict[str, Any]) -> Subscription: ...

    async def pause(self, owner_id: str, sub_id: str) -> Subscription: ...

    async def resume(self, owner_id: str, sub_id: str) -> Subscription: ...

    async def get_invoice(self, owner_id: str, invoice_id: str) -> Invoice: ...

    async def list_invoices(
        self, owner_id: str, page: Page, subscription_id: str | None
    ) -> InvoiceList: ...

    async def pay_invoice(self, owner_id: str, invoice_id: str) -> Invoice: ...

    async def invoice_pdf(self, owner_id: str, invoice_id: str, email: str, name: str) -> bytes: ...

    async def add_invoice_item(
        self, admin_id: str, idempotency_key: str, sub_id: str, body: dict[str, Any]
    ) -> InvoiceItem: ...

    async def void_invoice(self, invoice_id: str) -> Invoice: ...

    async def test_clock(self) -> TestClock: ...

    async def advance_clock(self, body: dict[str, Any]) -> TestClock: ...


def _q(value: str) -> str:
    return quote(value, safe="")


class HttpBillingClient:
    """``BillingClient`` over billing's internal API (scale mode)."""

    def __init__(self, http: InternalClient) -> None:
        self.http = http

    async def ping(self) -> float:
        return await self.http.ping()

    async def _req(self, method: str, path: str, **kw: Any) -> Any:
        return await self.http.request(method, path, **kw)

    async def create_plan(self, body: dict[str, Any]) -> Plan:
        return Plan.model_validate(await self._req("POST", "/plans", json=body))

    async def list_plans(self, page: Page, active_only: bool) -> PlanList:
        params = page.model_dump(exclude_none=True) | {"active_only": active_only}
        return PlanList.model_validate(await self._req("GET", "/plans", params=params))

    async def get_plan(self, plan_id: str) -> Plan:
        return Plan.model_validate(await self._req("GET", f"/plans/{_q(plan_id)}"))

    async def archive_plan(self, plan_id: str) -> Plan:
        return Plan.model_validate(await self._req("POST", f"/plans/{_q(plan_id)}/archive"))

    async def subscribe(
        self, owner_id: str, idempotency_key: str, body: dict[str, Any]
    ) -> Subscription:
        params = {"owner_id": owner_id, "idempotency_key": idempotency_key}
        answer = await self._req("POST", "/subscriptions", params=params, json=body)
        return Subscription.model_validate(answer)

    async def get_subscription(self, owner_id: str, sub_id: str) -> Subscription:
        answer = await self._req(
            "GET", f"/subscriptions/{_q(sub_id)}", params={"owner_id": owner_id}
        )
        return Subscription.model_validate(answer)

    async def list_subscriptions(self, owner_id: str, page: Page) -> SubscriptionList:
        params = page.model_dump(exclude_none=True) | {"owner_id": owner_id}
        answer = await self._req("GET", "/subscriptions", params=params)
        return SubscriptionList.model_validate(answer)

    async def update(self, owner_id: str, sub_id: str, body: dict[str, Any]) -> Subscription:
        path = f"/subscriptions/{_q(sub_id)}"
        answer = await self._req("POST", path, params={"owner_id": owner_id}, json=body)
        return Subscription.model_validate(answer)

    async def cancel(self, owner_id: str, sub_id: str, body: dict[str, Any]) -> Subscription:
        path = f"/subscriptions/{_q(sub_id)}/cancel"
        answer = await self._req("POST", path, params={"owner_id": owner_id}, json=body)
        return Subscription.model_validate(answer)

    async def pause(self, owner_id: str, sub_id: str) -> Subscription:
        path = f"/subscriptions/{_q(sub_id)}/pause"
        answer = await self._req("POST", path, params={"owner_id": owner_id}, json={})
        return Subscription.model_validate(answer)

    async def resume(self, owner_id: str, sub_id: str) -> Subscription:
        path = f"/subscriptions/{_q(sub_id)}/resume"
        answer = await self._req("POST", path, params={"owner_id": owner_id}, json={})
        return Subscription.model_validate(answer)

    async def get_invoice(self, owner_id: str, invoice_id: str) -> Invoice:
        answer = await self._req(
            "GET", f"/invoices/{_q(invoice_id)}", params={"owner_id": owner_id}
        )
        return Invoice.model_validate(answer)

    async def list_invoices(
        self, owner_id: str, page: Page, subscription_id: str | None
    ) -> InvoiceList:
        params = page.model_dump(exclude_none=True) | {"owner_id": owner_id}
        if subscription_id:
            params["subscription_id"] = subscription_id
        return InvoiceList.model_validate(await self._req("GET", "/invoices", params=params))

    async def pay_invoice(self, owner_id: str, invoice_id: str) -> Invoice:
        path = f"/invoices/{_q(invoice_id)}/pay"
        answer = await self._req("POST", path, params={"owner_id": owner_id}, json={})
        return Invoice.model_validate(answer)

    async def invoice_pdf(self, owner_id: str, invoice_id: str, email: str, name: str) -> bytes:
        path = f"/invoices/{_q(invoice_id)}/pdf"
        params = {"owner_id": owner_id, "email": email, "name": name}
        return await self.http.request_bytes("GET", path, params=params)

    async def add_invoice_item(
        self, admin_id: str, idempotency_key: str, sub_id: str, body: dict[str, Any]
    ) -> InvoiceItem:
        params = {"admin_id": admin_id, "idempotency_key": idempotency_key}
        path = f"/subscriptions/{_q(sub_id)}/lines"
        return InvoiceItem.model_validate(await self._req("POST", path, params=params, json=body))

    async def void_invoice(self, invoice_id: str) -> Invoice:
        path = f"/invoices/{_q(invoice_id)}/void"
        return Invoice.model_validate(await self._req("POST", path, json={}))

    async def test_clock(self) -> TestClock:
        return TestClock.model_validate(await self._req("GET", "/test-clock"))

    async def advance_clock(self, body: dict[str, Any]) -> TestClock:
        answer = await self._req("POST", "/test-clock/advance", json=body)
        return TestClock.model_validate(answer)
